"""The operations of a job's life, each checked and ready to execute (no I/O).

:class:`JobOperations` checks the caller's arguments (raising before anything is
sent) and pairs a named statement of the driver (:mod:`programma_sa._drivers`) with
its parameters and with the function that turns the driver's result into the value
the API returns. The sync and async faces and the workers only *execute* what it
builds (:mod:`programma_sa._execute`), so validation, SQL and result handling each
exist once.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Result, Table

from .. import _validation as check
from .._drivers import StatementName
from .._ids import uuid7, uuid7_many
from .._job_records import ClaimedJob, JobDetail, JobSpec
from ..exceptions import DatabaseError, InvalidJobInput
from ..models import JobState
from ..uniqueness import (
    UNFINISHED,
    OnConflict,
    check_on_conflict,
    check_unique_states,
    states_literal,
)
from . import Operation

__all__ = ["JobOperations", "LeaseState"]

_SPEC_FIELDS = frozenset(field.name for field in fields(JobSpec))
#: Encodes the worker's own batch parameters (ids, counts, timestamps: plain JSON).
_BATCH_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _changed_a_row(result: Result[Any]) -> bool:
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def _returned_a_row(result: Result[Any]) -> bool:
    return result.first() is not None


def _claim_order(rows: Iterable[Mapping[Any, Any]]) -> list[Mapping[Any, Any]]:
    # RETURNING has no order of its own; restore the claim's: priority, then FIFO.
    return sorted(rows, key=lambda row: (-row["priority"], row["due_at"], row["id"]))


def _claimed_jobs_of(rows: Sequence[Mapping[Any, Any]]) -> list[ClaimedJob]:
    """The claimed jobs of a claim's returned rows (as mappings), in claim order."""
    return [JobDetail.from_row(row) for row in _claim_order(rows)]


def _claimed_jobs(result: Result[Any]) -> list[ClaimedJob]:
    return _claimed_jobs_of(result.mappings().all())


def _claimed_jobs_due(result: Result[Any]) -> list[tuple[ClaimedJob, datetime]]:
    rows = _claim_order(result.mappings().all())
    return [(JobDetail.from_row(row), row["due_at"]) for row in rows]


def _job_or_none(result: Result[Any]) -> JobDetail | None:
    row = result.mappings().one_or_none()
    return None if row is None else JobDetail.from_row(row)


def _discard(result: Result[Any]) -> None:
    result.close()


def _ids(result: Result[Any]) -> list[uuid.UUID]:
    return list(result.scalars().all())  # one fetchall, not a fetch per row


def _row_count(result: Result[Any]) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def _key_holders(result: Result[Any]) -> dict[str, uuid.UUID]:
    """``{unique_key: id}`` of the ``(unique_key, id)`` rows a unique enqueue (or a
    holders query) returned."""
    return {row.unique_key: row.id for row in result.all() if row.unique_key is not None}


def _scalar_datetime(result: Result[Any]) -> datetime:
    value: datetime = result.scalar_one()
    return value


def _optional_float(result: Result[Any]) -> float | None:
    value = result.scalar_one()
    return None if value is None else float(value)


def _new_leases(result: Result[Any]) -> dict[uuid.UUID, datetime]:
    return {row.id: row.start_after for row in result}


@dataclass(frozen=True)
class LeaseState:
    """What a held job is now, read back after a guarded write missed it."""

    state: JobState
    attempts: int
    start_after: datetime | None


def _lease_states(result: Result[Any]) -> dict[uuid.UUID, LeaseState]:
    return {
        row.id: LeaseState(JobState(row.state), row.attempts, row.start_after) for row in result
    }


