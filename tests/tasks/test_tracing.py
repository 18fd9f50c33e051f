"""OpenTelemetry: the producer's context travels in the job; the worker's span links to it."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import ConfigurationError, JobQueue, TaskRegistry, Worker

from ..workers.support import get_job

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracer_provider() -> None:
    """The SDK, exporting to memory (the global provider can be set once per process)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def traced(queue: JobQueue) -> TaskRegistry:
    return TaskRegistry(queue, tracing=True)


def test_the_worker_span_links_to_the_producer_span(
    engine: Engine, traced: TaskRegistry, queue: JobQueue, exporter: InMemorySpanExporter
) -> None:
    @traced.task(topic="ship")
    def ship(order_id: int) -> None: ...

    request_span = trace.get_tracer("the-app").start_as_current_span("POST /orders")
    with request_span, Session(engine) as session, session.begin():
        job_id = ship.enqueue(session, 42)
    Worker(traced, engine, listen=False).run_once()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    request, send, process = spans["POST /orders"], spans["send ship"], spans["process ship"]
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.context.span_id
    assert send.attributes is not None and send.attributes["messaging.message.id"] == str(job_id)
    assert send.attributes["messaging.destination.name"] == "ship"

    assert process.kind is SpanKind.CONSUMER
    (link,) = process.links
    assert link.context.trace_id == send.context.trace_id
    assert link.context.span_id == send.context.span_id
    assert dict(process.attributes or {}) == {
        "messaging.system": "programma",
        "messaging.operation.type": "process",
        "messaging.destination.name": "ship",
        "messaging.message.id": str(job_id),
        "programma.job.attempt": 1,
        "programma.job.outcome": "success",
    }
    traceparent = get_job(engine, queue, job_id).attributes["traceparent"]
    assert traceparent == (
        f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-{send.context.trace_flags:02x}"
    )


def test_a_failed_run_s_span_says_so(
    engine: Engine, traced: TaskRegistry, exporter: InMemorySpanExporter
) -> None:
    @traced.task(topic="broken")
    def broken() -> None:
        raise LookupError("nothing")

    with Session(engine) as session, session.begin():
        broken.enqueue(session)
    Worker(traced, engine, listen=False).run_once()

    (process,) = [span for span in exporter.get_finished_spans() if span.name == "process broken"]
    assert process.attributes is not None
    assert process.attributes["programma.job.outcome"] == "error"
    assert process.attributes["error.type"] == "LookupError"
    assert process.status.status_code is StatusCode.ERROR
    assert [event.name for event in process.events] == ["exception"]


def test_a_job_enqueued_without_a_trace_runs_in_an_unlinked_span(
    engine: Engine, traced: TaskRegistry, queue: JobQueue, exporter: InMemorySpanExporter
) -> None:
    @traced.task(topic="raw")
    def raw() -> None: ...

    with Session(engine) as session, session.begin():
        queue.add_job(session, "raw", {})
    Worker(traced, engine, listen=False).run_once()

    (process,) = exporter.get_finished_spans()
    assert process.name == "process raw" and not process.links


def test_without_tracing_nothing_is_traced_or_stored(
    engine: Engine, registry: TaskRegistry, queue: JobQueue, exporter: InMemorySpanExporter
) -> None:
    @registry.task(topic="quiet")
    def quiet() -> None: ...

    tracer = trace.get_tracer("the-app")
    with tracer.start_as_current_span("request"), Session(engine) as session, session.begin():
        job_id = quiet.enqueue(session)
    Worker(registry, engine, listen=False).run_once()

    assert [span.name for span in exporter.get_finished_spans()] == ["request"]
    assert get_job(engine, queue, job_id).attributes == {}


@pytest.mark.asyncio
async def test_an_async_worker_runs_each_job_in_a_linked_span_with_its_hooks(
    engine: Engine, database_url: str, traced: TaskRegistry, exporter: InMemorySpanExporter
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from programma_sa import AsyncWorker

    from ..asyncio.urls import async_url
    from ..backends import ASYNC_DRIVERS

    seen: list[tuple[str, object]] = []

    @traced.task(topic="async-ship")
    async def async_ship(order_id: int) -> int:
        return order_id + 1

    traced.after(lambda run: seen.append(("after", run.result)))
    async_ship.before(lambda run: seen.append(("before", trace.get_current_span().name)))  # type: ignore[attr-defined]

    with Session(engine) as session, session.begin():
        job_id = async_ship.enqueue(session, 1)
    async_engine = create_async_engine(async_url(database_url, ASYNC_DRIVERS[0]))
    try:
        assert (await AsyncWorker(traced, async_engine, listen=False).run_once()).completed == 1
    finally:
        await async_engine.dispose()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    send, process = spans["send async-ship"], spans["process async-ship"]
    (link,) = process.links
    assert link.context.span_id == send.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.message.id"] == str(job_id)
    assert process.attributes["programma.job.outcome"] == "success"
    assert seen == [("before", "process async-ship"), ("after", 2)]


def test_tracing_without_opentelemetry_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, queue: JobQueue
) -> None:
    # None in sys.modules makes `import opentelemetry` raise ImportError, as when the
    # package is not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError) as refused:
        TaskRegistry(queue, tracing=True)
    assert str(refused.value) == (
        'tracing=True needs OpenTelemetry: install opentelemetry-api (the extra "otel" '
        "of programma-sa)"
    )
