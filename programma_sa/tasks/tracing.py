"""OpenTelemetry for tasks (the ``otel`` extra: ``opentelemetry-api``; ``TaskRegistry(...,
tracing=True)``).

*Enqueue*: a ``PRODUCER`` span ``send <topic>`` around the insert; its W3C trace
context (``traceparent``, and ``tracestate`` when there is one) is stored in the
job's attributes, so it commits — or rolls back — with the job.

*Run*: the worker runs each job in a ``CONSUMER`` span ``process <topic>`` that is
*linked* to the producer's span (the producer's trace may have ended long before;
a link, not a parent, as the messaging conventions advise), with the attributes
``messaging.system`` (``programma``), ``messaging.destination.name`` (the topic),
``messaging.message.id`` (the job id), ``programma.job.attempt`` and
``programma.job.outcome`` (``success`` or ``error``: the run's; what the worker then
decides — retry or FAILED — is in its log line), plus ``error.type`` and the
exception as an event on failure.

Without ``tracing=True`` none of this runs (and OpenTelemetry is never imported).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from .._job_records import ClaimedJob
from ..exceptions import ConfigurationError
from ..retry import error_type_name

__all__ = ["NO_TRACING", "Sending", "Tracing"]

SYSTEM = "programma"


class Sending:
    """What a producer span gives the enqueue: the attributes carrying its context."""

    def __init__(self, span: Any = None, carrier: Mapping[str, str] | None = None) -> None:
        self._span = span
        #: The trace context to store in the job's attributes.
        self.carrier: Mapping[str, str] = carrier or {}

    def sent(self, job_ids: list[uuid.UUID]) -> None:
        """Note the ids of the jobs the span enqueued."""
        if self._span is not None and len(job_ids) == 1:
            self._span.set_attribute("messaging.message.id", str(job_ids[0]))


class NoTracing:
    """The tracing of a registry without ``tracing=True``: nothing."""

    def producing(self, topic: str, count: int) -> AbstractContextManager[Sending]:
        return nullcontext(Sending())

    def processing(self, job: ClaimedJob) -> AbstractContextManager[object]:
        return nullcontext()


NO_TRACING = NoTracing()


class Tracing(NoTracing):
    """Producer and consumer spans through the OpenTelemetry API."""

    def __init__(self) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as error:
            raise ConfigurationError(
                "tracing=True needs OpenTelemetry: install opentelemetry-api "
                '(the extra "otel" of programma-sa)'
            ) from error
        self._trace = trace
        self._tracer = trace.get_tracer("programma_sa.tasks")
        self._propagator = TraceContextTextMapPropagator()

    @contextmanager
    def producing(self, topic: str, count: int) -> Iterator[Sending]:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        with self._tracer.start_as_current_span(
            f"send {topic}", kind=self._trace.SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            yield Sending(span, carrier)

    @contextmanager
    def processing(self, job: ClaimedJob) -> Iterator[object]:
        produced = self._trace.get_current_span(
            self._propagator.extract(job.attributes)
        ).get_span_context()
        links = [self._trace.Link(produced)] if produced.is_valid else []
        with self._tracer.start_as_current_span(
            f"process {job.topic}",
            kind=self._trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": job.topic,
                "messaging.message.id": str(job.id),
                "programma.job.attempt": job.attempts,
            },
        ) as span:
            try:
                yield span
            except Exception as error:
                span.set_attribute("programma.job.outcome", "error")
                span.set_attribute("error.type", error_type_name(error))
                raise
            span.set_attribute("programma.job.outcome", "success")