@dataclass(frozen=True)
class _Settings:
    """A job's settings besides its data, checked and ready to bind."""

    attributes: str  # JSON text
    run_after_date: datetime | None
    run_after_seconds: float
    retry_after_seconds: int | None
    priority: int

    def shared_with(self, other: _Settings) -> bool:
        """Whether ``other`` has the same settings but (maybe) its priority."""
        return self is other or (
            self.attributes == other.attributes
            and self.run_after_date == other.run_after_date
            and self.run_after_seconds == other.run_after_seconds
            and self.retry_after_seconds == other.retry_after_seconds
        )

    def shared_params(self) -> dict[str, Any]:
        """The bound parameters of these settings that jobs may share: all but the
        priority, which the ``*_shared`` unique statements send with each row."""
        return {
            "p_attributes": self.attributes,
            "p_run_after_date": self.run_after_date,
            "p_run_after_seconds": self.run_after_seconds,
            "p_retry_after_seconds": self.retry_after_seconds,
        }

    @functools.cached_property
    def json_fields(self) -> str:
        """The settings as the tail of a bulk row: ``attributes,date,seconds,retry,priority``."""
        date = None if self.run_after_date is None else self.run_after_date.isoformat()
        rest = _BATCH_ENCODER.encode(
            [date, self.run_after_seconds, self.retry_after_seconds, self.priority]
        )
        return f"{self.attributes},{rest[1:-1]}"


class _UniqueJob(NamedTuple):
    """One job of a unique enqueue: its bulk row, and the key it holds (if any).

    A tuple, not a frozen dataclass: a bulk enqueue makes one per job, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost more than the
    rest of the row's assembly."""

    id: uuid.UUID
    row: str  # the JSON row of the document (the batch's layout)
    key: str | None


class _UniqueBatch(NamedTuple):
    """The jobs of a unique enqueue, and the settings their rows leave out.

    ``shared`` is None when each row carries every setting —
    ``["<id>",data,attributes,date,seconds,retry,priority,key,states]`` — else the
    scalar parameters of the settings all the jobs share, each row being just
    ``["<id>",data,key,priority]`` (the ``*_shared`` statements): every job has a key,
    and the jobs differ at most in their priority — the usual unique batch."""

    jobs: list[_UniqueJob]
    shared: dict[str, Any] | None


_UNFINISHED_LITERAL = states_literal(UNFINISHED)

#: Rounds of a keep/replace enqueue: a round inserts what it can, then reads the
#: holders of the keys it could not take. A holder that left its unique_states in
#: between (finished) frees its key, and the next round inserts. Each round settles
#: every key but such a race, so three rounds only fail under constant churn.
_SETTLE_ROUNDS = 3

#: The statement of each conflict policy, for rows with every setting or the shared
#: settings sent once, without and with the wake-up notification.
_UNIQUE_STATEMENTS: dict[tuple[OnConflict, bool, bool], StatementName] = {
    ("raise", False, False): "insert_unique",
    ("raise", False, True): "insert_unique_notify",
    ("keep", False, False): "insert_unique_keep",
    ("keep", False, True): "insert_unique_keep_notify",
    ("replace", False, False): "insert_unique_replace",
    ("replace", False, True): "insert_unique_replace_notify",
    ("raise", True, False): "insert_unique_shared",
    ("raise", True, True): "insert_unique_shared_notify",
    ("keep", True, False): "insert_unique_keep_shared",
    ("keep", True, True): "insert_unique_keep_shared_notify",
    ("replace", True, False): "insert_unique_replace_shared",
    ("replace", True, True): "insert_unique_replace_shared_notify",
}


#: The types of setting values whose check a bulk enqueue may reuse from an earlier
#: spec when they are equal (immutable values, checked by value alone).
_PLAIN_TYPES = (type(None), int, float, str)


def _settings_key(spec: JobSpec) -> tuple[object, ...] | None:
    """The spec's settings as a key under which their check can be reused, or None.

    Attributes must be None (the default): a mapping may change between one spec and
    the next (a generator yielding specs that share a dict it updates), so a given
    one is serialised for every spec. A datetime's tzinfo is not a plain value.
    """
    key = (spec.run_after_seconds, spec.run_after_date, spec.retry_after_seconds, spec.priority)
    if spec.attributes is None and all(type(value) in _PLAIN_TYPES for value in key):
        return key
    return None


def _as_spec(index: int, spec: object) -> JobSpec:
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - _SPEC_FIELDS
        if unknown:
            raise InvalidJobInput(
                f"job spec #{index} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(_SPEC_FIELDS)}"
            )
        if "data" not in spec:
            raise InvalidJobInput(f"job spec #{index} has no 'data'")
        return JobSpec(**spec)
    raise InvalidJobInput(
        f"job spec #{index} must be a JobSpec or a mapping, got {type(spec).__name__}"
    )


