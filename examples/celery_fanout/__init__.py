"""Fan-out to Celery, the npm package's "use with queuing".

programma_sa schedules and tracks jobs in PostgreSQL; Celery does the work.

* :mod:`.handoff` — the programma handler: publishes each due job to Celery and
  moves it to PROCESSING, in the claim's transaction.
* :mod:`.tasks` — the Celery task: does the work and moves the job to COMPLETED, or
  to FAILED with the error once Celery's retries are exhausted.
* :mod:`.celery_app` — the Celery app (broker ``CELERY_BROKER_URL``, queue
  ``FANOUT_QUEUE``); :mod:`.models` — the jobs model.

Run it (three shells, the same environment)::

    export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    export CELERY_BROKER_URL=redis://127.0.0.1:6379/0  # or amqp://guest:guest@127.0.0.1:5672//
    programma-sa migrate
    celery -A examples.celery_fanout.celery_app worker --pool=solo --concurrency=1
    programma-sa worker examples.celery_fanout.handoff:hand_off \\
        --topic send-email --mode transaction
    programma-sa enqueue send-email --data '{"email": "ada@example.com"}'
"""
