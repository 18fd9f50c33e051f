"""The dashboard as an ASGI application (Starlette), to mount in FastAPI or Starlette::

    app.mount("/jobs-dashboard", asgi_app(Dashboard(queue, engine, permission=allowed)))

Pages and actions run :meth:`Dashboard.handle` in a worker thread (it does blocking
I/O on the application's engine); the event stream waits on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ._web import CSRF_COOKIE, WebRequest, WebResponse
from .app import VIEW, Dashboard
from .live import KEEPALIVE_SECONDS, event

__all__ = ["asgi_app"]


def asgi_app(dashboard: Dashboard) -> Starlette:
    """A Starlette application serving ``dashboard`` (mount it anywhere)."""

    async def handle(request: Request) -> Response:
        body = await request.body() if request.method == "POST" else b""
        web = WebRequest(
            method=request.method,
            path="/" + request.path_params["rest"],
            base=request.scope.get("root_path", "").rstrip("/"),
            query=dict(request.query_params),
            form=dict(parse_qsl(body.decode("utf-8", "replace"))),
            cookies=dict(request.cookies),
            native=request,
        )
        return _response(await run_in_threadpool(dashboard.handle, web))

    async def events(request: Request) -> Response:
        if not dashboard.permission(request, VIEW):
            return Response("you may not view the dashboard", 403)
        feed = await run_in_threadpool(dashboard.feed)
        if feed is None:
            return Response(status_code=204)  # EventSource stops; polling goes on

        async def stream() -> AsyncIterator[bytes]:
            seen = feed.version  # before the first byte: no change is missed after it
            yield b"retry: 5000\n\n"
            while True:
                version = await feed.wait_async(seen, KEEPALIVE_SECONDS)
                if version is not None:
                    seen = version
                yield event(version)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Run when the app is served on its own; a host app that mounts it calls
        # dashboard.close() from its own lifespan (the listener thread is a daemon).
        yield
        dashboard.close()

    return Starlette(
        routes=[
            Route("/events", events, methods=["GET"]),
            Route("/{rest:path}", handle, methods=["GET", "HEAD", "POST"]),
        ],
        lifespan=lifespan,
    )


def _response(web: WebResponse) -> Response:
    response = Response(web.body, web.status, headers=web.headers, media_type=web.content_type)
    if web.csrf_cookie is not None:
        response.set_cookie(
            CSRF_COOKIE, web.csrf_cookie, path=web.cookie_path, httponly=True, samesite="strict"
        )
    return response
