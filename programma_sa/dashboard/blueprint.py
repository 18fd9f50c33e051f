"""The dashboard as a Flask blueprint::

    app.register_blueprint(blueprint(Dashboard(queue, db.engine)), url_prefix="/jobs-dashboard")

The event stream is a streaming response that waits in its request's thread: serve
the application with a threaded server (Flask's own and most WSGI servers are).
"""

from __future__ import annotations

from collections.abc import Iterator

import flask

from ._web import CSRF_COOKIE, WebRequest, WebResponse
from .app import VIEW, Dashboard
from .live import KEEPALIVE_SECONDS, event

__all__ = ["blueprint"]


def blueprint(dashboard: Dashboard, name: str = "programma_dashboard") -> flask.Blueprint:
    """A blueprint serving ``dashboard``; register it with a ``url_prefix``."""
    pages = flask.Blueprint(name, __name__)

    @pages.route("/", defaults={"rest": ""}, methods=["GET", "HEAD", "POST"])
    @pages.route("/<path:rest>", methods=["GET", "HEAD", "POST"])
    def handle(rest: str) -> flask.Response:
        request = flask.request
        web = WebRequest(
            method=request.method,
            path="/" + rest,
            # The mount point: the path without what the route matched.
            base=request.root_path + request.path.removesuffix("/" + rest),
            query=request.args.to_dict(),
            form=request.form.to_dict(),
            cookies=dict(request.cookies),
            native=request,
        )
        return _response(dashboard.handle(web))

    @pages.route("/events", methods=["GET"])
    def events() -> flask.Response:
        if not dashboard.permission(flask.request, VIEW):
            return flask.Response("you may not view the dashboard", 403)
        feed = dashboard.feed()
        if feed is None:
            return flask.Response(status=204)  # EventSource stops; polling goes on

        def stream() -> Iterator[bytes]:
            seen = feed.version  # before the first byte: no change is missed after it
            yield b"retry: 5000\n\n"
            while True:
                version = feed.wait(seen, KEEPALIVE_SECONDS)
                if version is not None:
                    seen = version
                yield event(version)

        return flask.Response(
            stream(), mimetype="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    return pages


def _response(web: WebResponse) -> flask.Response:
    response = flask.Response(
        web.body, web.status, headers=web.headers, content_type=web.content_type
    )
    if web.csrf_cookie is not None:
        response.set_cookie(
            CSRF_COOKIE, web.csrf_cookie, path=web.cookie_path, httponly=True, samesite="Strict"
        )
    return response
