"""A Flask-SQLAlchemy + Flask-Migrate app that enqueues in its own ``db.session``.

* :mod:`.models` — ``Signup`` and the programma ``Job`` model, both on ``db.Model``.
* :mod:`.app` — the factory; ``POST /signups`` writes a signup and enqueues its
  welcome job in one transaction.
* :mod:`.jobs` — the worker's handler, which marks the signup as welcomed (in the
  app context, through ``db.session``).
* ``migrations/`` — the app's own Alembic directory (as ``flask db init`` makes
  it): the app's first revision, then the ones ``programma-sa alembic revision
  --directory migrations`` wrote, one per release with a new step: the jobs table
  (to ``programma_0002``), then priorities and unique jobs (to ``programma_0004``),
  then the control of jobs in flight (to ``programma_0005``). One head.

Run it::

    export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/signups
    flask --app examples.flask_app.app db upgrade
    flask --app examples.flask_app.app run
    curl -X POST localhost:5000/signups -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com"}'
    flask --app examples.flask_app.app programma worker \\
        examples.flask_app.jobs:send_welcome --topic send-welcome --mode transaction
"""
