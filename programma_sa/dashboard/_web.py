"""A request and a response as the dashboard sees them, whatever the web framework.

The Starlette app (:mod:`.asgi`) and the Flask blueprint (:mod:`.blueprint`) each turn
their framework's request into a :class:`WebRequest` and a :class:`WebResponse` back
into theirs; everything in between (routing, pages, actions, the CSRF check) is
written once, in :mod:`.app`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "WebRequest", "WebResponse", "csrf_refusal"]

#: The cookie holding the browser's CSRF token, and the form field echoing it.
CSRF_COOKIE = "programma_csrf"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class WebRequest:
    """One request to the dashboard."""

    method: str
    #: The path below the mount point, starting with ``/``.
    path: str
    #: The mount point's URL path (no trailing slash; ``""`` at the root).
    base: str
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    #: The framework's own request object, handed to the host's permission hook.
    native: Any = None

    def csrf_token(self) -> str:
        """The browser's CSRF token, or a new one (the page's response then sets the cookie)."""
        return self.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


@dataclass
class WebResponse:
    """One response of the dashboard."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    #: The CSRF cookie to set (``None``: the browser has it already).
    csrf_cookie: str | None = None
    #: The cookie's path: the mount point.
    cookie_path: str = "/"


def csrf_refusal(request: WebRequest) -> str | None:
    """Why a POST fails the CSRF check, or ``None`` when it passes.

    Double submit: the form must carry the token of the browser's own cookie. A
    cross-site form can make the browser send the cookie (were it not SameSite=Strict)
    but cannot read it, so it cannot put the same value in the form.
    """
    cookie = request.cookies.get(CSRF_COOKIE)
    sent = request.form.get(CSRF_FIELD)
    if not cookie:
        return "CSRF check failed: no CSRF cookie (load a dashboard page first)"
    if not sent:
        return f"CSRF check failed: the form has no {CSRF_FIELD} field"
    if not hmac.compare_digest(cookie.encode(), sent.encode()):
        return f"CSRF check failed: the form's {CSRF_FIELD} does not match the cookie"
    return None
