"""Live updates: the change feed counts committed enqueues and the jobs workers
finish (LISTEN on a connection of its own), and the event stream of each framework
sends ``changed`` for them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import flask
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from programma_sa import JobQueue, Worker
from programma_sa.dashboard import Dashboard
from programma_sa.dashboard.asgi import asgi_app
from programma_sa.dashboard.blueprint import blueprint
from programma_sa.dashboard.live import ChangeFeed

from ..app import Job

queue = JobQueue(Job)
#: Generous: only a failure waits this long.
PATIENCE = 30.0


@pytest.fixture
def feed(engine: Engine) -> Iterator[ChangeFeed]:
    feed = ChangeFeed(engine.url, queue.table)
    feed.start()
    assert feed.wait_listening(PATIENCE)
    yield feed
    feed.stop()


def _enqueue(engine: Engine, *, commit: bool = True) -> None:
    with Session(engine) as session:
        queue.add_job(session, "emails", {})
        if commit:
            session.commit()


@pytest.mark.postgresql_only(
    "the event stream is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py)"
)
def test_a_committed_enqueue_moves_the_feed(feed: ChangeFeed, engine: Engine) -> None:
    seen = feed.version
    _enqueue(engine)
    assert feed.wait(seen, PATIENCE) is not None


@pytest.mark.postgresql_only(
    "the event stream is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py)"
)
def test_a_rolled_back_enqueue_does_not(feed: ChangeFeed, engine: Engine) -> None:
    seen = feed.version
    _enqueue(engine, commit=False)
    assert feed.wait(seen, 0.5) is None  # nothing was announced (no timing asserted)
    assert feed.version == seen


@pytest.mark.postgresql_only(
    "the feed is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py),"
    " MariaDB has no LISTEN"
)
def test_a_job_a_worker_finishes_moves_the_feed(feed: ChangeFeed, engine: Engine) -> None:
    """The finished channel: a worker's completion (not an enqueue) is a change too."""
    enqueued = feed.version
    _enqueue(engine)
    assert feed.wait(enqueued, PATIENCE) is not None  # the enqueue's own change, seen
    worker = Worker(queue, engine, "emails", lambda ctx: None, listen=False)
    seen = feed.version
    assert worker.run_once().completed == 1
    assert feed.wait(seen, PATIENCE) is not None


@pytest.mark.postgresql_only(
    "the event stream is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py)"
)
def test_waiting_on_an_event_loop(feed: ChangeFeed, engine: Engine) -> None:
    async def scenario() -> int | None:
        seen = feed.version
        waiting = asyncio.create_task(feed.wait_async(seen, PATIENCE))
        await asyncio.sleep(0)  # the waiter is registered before the enqueue
        await asyncio.to_thread(_enqueue, engine)
        return await waiting

    assert asyncio.run(scenario()) is not None


@pytest.mark.postgresql_only(
    "the event stream is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py)"
)
def test_the_flask_event_stream(engine: Engine) -> None:
    dashboard = Dashboard(queue, engine)
    app = flask.Flask(__name__)
    app.register_blueprint(blueprint(dashboard), url_prefix="/dash")
    try:
        feed = dashboard.feed()
        assert feed is not None and feed.wait_listening(PATIENCE)
        answer = app.test_client().get("/dash/events", buffered=False)
        assert answer.status_code == 200
        assert answer.mimetype == "text/event-stream"
        chunks = iter(answer.response)
        assert next(chunks) == b"retry: 5000\n\n"
        _enqueue(engine)
        assert next(chunks).startswith(b"event: changed\ndata: ")
        answer.close()
    finally:
        dashboard.close()


@pytest.mark.postgresql_only(
    "the event stream is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py)"
)
def test_the_asgi_event_stream(engine: Engine) -> None:
    dashboard = Dashboard(queue, engine)
    client = TestClient(Starlette(routes=[Mount("/dash", asgi_app(dashboard))]))
    try:
        feed = dashboard.feed()
        assert feed is not None and feed.wait_listening(PATIENCE)
        with client.stream("GET", "/dash/events") as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            lines = answer.iter_lines()
            assert next(lines) == "retry: 5000"
            _enqueue(engine)
            assert next(lines) == ""
            assert next(lines) == "event: changed"
    finally:
        dashboard.close()


@pytest.mark.parametrize("framework", ["asgi", "flask"])
def test_without_live_updates_the_stream_says_no_content(engine: Engine, framework: str) -> None:
    dashboard = Dashboard(queue, engine, live=False)
    if framework == "asgi":
        client = TestClient(Starlette(routes=[Mount("/dash", asgi_app(dashboard))]))
        assert client.get("/dash/events").status_code == 204
    else:
        app = flask.Flask(__name__)
        app.register_blueprint(blueprint(dashboard), url_prefix="/dash")
        assert app.test_client().get("/dash/events").status_code == 204
    page = client.get("/dash/") if framework == "asgi" else app.test_client().get("/dash/")
    # The page still refreshes itself by polling.
    assert b'hx-trigger="programma-changed from:body, every 10.0s"' in (
        page.content if framework == "asgi" else page.data
    )


@pytest.mark.postgresql_only(
    "the event stream is fed by LISTEN; on SQLite it says no content (test_sqlite_control.py)"
)
def test_streams_opened_at_once_share_one_listen_connection(engine: Engine) -> None:
    dashboard = Dashboard(queue, engine)
    try:
        with ThreadPoolExecutor(8) as pool:
            feeds = list(pool.map(lambda _: dashboard.feed(), range(8)))
        assert all(feed is feeds[0] for feed in feeds)
    finally:
        dashboard.close()
