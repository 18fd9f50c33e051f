"""The dashboard under both frameworks' test clients, on the test database.

``web`` is one client per framework (Starlette's TestClient on a host app that mounts
the ASGI app at ``/dash``; Flask's test client on an app with the blueprint at
``/dash``), over one :class:`Dashboard` whose permission hook the test steers through
``allowed`` (a set of the permission names granted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import flask
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from programma_sa import JobQueue, Schedule
from programma_sa.dashboard import VIEW, Dashboard
from programma_sa.dashboard.asgi import asgi_app
from programma_sa.dashboard.blueprint import blueprint

from ..app import Job

SCHEDULES = [Schedule("nightly-report", "reports", cron="30 2 * * *", timezone="Europe/Berlin")]


def enqueue(engine: Engine, topic: str, data: object, **options: Any) -> str:
    """Commits one job; its id."""
    with Session(engine) as session, session.begin():
        return str(JobQueue(Job).add_job(session, topic, data, **options))


@dataclass
class Reply:
    status: int
    text: str
    headers: dict[str, str]


@dataclass
class Web:
    """One framework's client, with the answers reduced to what the tests look at."""

    framework: str
    client: Any
    #: The permissions the host grants ("view", action names).
    allowed: set[str] = field(default_factory=lambda: {VIEW})

    def get(self, path: str) -> Reply:
        return self._reply(self.client.get(f"/dash{path}"))

    def post(self, path: str, data: dict[str, str]) -> Reply:
        return self._reply(self.client.post(f"/dash{path}", data=data, follow_redirects=False))

    def csrf_token(self) -> str:
        """The token of the client's CSRF cookie (loading a page first if need be)."""
        self.get("/")
        if self.framework == "asgi":
            return str(self.client.cookies["programma_csrf"])
        cookie = self.client.get_cookie("programma_csrf", path="/dash")
        assert cookie is not None
        return str(cookie.value)

    def _reply(self, answer: Any) -> Reply:
        text = answer.text if self.framework == "asgi" else answer.get_data(as_text=True)
        return Reply(answer.status_code, text, {k.lower(): v for k, v in answer.headers.items()})


def client_for(framework: str, dashboard: Dashboard) -> Any:
    if framework == "asgi":
        return TestClient(Starlette(routes=[Mount("/dash", asgi_app(dashboard))]))
    app = flask.Flask(__name__)
    app.register_blueprint(blueprint(dashboard), url_prefix="/dash")
    return app.test_client()


@pytest.fixture(params=["asgi", "flask"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_web(framework: str, engine: Engine) -> Iterator[Callable[..., Web]]:
    """A client of a new dashboard with these :class:`Dashboard` options."""
    made: list[Dashboard] = []

    def make(**options: Any) -> Web:
        allowed: set[str] = {VIEW}
        options.setdefault("permission", lambda request, action: action in allowed)
        dashboard = Dashboard(JobQueue(Job), engine, schedules=SCHEDULES, live=False, **options)
        made.append(dashboard)
        return Web(framework, client_for(framework, dashboard), allowed)

    yield make
    for dashboard in made:
        dashboard.close()


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()
