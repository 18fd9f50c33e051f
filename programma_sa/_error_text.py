"""Errors as one line of text, for log lines and command-line messages."""

from __future__ import annotations

__all__ = ["error_line", "first_line"]


def first_line(error: BaseException) -> str:
    """The first line of the error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def error_line(error: BaseException) -> str:
    """``"OperationalError: (psycopg.errors.AdminShutdown) terminating …"``: one line."""
    return f"{type(error).__name__}: {first_line(error)}"
