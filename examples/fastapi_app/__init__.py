"""A FastAPI shop that enqueues in its own ``AsyncSession`` transaction.

* :mod:`.models` — the application's ``DeclarativeBase`` with ``Item`` and ``Order`` tables and
  the programma ``Job`` model beside it.
* :mod:`.app` — ``POST /orders`` writes the order, enqueues its confirmation and
  reserves stock in one transaction: all commit, or (out of stock) none does.
* :mod:`.processing` — claims confirmation jobs and confirms the orders, the claim,
  the business write and the completion in one transaction.

Run it (PostgreSQL URL with an async driver)::

    export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/shop
    python -m examples.fastapi_app.processing --setup      # tables, and some stock
    uvicorn --factory examples.fastapi_app.app:app_from_env
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"id": 1, "item": "book"}'
    python -m examples.fastapi_app.processing               # confirms pending orders
"""
