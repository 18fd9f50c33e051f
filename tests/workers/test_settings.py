"""Both workers refuse the same bad settings, naming the setting, with the same message."""

from __future__ import annotations

import pytest

from programma_sa import ConfigurationError

from .harness import Harness, noop

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "eager"}, "mode must be one of lease, transaction, got 'eager'"),
        ({"heartbeat": 0}, r"heartbeat must be a finite number of seconds > 0, got 0"),
        ({"heartbeat": float("inf")}, "heartbeat must be a finite number of seconds"),
        (
            {"max_jobs": 0},
            "max_jobs must be an int >= 1, or None for the adaptive claim size, got 0",
        ),
        ({"concurrency": 1.5}, "concurrency must be an int >= 1, got 1.5"),
        ({"shutdown_timeout": -1}, r"shutdown_timeout must be a finite number of seconds >= 0"),
        ({"retry": 3}, "retry must be a RetryPolicy or None, got 3"),
        ({"listen": "yes"}, "listen must be True or False, got 'yes'"),
        ({"auto_complete": None}, "auto_complete must be True or False, got None"),
        ({"topics": []}, "topics must be a topic or a non-empty list of topics"),
        ({"topics": ["ok", ""]}, "topics: topic must not be empty"),
        ({"handler": "not callable"}, "handler must be callable"),
        ({"database_url": "::nope::", "listen": True}, "database_url is not a valid database URL"),
    ],
)
async def test_bad_settings_are_refused_with_the_setting_named(
    harness: Harness, settings: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"topics": "t", "handler": harness.handler(noop), **settings}
    topics, handler = arguments.pop("topics"), arguments.pop("handler")
    arguments.setdefault("listen", False)
    with pytest.raises(ConfigurationError, match=message):
        harness.worker_class(harness.queue, harness.bind, topics, handler, **arguments)  # type: ignore[arg-type]


async def test_listening_needs_a_url_when_given_a_bare_session_factory(harness: Harness) -> None:
    """A factory that is not a sessionmaker has no bind to take the LISTEN URL from."""
    with pytest.raises(ConfigurationError, match="listen=True needs the database to LISTEN on"):
        harness.worker_class(
            harness.queue,  # type: ignore[arg-type]
            lambda: harness.session_class(harness.bind),  # type: ignore[arg-type]
            "t",
            harness.handler(noop),
        )
    # The URL comes from its bind.
    harness.worker_class(
        harness.queue,  # type: ignore[arg-type]
        harness.sessionmaker_class(harness.bind),  # type: ignore[arg-type]
        "t",
        harness.handler(noop),
    )


#: What each kind of worker says of a queue and a bind that are not its kind's.
REFUSALS = {
    "sync": ("queue must be a JobQueue", "expected an Engine or a session factory"),
    "async": ("queue must be a AsyncJobQueue", "expected an AsyncEngine or an async session"),
}


async def test_bad_queue_and_bind_are_refused(harness: Harness) -> None:
    queue_message, bind_message = REFUSALS[harness.kind]
    handler = harness.handler(noop)
    with pytest.raises(ConfigurationError, match=queue_message):
        harness.worker_class("jobs", harness.bind, "t", handler)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=bind_message):
        harness.worker_class(harness.queue, 42, "t", handler, listen=False)  # type: ignore[arg-type]