class JobOperations:
    """Builds the :class:`Operation` objects of one jobs table and one set of settings."""

    def __init__(self, table: Table, *, notify: bool, max_payload_bytes: int) -> None:
        self.table = table
        self.notify = notify
        self.max_payload_bytes = check.payload_limit(max_payload_bytes)

    # -- enqueue ---------------------------------------------------------------------

    def _checked(
        self,
        data: Any,
        attributes: Mapping[str, Any] | None,
        run_after_seconds: float | None,
        run_after_date: datetime | str | None,
        retry_after_seconds: int | None,
        priority: int,
    ) -> tuple[str, _Settings]:
        """``data`` as JSON text and the checked settings; the arguments are checked in
        this order, so the first bad one is the one reported."""
        seconds = check.optional_seconds(run_after_seconds, "run_after_seconds")
        text = check.json_text(data, "data", self.max_payload_bytes)
        settings = _Settings(
            attributes=check.attributes_text(
                {} if attributes is None else attributes, self.max_payload_bytes
            ),
            run_after_date=(
                None
                if run_after_date is None
                else check.start_date(run_after_date, "run_after_date")
            ),
            run_after_seconds=0.0 if seconds is None else seconds,
            retry_after_seconds=check.retry_seconds(retry_after_seconds),
            priority=check.check_priority(priority),
        )
        return text, settings

    def add_job(
        self,
        topic: str,
        data: Any,
        *,
        attributes: Mapping[str, Any] | None,
        run_after_seconds: float | None,
        run_after_date: datetime | str | None,
        retry_after_seconds: int | None,
        priority: int = 0,
        unique_key: str | None = None,
        unique_states: Iterable[JobState | str] | None = None,
        on_conflict: OnConflict = "keep",
    ) -> Generator[Operation[Any], Any, uuid.UUID]:
        """The steps of one enqueue; they return the job's id — or, with a unique key
        that is held, the holder's (see :meth:`_unique_steps`). The arguments are
        checked when the first step is asked for, before it is sent."""
        topic = check.check_topic(topic)
        text, settings = self._checked(
            data, attributes, run_after_seconds, run_after_date, retry_after_seconds, priority
        )
        policy = check_on_conflict(on_conflict)
        if unique_key is not None or unique_states is not None:
            uniqueness = self._uniqueness(unique_key, unique_states)
            batch = self._unique_batch([text], [settings], [uniqueness])
            (holder,) = yield from self._unique_steps(topic, batch, policy)
            return holder
        job_id = uuid7()
        statement: StatementName = "insert_one_notify" if self.notify else "insert_one"
        params = {
            "p_id": job_id,
            "p_topic": topic,
            "p_data": text,
            **settings.shared_params(),
            "p_priority": settings.priority,
        }
        yield Operation(self.table, statement, params, _discard)
        return job_id

    @staticmethod
    def _uniqueness(
        key: str | None, states: Iterable[JobState | str] | None
    ) -> tuple[str, str] | None:
        """The checked key and its unique_states (an array literal); ``None``: no key."""
        if key is None:
            if states is not None:
                raise InvalidJobInput("unique_states needs a unique_key")
            return None
        held_in = (
            _UNFINISHED_LITERAL if states is None else states_literal(check_unique_states(states))
        )
        return check.check_unique_key(key), held_in

    @staticmethod
    def _unique_batch(
        datas: Sequence[str],
        settings: Sequence[_Settings],
        uniqueness: Sequence[tuple[str, str] | None],
    ) -> _UniqueBatch:
        """The rows of a unique enqueue (new ids), in the shortest layout the jobs allow."""
        ids = uuid7_many(len(datas))
        first, (_, held_in) = settings[0], uniqueness[0] or ("", "")
        keys: list[str] = []
        for each, unique in zip(settings, uniqueness, strict=True):
            if unique is None or unique[1] != held_in or not each.shared_with(first):
                break
            keys.append(unique[0])
        else:
            shared = {**first.shared_params(), "p_unique_states": held_in}
            encode = _BATCH_ENCODER.encode
            jobs = [
                _UniqueJob(job_id, f'["{job_id}",{data},{encode(key)},{each.priority}]', key)
                for job_id, data, each, key in zip(ids, datas, settings, keys, strict=True)
            ]
            return _UniqueBatch(jobs, shared)
        rows: list[_UniqueJob] = []
        for job_id, data, each, unique in zip(ids, datas, settings, uniqueness, strict=True):
            # The states literal is plain words, braces and commas: no JSON escaping.
            tail = (
                "null,null"
                if unique is None
                else f'{_BATCH_ENCODER.encode(unique[0])},"{unique[1]}"'
            )
            row = f'["{job_id}",{data},{each.json_fields},{tail}]'
            rows.append(_UniqueJob(job_id, row, None if unique is None else unique[0]))
        return _UniqueBatch(rows, None)

    def _unique_steps(
        self, topic: str, batch: _UniqueBatch, on_conflict: OnConflict
    ) -> Generator[Operation[Any], Any, list[uuid.UUID]]:
        """Enqueue ``jobs`` (some with a unique key) by ``on_conflict``; the id of each
        job's key holder (or of the job itself), in order.

        ``raise``: one INSERT; a held key (or a key twice in ``jobs``) makes the
        database refuse it whole (:class:`~programma_sa.DuplicateJob`). ``keep`` /
        ``replace``: a key is sent once — its first job (keep) or its last (replace,
        the latest settings win) — and every job of that key gets the id of the job
        that holds it afterwards: inserted, replaced, or kept as it was. The keys the
        INSERT could not take are looked up (``unique_key_holders``), and a key whose
        holder finished in between is inserted in the next round.
        """
        jobs = batch.jobs
        statement = _UNIQUE_STATEMENTS[(on_conflict, batch.shared is not None, self.notify)]
        shared = batch.shared or {}

        def insert(some: Sequence[_UniqueJob], read: Any) -> Operation[Any]:
            document = f"[{','.join([job.row for job in some])}]"
            params = {"p_topic": topic, "p_jobs": document, **shared}
            return Operation(self.table, statement, params, read)

        if on_conflict == "raise":
            yield insert(jobs, _discard)
            return [job.id for job in jobs]
        sent: dict[str, _UniqueJob] = {}
        for job in jobs:
            if job.key is not None and (on_conflict == "replace" or job.key not in sent):
                sent[job.key] = job
        pending = [job for job in jobs if job.key is None or sent[job.key] is job]
        holders: dict[str, uuid.UUID] = {}
        for _ in range(_SETTLE_ROUNDS):
            keys = [job.key for job in pending if job.key is not None]
            if on_conflict == "keep":
                # DO NOTHING returns nothing to read: when every row went in (the usual
                # case) the ids are our own; else every key's holder is read.
                inserted: int = yield insert(pending, _row_count)
                if inserted == len(pending):
                    holders.update((job.key, job.id) for job in pending if job.key is not None)
                    break
                unsettled = keys
            else:  # replace: the rows inserted or replaced come back, with their ids
                holders.update((yield insert(pending, _key_holders)))
                unsettled = [key for key in keys if key not in holders]
                if not unsettled:
                    break
            params = {"p_keys": unsettled}
            holders.update(
                (yield Operation(self.table, "unique_key_holders", params, _key_holders))
            )
            pending = [sent[key] for key in unsettled if key not in holders]
            if not pending:
                break
        else:
            raise DatabaseError(
                f"could not enqueue unique keys {sorted(job.key or '' for job in pending)} in "
                f"{_SETTLE_ROUNDS} rounds: their holders kept finishing in between"
            )
        return [job.id if job.key is None else holders[job.key] for job in jobs]

    def _checked_specs(
        self, specs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> tuple[list[str], list[_Settings], list[tuple[str, str] | None]]:
        """Each spec's data (JSON text), settings and uniqueness, checked in order;
        the error of a bad spec names its index."""
        datas: list[str] = []
        settings: list[_Settings] = []
        uniqueness: list[tuple[str, str] | None] = []
        # The checked settings of each plain key seen so far (a batch has few: all
        # defaults, or a handful of priorities): a spec with the same plain settings
        # reuses them, only its data is new.
        seen: dict[tuple[object, ...], _Settings] = {}
        for index, item in enumerate(specs):
            spec = _as_spec(index, item)
            key = _settings_key(spec)
            try:
                last = None if key is None else seen.get(key)
                if last is not None:
                    datas.append(check.json_text(spec.data, "data", self.max_payload_bytes))
                else:
                    text, last = self._checked(
                        spec.data,
                        spec.attributes,
                        spec.run_after_seconds,
                        spec.run_after_date,
                        spec.retry_after_seconds,
                        spec.priority,
                    )
                    if key is not None:
                        seen[key] = last
                    datas.append(text)
                uniqueness.append(
                    None
                    if spec.unique_key is None and spec.unique_states is None
                    else self._uniqueness(spec.unique_key, spec.unique_states)
                )
            except InvalidJobInput as error:
                raise type(error)(f"job spec #{index}: {error}") from error
            settings.append(last)
        return datas, settings, uniqueness

    def add_jobs_if_keys_free(
        self, topic: str, specs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> Operation[int] | None:
        """Insert the jobs of ``specs`` — each with a unique key — whose key no job
        holds; how many were inserted. Held keys are left to their holders, unread:
        one statement (``ON CONFLICT DO NOTHING``), what a periodic schedule's fire
        times need. ``None``: nothing to add."""
        topic = check.check_topic(topic)
        datas, settings, uniqueness = self._checked_specs(specs)
        if None in uniqueness:
            raise InvalidJobInput(f"job spec #{uniqueness.index(None)} has no unique_key")
        if not datas:
            return None
        batch = self._unique_batch(datas, settings, uniqueness)
        statement = _UNIQUE_STATEMENTS[("keep", batch.shared is not None, self.notify)]
        document = f"[{','.join([job.row for job in batch.jobs])}]"
        params = {"p_topic": topic, "p_jobs": document, **(batch.shared or {})}
        return Operation(self.table, statement, params, _row_count)

    def add_jobs(
        self,
        topic: str,
        specs: Iterable[JobSpec | Mapping[str, Any]],
        on_conflict: OnConflict = "keep",
    ) -> Generator[Operation[Any], Any, list[uuid.UUID]]:
        """Validate every spec first, then the steps of the enqueue; they return the
        ids, in the order of ``specs`` (no step when there is nothing to add).

        The jobs travel as ONE JSON document (see ``Statements.insert_many``): each
        job's data is already JSON text, so the document is joined, never escaped.
        When every job has the same settings (the usual bulk: all defaults) they are
        sent once, as scalars, and each row is just ``["<id>",<data>]``. When a spec
        has a ``unique_key`` the batch is enqueued by ``on_conflict``
        (:meth:`_unique_steps`).
        """
        topic = check.check_topic(topic)
        policy = check_on_conflict(on_conflict)
        datas, settings, uniqueness = self._checked_specs(specs)
        if not datas:
            return []
        if any(uniqueness):
            batch = self._unique_batch(datas, settings, uniqueness)
            return (yield from self._unique_steps(topic, batch, policy))
        job_ids = uuid7_many(len(datas))
        first = settings[0]
        if all(each is first or each == first for each in settings):
            rows = ",".join(
                [f'["{job_id}",{data}]' for job_id, data in zip(job_ids, datas, strict=True)]
            )
            params: dict[str, Any] = {
                "p_topic": topic,
                "p_jobs": f"[{rows}]",
                **first.shared_params(),
                "p_priority": first.priority,
            }
            statement: StatementName = (
                "insert_many_uniform_notify" if self.notify else "insert_many_uniform"
            )
        else:
            rows = ",".join(
                [
                    f'["{job_id}",{data},{each.json_fields}]'
                    for job_id, data, each in zip(job_ids, datas, settings, strict=True)
                ]
            )
            params = {"p_topic": topic, "p_jobs": f"[{rows}]"}
            statement = "insert_many_notify" if self.notify else "insert_many"
        yield Operation(self.table, statement, params, _discard)
        return job_ids

    # -- claim -----------------------------------------------------------------------

    @staticmethod
    def _claim_params(topic: str, max_jobs: int) -> dict[str, Any]:
        return {"p_topic": check.check_topic(topic), "p_max_jobs": check.check_max_jobs(max_jobs)}

    def claim_jobs(self, topic: str, max_jobs: int) -> Operation[list[ClaimedJob]]:
        params = self._claim_params(topic, max_jobs)
        return Operation(self.table, "claim", params, _claimed_jobs, read_rows=_claimed_jobs_of)

    def claim_jobs_due(
        self, topic: str, max_jobs: int
    ) -> Operation[list[tuple[ClaimedJob, datetime]]]:
        """:meth:`claim_jobs`, each job with its ``due_at``: its ``start_after``
        before this claim (what :meth:`reclaim_rolled_back` needs should the claim
        roll back)."""
        params = self._claim_params(topic, max_jobs)
        return Operation(self.table, "claim", params, _claimed_jobs_due)

    # -- one job, by id --------------------------------------------------------------

    def _by_id(
        self, statement: StatementName, job_id: uuid.UUID | str, **params: Any
    ) -> Operation[bool]:
        return Operation(
            self.table, statement, {"p_job_id": check.job_id(job_id), **params}, _changed_a_row
        )

    def move_job_to_processing(self, job_id: uuid.UUID | str) -> Operation[bool]:
        return self._by_id("move_to_processing", job_id)

    def move_job_to_done(self, job_id: uuid.UUID | str, delete: bool) -> Operation[bool]:
        finish: StatementName = "delete_by_id" if delete else "move_to_completed"
        return self._by_id(finish, job_id)

    def move_job_to_failed(self, job_id: uuid.UUID | str, delete: bool) -> Operation[bool]:
        finish: StatementName = "delete_by_id" if delete else "move_to_failed"
        return self._by_id(finish, job_id)

    def delete_job(self, job_id: uuid.UUID | str) -> Operation[bool]:
        return self._by_id("delete_by_id", job_id)

    def set_attributes(
        self, job_id: uuid.UUID | str, attributes: Mapping[str, Any]
    ) -> Operation[bool]:
        text = check.attributes_text(attributes, self.max_payload_bytes)
        return self._by_id("set_attributes", job_id, p_attributes=text)

    def set_retry_after_seconds(
        self, job_id: uuid.UUID | str, seconds: int | None
    ) -> Operation[bool]:
        return self._by_id(
            "set_retry_after_seconds",
            job_id,
            p_retry_after_seconds=check.retry_seconds(seconds),
        )

    def set_job_start_date(
        self, job_id: uuid.UUID | str, start_date: datetime | str
    ) -> Operation[bool]:
        return self._by_id(
            "set_start_after",
            job_id,
            p_start_after=check.start_date(start_date, "start_date"),
        )

    def get_job(self, job_id: uuid.UUID | str) -> Operation[JobDetail | None]:
        return Operation(self.table, "get_by_id", {"p_job_id": check.job_id(job_id)}, _job_or_none)

    # -- the worker's outcome writes (guarded: only a job still as its claim left it) --

    @staticmethod
    def _held(jobs: Sequence[ClaimedJob]) -> list[dict[str, Any]]:
        """Each job as the worker holds it: id, attempts, and the lease end it knows."""
        return [
            {
                # 32 hex digits, which PostgreSQL reads as a uuid as well as the
                # hyphenated form: a third cheaper to make (one per job completed).
                "id": job.id.hex,
                "attempts": job.attempts,
                # ISO 8601 with its UTC offset and microseconds: the very instant,
                # compared for equality with the stored timestamptz.
                "start_after": None if job.start_after is None else job.start_after.isoformat(),
            }
            for job in jobs
        ]

    def complete_unchanged(
        self, jobs: Sequence[ClaimedJob], results: Sequence[str | None] | None = None
    ) -> Operation[list[uuid.UUID]]:
        """COMPLETE every job of ``jobs`` that is unchanged since its claim (as the
        worker holds it), each with its result (JSON text from :meth:`result_text`,
        ``None``: none); returns the ids completed."""
        held = self._held(jobs)
        if results is None or not any(results):
            document = _BATCH_ENCODER.encode(held)
        else:
            # The results are JSON text already: joined into the document, not
            # decoded and encoded again.
            document = "[{}]".format(
                ",".join(
                    f"{_BATCH_ENCODER.encode(row)[:-1]},"
                    f'"result":{"null" if result is None else result}}}'
                    for row, result in zip(held, results, strict=True)
                )
            )
        return Operation(self.table, "complete_unchanged", {"p_claimed": document}, _ids)

    def result_text(self, value: Any) -> str | None:
        """A handler's return value as the JSON text stored with its completion
        (``None`` for ``None``); raises :class:`InvalidJobInput` when it cannot be
        stored (not JSON, or over the queue's payload limit)."""
        if value is None:
            return None
        return check.json_text(value, "the handler's result", self.max_payload_bytes)

    def renew_leases(self, jobs: Sequence[ClaimedJob]) -> Operation[dict[uuid.UUID, datetime]]:
        """Start the lease of each held job again from now (only a job still as the
        worker holds it); returns the new lease end of each renewed job."""
        params = {"p_held": _BATCH_ENCODER.encode(self._held(jobs))}
        return Operation(self.table, "renew_leases", params, _new_leases)

    def release_unstarted(self, jobs: Sequence[ClaimedJob]) -> Operation[list[uuid.UUID]]:
        """Make held jobs whose handler never started claimable at once, their delivery
        uncounted (only a job still as the worker holds it); returns their ids."""
        params = {"p_held": _BATCH_ENCODER.encode(self._held(jobs))}
        return Operation(self.table, "release_unstarted", params, _ids)

    def lease_states(self, ids: Sequence[uuid.UUID]) -> Operation[dict[uuid.UUID, LeaseState]]:
        """What the jobs ``ids`` are now (absent: deleted): after a guarded write did
        not match them, to tell a handler's own change from a lost lease."""
        return Operation(self.table, "lease_states", {"p_ids": list(ids)}, _lease_states)

    def _unchanged(
        self, statement: StatementName, job: ClaimedJob, error: Mapping[str, Any], **params: Any
    ) -> Operation[bool]:
        return self._by_id(
            statement,
            job.id,
            p_attempts=job.attempts,
            p_start_after=job.start_after,
            p_attributes=check.attributes_text(error, self.max_payload_bytes),
            **params,
        )

    def retry_unchanged(
        self, job: ClaimedJob, delay: float | None, error: Mapping[str, Any]
    ) -> Operation[bool]:
        """Record ``error`` (merged into attributes) and make the job due in ``delay``
        seconds (``None``: keep the claim's visibility timeout)."""
        seconds = check.optional_seconds(delay, "delay")
        return self._unchanged("retry_unchanged", job, error, p_delay=seconds)

    def snooze_unchanged(self, job: ClaimedJob, delay: float) -> Operation[bool]:
        """Make the job due in ``delay`` seconds and give its attempt back (the claim
        counted one): a snooze is not a failure."""
        seconds = check.optional_seconds(delay, "snooze delay")
        return self._by_id(
            "snooze_unchanged",
            job.id,
            p_attempts=job.attempts,
            p_start_after=job.start_after,
            p_delay=seconds,
        )

    def clock(self) -> Operation[datetime]:
        """The database's time (``statement_timestamp()``)."""
        return Operation(self.table, "clock", {}, _scalar_datetime)

    def fail_unchanged(self, job: ClaimedJob, error: Mapping[str, Any]) -> Operation[bool]:
        """Record ``error`` (merged into attributes) and move the job to FAILED."""
        operation = self._unchanged("fail_unchanged", job, error)
        return Operation(self.table, operation.statement, operation.params, _returned_a_row)

    def cancel_unchanged(self, job: ClaimedJob) -> Operation[bool]:
        """Move a held job whose cancellation reached its worker to CANCELLED."""
        params = {"p_job_id": job.id, "p_attempts": job.attempts, "p_start_after": job.start_after}
        return Operation(self.table, "cancel_unchanged", params, _returned_a_row)

    def reclaim_rolled_back(
        self, job: ClaimedJob, due_at: datetime
    ) -> Operation[ClaimedJob | None]:
        """Claim ``job`` again — a claim of it that rolled back returned it, with
        ``due_at`` — if it is still exactly as it was before that claim (claimable,
        ``attempts`` one less, ``start_after`` = ``due_at``) and no other transaction
        holds it; returns the job as claimed, or ``None`` (nothing written)."""
        params = {"p_job_id": job.id, "p_attempts": job.attempts - 1, "p_start_after": due_at}
        return Operation(self.table, "reclaim_rolled_back", params, _job_or_none)

    def seconds_until_due(self, topic: str) -> Operation[float | None]:
        """Seconds until ``topic``'s next claimable job is due (``None``: no such job)."""
        return Operation(
            self.table,
            "seconds_until_due",
            {"p_topic": check.check_topic(topic)},
            _optional_float,
        )
