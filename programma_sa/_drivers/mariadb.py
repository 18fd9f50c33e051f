"""The MariaDB driver (10.6+; MySQL 8.0+ by design, untested): the statements of
:mod:`.postgresql`, for MariaDB.

:func:`build_statements` builds the same :class:`~.base.Statements`, with the same
``p_*`` parameters and result columns. What MariaDB lacks, and what takes its place:

* **No UPDATE … RETURNING, no data-modifying CTE.** A statement that must say which
  rows it changed is a :class:`~.base.Script` of three statements in the caller's
  transaction (:func:`_update_returning`): ``SELECT id … FOR UPDATE`` (the rows
  the write may touch, locked), ``UPDATE … WHERE id IN (…)``, and a ``SELECT`` of
  what it returns. The rows stay locked until the caller's transaction ends, so no
  other transaction changes them between the three. MariaDB's ``INSERT …
  RETURNING`` and ``DELETE … RETURNING`` are not used either: MySQL 8 has neither.
* **The claim** is such a script: ``SELECT … ORDER BY priority DESC, start_after, id
  LIMIT n FOR UPDATE SKIP LOCKED`` — concurrent claimers skip rows another
  transaction has locked instead of waiting, so no two claims take the same job —
  then the UPDATE of those ids, then the rows read back.
* **Isolation.** InnoDB's default is REPEATABLE READ, under which a locking read
  (``FOR UPDATE``) also takes *gap* locks on the index range it scanned: an enqueue
  inserting into that range of the claim index then waits for the claiming
  transaction (in the transactional mode: for the whole handler). Under READ
  COMMITTED a locking read takes record locks only. The library never changes the
  isolation of the caller's transaction; the engines of the workers, the CLI and
  the tests use READ COMMITTED, and docs/mariadb.md says to do the same. Either
  way a locking read (and every UPDATE) reads the latest committed row, not the
  transaction's snapshot, so no claim acts on a stale row.
* **No partial indexes.** The indexes are plain composite ones (the model's, without
  their predicates), except two over generated columns (revision programma_0004):
  ``ix_<table>_claim`` (:data:`CLAIM_TOPIC`, priority DESC, start_after, id) holds
  claimable jobs only and serves the claim and ``seconds_until_due``;
  ``uq_<table>_unique_key`` (:data:`UNIQUE_HOLDER`). ``ix_<table>_finished`` /
  ``_failed`` / ``_cancelled`` (topic, finished_at) serve stats, throughput, prune
  and re-runs; ``ix_<table>_processing`` (topic, started_at) stats;
  ``ix_<table>_history`` (topic, id) a topic's listing.
* **No LISTEN/NOTIFY, no advisory locks.** The ``*_notify`` enqueues are the plain
  ones: workers poll. The prune lock is always "taken": the prune's batches are
  picked with ``FOR UPDATE SKIP LOCKED``, so concurrent pruners delete disjoint rows.
* **Time** is ``UTC_TIMESTAMP(6)`` (the statement's start, to the microsecond) in
  ``DATETIME(6)`` columns that hold UTC (:class:`~programma_sa._portable.UtcDateTime`).
* **JSON** is text checked by ``JSON_VALID``; documents of many rows are read with
  ``JSON_TABLE`` (:class:`JsonRows`). A top-level merge of attributes (PostgreSQL's
  ``||``) has no MariaDB function — ``JSON_MERGE_PATCH`` merges nested objects and
  drops members set to null — so the merge is made in Python on the locked row.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from itertools import accumulate
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Executable,
    Float,
    FromClause,
    Integer,
    Result,
    Select,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import TableClause
from sqlalchemy.sql.elements import FunctionFilter
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from .._portable import HexUuid, KeyText, UtcDateTime
from ..exceptions import InvalidJobInput
from ..models import (
    CLAIMABLE_STATES,
    FINISHED_STATES,
    RERUNNABLE_STATES,
    TERMINAL_STATES,
    JobState,
    paused_topics_table,
)
from .base import JobsShape, Runnable, Script, Statements, Step
from .shapes import ShapeTerms, rerun_values, shape_filters
from .stats import StatsClock, stats_statement

__all__ = ["CLAIM_TOPIC", "MAX_JSON_DEPTH", "UNIQUE_HOLDER", "JsonRows", "build_statements"]

_UTC = UtcDateTime()
_KEY = KeyText()
#: Ids as the table keeps them there: 32 hex digits (programma_sa._portable.UUID_TYPE).
_UUID = HexUuid()
#: The generated column holding a job's topic while it is claimable (NULL otherwise),
#: the first column of ``ix_<table>_claim`` there (revision programma_0004): a claim
#: reads claimable rows only, as PostgreSQL's partial claim index gives.
CLAIM_TOPIC = "claim_topic"
#: The generated column holding a job's unique key while the job holds it (NULL
#: otherwise), unique-indexed as ``uq_<table>_unique_key`` (revision programma_0004).
UNIQUE_HOLDER = "unique_holder"


#: How deep a job's data and attributes may be nested on MariaDB, in levels as
#: ``JSON_DEPTH`` counts them (a scalar is 1, each array or object around it 1 more).
#: MariaDB's JSON parser stops at 32 levels: the JSON columns' ``JSON_VALID`` check
#: refuses a deeper value (error 4025) and ``JSON_TABLE`` a deeper document (error
#: 4040). A bulk enqueue's document holds each job's data and attributes two levels
#: down (the document's array, the job's row), so 30 is the depth one job and a
#: batch of jobs can both store.
MAX_JSON_DEPTH = 30
#: Where a bulk document's jobs' values are: two levels down.
_ROW_LEVELS = 2
#: A JSON string (escapes included); what is left between them is JSON's structure.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]")


def _json_depth(text: str) -> int:
    """How many levels deep the valid JSON ``text`` is: 1, and 1 more for each array
    or object around the deepest value (the characters of strings left out)."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return 1 + max(accumulate(1 if bracket in "[{" else -1 for bracket in brackets), default=0)


def _check_depth(text: object, what: str, levels_above: int = 0) -> None:
    """Refuse ``text`` (a JSON parameter) when what it holds ``levels_above`` levels
    down is nested deeper than :data:`MAX_JSON_DEPTH`."""
    if not isinstance(text, str) or text.count("[") + text.count("{") < MAX_JSON_DEPTH:
        return  # too few arrays and objects to nest that deep
    depth = _json_depth(text) - levels_above
    if depth > MAX_JSON_DEPTH:
        raise InvalidJobInput(
            f"{what}: JSON nested {depth} levels deep; MariaDB stores a job's data and "
            f"attributes nested at most {MAX_JSON_DEPTH} levels deep"
        )


def _depth_checked(statement: Runnable) -> Script:
    """``statement`` once the JSON it is given has passed :func:`_check_depth`, before
    anything is sent: ``p_data`` and ``p_attributes`` (a job's), ``p_jobs`` (a bulk
    enqueue's document)."""

    def run(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        _check_depth(params.get("p_data"), "data")
        _check_depth(params.get("p_attributes"), "attributes")
        _check_depth(params.get("p_jobs"), "a job's data or attributes", _ROW_LEVELS)
        if isinstance(statement, Script):
            return (yield from statement.run(params))
        return (yield statement, params)

    return Script(run)


class JsonRows(TableClause):
    """``JSON_TABLE(<document>, '$[*]' COLUMNS (…)) AS <name>``: the rows of a JSON
    array parameter as a table (MariaDB 10.6+, MySQL 8.0+). ``spec`` is the COLUMNS
    list, ``(name, SQL type, path)`` per column; a ``JSON`` column keeps the element
    as JSON text (a string stays quoted, null is ``null``)."""

    _traverse_internals = [  # noqa: RUF012  (SQLAlchemy's own class attribute)
        *TableClause._traverse_internals,
        ("document", InternalTraversal.dp_clauseelement),
        ("spec", InternalTraversal.dp_string),
    ]
    inherit_cache = True

    def __init__(
        self, name: str, document: ColumnElement[Any], spec: Sequence[tuple[str, str, str]]
    ):
        super().__init__(name, *(column(key) for key, _, _ in spec))
        self.document = document
        self.spec = ", ".join(
            f"{key} {kind} {'FOR ORDINALITY' if path == '' else f'PATH {path!r}'}"
            for key, kind, path in spec
        )


@compiles(JsonRows)
def _json_rows(element: JsonRows, compiler: Any, asfrom: bool = False, **kw: Any) -> str:
    name = compiler.preparer.quote(element.name)
    if not asfrom:
        return str(name)
    document = compiler.process(element.document, **kw)
    return f"JSON_TABLE({document}, '$[*]' COLUMNS ({element.spec})) AS {name}"


@compiles(FunctionFilter, "mysql")
@compiles(FunctionFilter, "mariadb")
def _aggregate_filter(element: FunctionFilter[Any], compiler: Any, **kw: Any) -> str:
    """``agg(x) FILTER (WHERE c)`` (the stats statement's) as ``agg(CASE WHEN c THEN x
    END)``: MariaDB has no FILTER clause. ``count(*)`` counts ``CASE WHEN c THEN 1 END``."""
    function = element.func
    arguments = [
        literal_column("1") if str(argument) == "*" else argument for argument in function.clauses
    ]
    criterion = element.criterion
    assert criterion is not None
    kept = [case((criterion, argument)) for argument in arguments]
    return str(compiler.process(getattr(func, function.name)(*kept), **kw))


def _db_now() -> ColumnElement[Any]:
    """The statement's start, UTC, to the microsecond."""
    return func.utc_timestamp(literal_column("6"), type_=_UTC)


def _after_seconds(seconds: ColumnElement[Any], start: Any = None) -> ColumnElement[Any]:
    """``start`` (default: now) plus ``seconds``, to the microsecond (NULL when
    ``seconds`` is NULL)."""
    return func.timestampadd(
        literal_column("MICROSECOND"),
        func.round(seconds * literal_column("1000000")),
        _db_now() if start is None else start,
        type_=_UTC,
    )


def _state(state: JobState) -> ColumnElement[str]:
    return literal_column(f"'{state.value}'", Text())


def _claimable(table: FromClause) -> ColumnElement[bool]:
    return table.c.state.in_([_state(JobState(state)) for state in CLAIMABLE_STATES])


def _finished(table: FromClause) -> ColumnElement[bool]:
    return table.c.state.in_([_state(JobState(state)) for state in FINISHED_STATES])


def _not_paused(table: Table) -> ColumnElement[bool]:
    """``p_topic`` is not paused: one primary-key probe of ``<table>_paused``."""
    paused = paused_topics_table(table)
    return ~exists().where(paused.c.topic == bindparam("p_topic", type_=_KEY))


def _unchanged_since_claim(
    table: Table, attempts: ColumnElement[Any], start_after: ColumnElement[Any]
) -> ColumnElement[bool]:
    """The job is still exactly as the claim that returned it left it (see the
    PostgreSQL driver: the guard of every worker outcome write)."""
    t = table.c
    return and_(
        t.state == _state(JobState.ACTIVE),
        t.attempts == attempts,
        t.start_after.is_not_distinct_from(start_after),
    )


def _claimed(table: Table) -> dict[str, ColumnElement[Any]]:
    """What a claim sets on each job it takes (see the PostgreSQL driver)."""
    t = table.c
    return {
        "state": _state(JobState.ACTIVE),
        "started_at": _db_now(),
        "attempts": t.attempts + 1,
        "start_after": _after_seconds(t.retry_after_seconds),
    }


# -- results of scripts -----------------------------------------------------------------


class _Rows(IteratorResult[Any]):
    """A result made of rows a script collected (readers use ``mappings``,
    ``scalars``, ``scalar`` and ``rowcount``)."""

    def __init__(self, keys: Sequence[str], rows: Sequence[Sequence[Any]], rowcount: int = -1):
        super().__init__(SimpleResultMetaData(list(keys)), iter([tuple(row) for row in rows]))
        self.rowcount = len(rows) if rowcount < 0 else rowcount


_IDS = bindparam("p_ids", type_=_UUID, expanding=True)


def _update_returning(
    table: Table,
    where: Callable[[], Sequence[ColumnElement[bool]]],
    values: Mapping[str, Any],
    returning: Sequence[ColumnElement[Any]],
    *,
    lock: Callable[[Select[Any]], Select[Any]] = lambda picked: picked.with_for_update(),
    source: FromClause | None = None,
    prepare: Callable[[Mapping[str, Any]], dict[str, Any]] = dict,
) -> Script:
    """``UPDATE <table> SET <values> WHERE <where> RETURNING <returning>`` as three
    statements in the caller's transaction: the ids matching ``where`` locked
    (``lock``: ``FOR UPDATE`` by default, which waits for a row another transaction
    holds, then re-reads it), the UPDATE of exactly those ids (``where`` again:
    ``source``, a JSON_TABLE of per-row values, is joined there), and the returned
    columns read back (the rows are ours until the transaction ends). ``prepare``
    turns the operation's parameters into the statements'."""
    t = table.c
    picked = select(t.id).where(*where())
    if source is not None:
        picked = picked.select_from(table).join(source, true())
    locked = lock(picked)
    change = update(table).where(t.id.in_(_IDS), *where()).values(**values)
    read_back = select(*returning).where(t.id.in_(_IDS))

    def run(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        prepared = prepare(params)
        ids = list((yield locked, prepared).scalars().all())
        if ids:
            yield change, {**prepared, "p_ids": ids}
        return (yield read_back, {"p_ids": ids})

    return Script(run)


# -- parameters decoded for the JSON_TABLE documents -------------------------------------


def _held_spec(with_result: bool = False) -> list[tuple[str, str, str]]:
    spec = [
        ("id", "VARCHAR(36)", "$.id"),
        ("attempts", "INT", "$.attempts"),
        ("start_after", "VARCHAR(40)", "$.start_after"),
    ]
    if with_result:
        spec.append(("result", "JSON", "$.result"))
    return spec


def _iso_utc(text: ColumnElement[Any]) -> ColumnElement[Any]:
    """An ISO 8601 text with its UTC offset (``…+02:00``, as Python's isoformat
    writes an aware datetime) as a UTC DATETIME(6)."""
    local = _AsDateTime(func.left(text, func.length(text) - 6))
    return func.convert_tz(local, func.right(text, 6), literal("+00:00"), type_=_UTC)


class _AsDateTime(FunctionElement[Any]):
    """``CAST(<text> AS DATETIME(6))`` (an ISO 8601 text without offset)."""

    inherit_cache = True
    type = _UTC


@compiles(_AsDateTime)
def _as_datetime(element: _AsDateTime, compiler: Any, **kw: Any) -> str:
    (argument,) = element.clauses
    return f"CAST({compiler.process(argument, **kw)} AS DATETIME(6))"


def build_statements(table: Table) -> Statements:
    """Every statement of ``table`` on MariaDB."""
    return Statements(
        table=table,
        **_job_statements(table),
        **_worker_statements(table),
        **_lease_statements(table),
        **_control_statements(table),
        **_maintenance_statements(table),
    )


def _job_statements(table: Table) -> dict[str, Any]:
    """The enqueues and the writes of one job; those given a job's JSON check its
    depth first (:data:`MAX_JSON_DEPTH`)."""
    return {
        name: _depth_checked(statement)
        if name.startswith("insert_") or name == "set_attributes"
        else statement
        for name, statement in _job_writes(table).items()
    }


def _job_writes(table: Table) -> dict[str, Any]:
    t = table.c
    run_after = func.coalesce(
        bindparam("p_run_after_date", type_=_UTC),
        _after_seconds(bindparam("p_run_after_seconds", type_=Float())),
    )
    insert_one = insert(table).values(
        id=bindparam("p_id", type_=_UUID),
        topic=bindparam("p_topic", type_=_KEY),
        data=bindparam("p_data", type_=Text()),
        attributes=bindparam("p_attributes", type_=Text()),
        start_after=run_after,
        retry_after_seconds=bindparam("p_retry_after_seconds", type_=Integer()),
        priority=bindparam("p_priority", type_=Integer()),
    )
    # Bulk enqueue: one INSERT … SELECT FROM JSON_TABLE(document), the document as
    # the PostgreSQL driver describes it (a row per job).
    jobs = JsonRows(
        "job",
        bindparam("p_jobs", type_=Text()),
        [
            ("job_id", "VARCHAR(36)", "$[0]"),
            ("job_data", "JSON", "$[1]"),
            ("job_attributes", "JSON", "$[2]"),
            ("job_run_after_date", "VARCHAR(40)", "$[3]"),
            ("job_run_after_seconds", "DOUBLE", "$[4]"),
            ("job_retry_after_seconds", "INT", "$[5]"),
            ("job_priority", "INT", "$[6]"),
            ("job_unique_key", "VARCHAR(1024)", "$[7]"),
            ("job_unique_states", "VARCHAR(200)", "$[8]"),
        ],
    )
    j = jobs.c
    # The document's ids may have dashes; the table keeps 32 hex digits.
    job_id = func.replace(j.job_id, "-", "")
    columns = [
        "id",
        "topic",
        "data",
        "attributes",
        "start_after",
        "retry_after_seconds",
        "priority",
    ]
    insert_many_uniform = insert(table).from_select(
        columns,
        select(
            job_id,
            bindparam("p_topic", type_=_KEY),
            j.job_data,
            bindparam("p_attributes", type_=Text()),
            run_after,
            bindparam("p_retry_after_seconds", type_=Integer()),
            bindparam("p_priority", type_=Integer()),
        ).select_from(jobs),
    )
    each_row = [
        job_id,
        bindparam("p_topic", type_=_KEY),
        j.job_data,
        j.job_attributes,
        func.coalesce(_iso_utc(j.job_run_after_date), _after_seconds(j.job_run_after_seconds)),
        j.job_retry_after_seconds,
        j.job_priority,
    ]
    insert_many = insert(table).from_select(columns, select(*each_row).select_from(jobs))
    # The unique batches whose jobs share their settings: rows of [id, data, key,
    # priority] (as the PostgreSQL driver describes them).
    shared = JsonRows(
        "job",
        bindparam("p_jobs", type_=Text()),
        [
            ("job_id", "VARCHAR(36)", "$[0]"),
            ("job_data", "JSON", "$[1]"),
            ("job_unique_key", "VARCHAR(1024)", "$[2]"),
            ("job_priority", "INT", "$[3]"),
        ],
    )

    by_id = t.id == bindparam("p_job_id", type_=_UUID)

    def move_to(state: JobState) -> Update:
        finished_at = _db_now() if state in (JobState.COMPLETED, JobState.FAILED) else None
        return update(table).where(by_id).values(state=_state(state), finished_at=finished_at)

    retry = bindparam("p_retry_after_seconds", type_=Integer())
    return {
        "insert_one": insert_one,
        "insert_one_notify": insert_one,
        "insert_many": insert_many,
        "insert_many_notify": insert_many,
        "insert_many_uniform": insert_many_uniform,
        "insert_many_uniform_notify": insert_many_uniform,
        **_unique_statements(
            table,
            columns,
            jobs,
            [*each_row, j.job_unique_key, _states_json(j.job_unique_states)],
            "",
        ),
        **_unique_statements(
            table, columns, shared, _shared_unique_row_values(shared, run_after), "_shared"
        ),
        "unique_key_holders": _unique_key_holders(table),
        "claim": _claim(table),
        "move_to_processing": move_to(JobState.PROCESSING),
        "move_to_completed": move_to(JobState.COMPLETED),
        "move_to_failed": move_to(JobState.FAILED),
        "delete_by_id": delete(table).where(by_id),
        "set_attributes": _merging(table, [by_id], {}, returning=[t.id]),
        # A leased job's lease is re-measured from its claim with the new timeout.
        "set_retry_after_seconds": update(table)
        .where(by_id)
        .values(
            retry_after_seconds=retry,
            start_after=case(
                (t.state == _state(JobState.ACTIVE), _after_seconds(retry, t.started_at)),
                else_=t.start_after,
            ),
        ),
        "set_start_after": update(table)
        .where(by_id)
        .values(start_after=bindparam("p_start_after", type_=_UTC)),
        "get_by_id": select(*table.c).where(by_id),
    }


def _claim(table: Table) -> Script:
    """The claim: the due jobs of ``p_topic`` picked in claim order (higher priority
    first, FIFO within a priority) and locked ``FOR UPDATE SKIP LOCKED``: rows another
    transaction holds (another claim's, not yet committed) are skipped, not waited
    for, so claimers never queue behind each other. Then the picked rows are read
    again by primary key, still locked, and only those that are claimable and due
    are taken: the picking read walks the claim index, and a row another claim took
    and committed meanwhile may be reached through its old index entry (its old
    start_after), locked and returned (seen: one job in a few thousand claimed twice
    by four workers). Read by primary key, the row's latest version is what the
    WHERE clause sees. Then the UPDATE of those ids, then the rows read back with
    their ``due_at`` (their start_after before the claim)."""
    t = table.c
    due = [_claimable(table), t.start_after <= _db_now()]
    picked = (
        select(t.id)
        .where(
            column(CLAIM_TOPIC, _KEY) == bindparam("p_topic", type_=_KEY),
            *due,
            _not_paused(table),
        )
        .order_by(t.priority.desc(), t.start_after, t.id)
        .limit(bindparam("p_max_jobs", type_=Integer(), literal_execute=True))
        .with_for_update(skip_locked=True)
    )
    # Ours already (locked above): FOR UPDATE waits for nobody, and reads the latest.
    still_due = select(t.id, t.start_after).where(t.id.in_(_IDS), *due).with_for_update()
    take = update(table).where(t.id.in_(_IDS)).values(**_claimed(table))
    read_back = select(*table.c).where(t.id.in_(_IDS))
    keys = [*(c.key for c in table.c), "due_at"]

    def run(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        ids = list((yield picked, params).scalars().all())
        if not ids:
            return _Rows(keys, [])
        due_at = {row.id: row.start_after for row in (yield still_due, {"p_ids": ids})}
        if not due_at:
            return _Rows(keys, [])
        yield take, {"p_ids": list(due_at)}
        rows = (yield read_back, {"p_ids": list(due_at)}).mappings().all()
        return _Rows(keys, [[*row.values(), due_at[row["id"]]] for row in rows])

    return Script(run)


def _merged(old: Any, new_text: str) -> str:
    """The attributes ``old`` with the JSON object ``new_text`` merged in at the top
    level (PostgreSQL's ``||``)."""
    merged = dict(old or {})
    merged.update(json.loads(new_text))
    return json.dumps(merged)


def _merging(
    table: Table,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    returning: Sequence[ColumnElement[Any]],
) -> Script:
    """UPDATE one row matching ``where`` with ``values`` and its attributes merged
    with ``p_attributes`` (see the module docstring): the row is locked ``FOR
    UPDATE`` and read, merged here, written by id. Returns ``returning`` of the row
    written (none: it did not match)."""
    t = table.c
    locked = select(t.id, t.attributes).where(*where).with_for_update()
    merged = bindparam("p_merged", type_=Text())
    change = (
        update(table)
        .where(t.id == bindparam("p_merged_id", type_=_UUID))
        .values(attributes=merged, **values)
    )
    read_back = select(*returning).where(t.id.in_(_IDS))

    def run(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        row = (yield locked, params).one_or_none()
        ids = []
        if row is not None:
            ids.append(row.id)
            written = {**params, "p_merged_id": row.id}
            written["p_merged"] = _merged(row.attributes, params["p_attributes"])
            yield change, written
        return (yield read_back, {"p_ids": ids})

    return Script(run)


def _worker_statements(table: Table) -> dict[str, Any]:
    """The worker's guarded outcome writes, the redo of a rolled-back claim, and
    its idle-time look-ahead."""
    t = table.c
    by_id = t.id == bindparam("p_job_id", type_=_UUID)
    one_unchanged = [
        by_id,
        _unchanged_since_claim(
            table,
            bindparam("p_attempts", type_=Integer()),
            bindparam("p_start_after", type_=_UTC),
        ),
    ]
    claimed = JsonRows("claimed", bindparam("p_claimed", type_=Text()), _held_spec(True))
    c = claimed.c
    completed_where = [
        t.id == c.id,
        _unchanged_since_claim(table, c.attempts, _iso_utc(c.start_after)),
    ]
    complete_unchanged = _update_returning(
        table,
        lambda: completed_where,
        {
            "state": _state(JobState.COMPLETED),
            "finished_at": _db_now(),
            "result": func.nullif(c.result, literal_column("'null'")),
        },
        [t.id],
        source=claimed,
    )
    # A claim whose transaction rolled back, done again on one job if the row is
    # still exactly as it was before that claim. SKIP LOCKED: a row another
    # transaction holds (another worker's claim) is no longer as it was; it is
    # skipped rather than waited for. The row is locked until the recording
    # transaction ends, so the verdict written next meets the row returned.
    reclaim_rolled_back = _update_returning(
        table,
        lambda: [
            by_id,
            _claimable(table),
            t.attempts == bindparam("p_attempts", type_=Integer()),
            t.start_after == bindparam("p_start_after", type_=_UTC),
        ],
        _claimed(table),
        list(table.c),
        lock=lambda picked: picked.with_for_update(skip_locked=True),
    )
    soonest = (
        select(func.min(t.start_after))
        .where(column(CLAIM_TOPIC, _KEY) == bindparam("p_topic", type_=_KEY))
        .scalar_subquery()
    )
    seconds_until_due = select(
        case(
            (
                _not_paused(table),
                func.timestampdiff(literal_column("MICROSECOND"), _db_now(), soonest)
                / literal(1_000_000.0, Float()),
            ),
            else_=null(),
        )
    )
    return {
        "complete_unchanged": complete_unchanged,
        "retry_unchanged": _merging(
            table,
            one_unchanged,
            {
                "start_after": func.coalesce(
                    _after_seconds(bindparam("p_delay", type_=Float())), t.start_after
                )
            },
            [t.id],
        ),
        "fail_unchanged": _merging(
            table,
            one_unchanged,
            {"state": _state(JobState.FAILED), "finished_at": _db_now()},
            [t.id],
        ),
        "cancel_unchanged": _update_returning(
            table,
            lambda: one_unchanged,
            {"state": _state(JobState.CANCELLED), "finished_at": _db_now()},
            [t.id],
        ),
        "reclaim_rolled_back": reclaim_rolled_back,
        "seconds_until_due": seconds_until_due,
        "snooze_unchanged": update(table)
        .where(*one_unchanged)
        .values(
            start_after=_after_seconds(bindparam("p_delay", type_=Float())), attempts=t.attempts - 1
        ),
        "clock": select(_db_now()),
    }


def _lease_statements(table: Table) -> dict[str, Any]:
    """Lease renewal, release of unstarted jobs, and reading back the jobs a guarded
    write did not match (as in the PostgreSQL driver), the held jobs as ``p_held``."""
    t = table.c

    def held_update(values: Mapping[str, Any], returning: Sequence[ColumnElement[Any]]) -> Script:
        held = JsonRows("held", bindparam("p_held", type_=Text()), _held_spec())
        h = held.c
        where = [t.id == h.id, _unchanged_since_claim(table, h.attempts, _iso_utc(h.start_after))]
        return _update_returning(table, lambda: where, values, returning, source=held)

    return {
        "renew_leases": held_update(
            {"start_after": _after_seconds(t.retry_after_seconds)}, [t.id, t.start_after]
        ),
        "release_unstarted": held_update(
            {
                "start_after": _db_now(),
                "attempts": t.attempts - 1,
                "state": case(
                    (t.attempts == 1, _state(JobState.CREATED)), else_=_state(JobState.ACTIVE)
                ),
            },
            [t.id],
        ),
        "lease_states": select(t.id, t.state, t.attempts, t.start_after).where(
            t.id.in_(bindparam("p_ids", type_=_UUID, expanding=True))
        ),
    }


def _shared_unique_row_values(
    jobs: JsonRows, run_after: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """A unique job's values from a short row, ``[<id>, <data>, <unique_key>,
    <priority>]``, the settings the batch shares sent once as scalars (as in the
    PostgreSQL driver)."""
    j = jobs.c
    return [
        func.replace(j.job_id, "-", ""),
        bindparam("p_topic", type_=_KEY),
        j.job_data,
        bindparam("p_attributes", type_=Text()),
        run_after,
        bindparam("p_retry_after_seconds", type_=Integer()),
        j.job_priority,
        j.job_unique_key,
        _states_json(bindparam("p_unique_states", type_=Text())),
    ]


def _states_json(states: ColumnElement[Any]) -> ColumnElement[Any]:
    """A PostgreSQL array literal of states, ``{a,b}``, as the JSON array
    ``["a","b"]`` (state names need no JSON escaping); NULL stays NULL."""
    return case(
        (states.is_(None), null()),
        else_=func.concat(
            literal('["'),
            func.replace(func.substr(states, 2, func.length(states) - 2), ",", '","'),
            literal('"]'),
        ),
    )


def _unique_statements(
    table: Table,
    columns: list[str],
    jobs: JsonRows,
    values: list[ColumnElement[Any]],
    layout: str,
) -> dict[str, Any]:
    """Enqueues of unique jobs, the values of each read from its row of ``jobs`` by
    ``values`` (the row ``layout``: ``""`` every setting in the row, ``"_shared"``
    the settings the batch shares as scalars), the unique key and states last. The
    unique index is over :data:`UNIQUE_HOLDER`, so a job conflicts only with the job
    that holds its key (and only while it does).

    * ``insert_unique``: a held key makes the INSERT fail (MariaDB error 1062 naming
      ``uq_<table>_unique_key``: :class:`~programma_sa.DuplicateJob`), the whole
      statement with it;
    * ``insert_unique_keep``: ``INSERT IGNORE``: a job whose key is held is not
      inserted; the row count says how many were. (IGNORE also turns other errors
      into warnings; every value was checked before it reached the statement.)
    * ``insert_unique_replace``: ``ON DUPLICATE KEY UPDATE``: the holder takes the
      new values if it is still CREATED; then the jobs of those keys still CREATED
      are read back (the inserted and the replaced ones).
    """
    t = table.c
    targets = [*columns, "unique_key", "unique_states"]
    source = select(*values).select_from(jobs)
    plain = mysql_insert(table).from_select(targets, source)
    keep = mysql_insert(table).from_select(targets, source).prefix_with("IGNORE")
    replaceable = t.state == _state(JobState.CREATED)
    upsert = plain.on_duplicate_key_update(
        {
            name: case((replaceable, plain.inserted[name]), else_=t[name])
            for name in ("data", "attributes", "start_after", "retry_after_seconds", "priority")
        }
    )
    keys = select(jobs.c.job_unique_key).select_from(jobs)
    replaced = select(t.unique_key, t.id).where(column(UNIQUE_HOLDER).in_(keys), replaceable)

    def replace(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        yield upsert, params
        return (yield replaced, params)

    return {
        f"insert_unique{layout}": plain,
        f"insert_unique{layout}_notify": plain,
        f"insert_unique_keep{layout}": keep,
        f"insert_unique_keep{layout}_notify": keep,
        f"insert_unique_replace{layout}": Script(replace),
        f"insert_unique_replace{layout}_notify": Script(replace),
    }


def _unique_key_holders(table: Table) -> Select[tuple[object, ...]]:
    """The job that holds each of some keys, through the unique index."""
    t = table.c
    return select(t.unique_key, t.id).where(
        column(UNIQUE_HOLDER).in_(bindparam("p_keys", type_=_KEY, expanding=True))
    )


# -- control of jobs in flight: cancel, re-run, list, pause -----------------------------


#: The criteria's terms on MariaDB (programma_sa._drivers.shapes). JSON_CONTAINS is
#: containment like PostgreSQL's ``@>`` (nested objects and arrays contained).
_SHAPE_TERMS = ShapeTerms(
    state=lambda state: _state(state),
    time=_UTC,
    error_type=lambda table: func.json_value(table.c.attributes, "$.last_error.type"),
    contains=lambda table, wanted: func.json_contains(table.c.attributes, wanted) == 1,
)


def _list_jobs(table: Table) -> Any:
    """The listing family: jobs newest first (ids are UUIDv7: creation order),
    keyset-paginated by id, ``p_limit`` rows; one statement per shape."""
    t = table.c

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape)
        filters = shape_filters(table, shape, _SHAPE_TERMS)
        if shape.cursor:
            filters.append(t.id < bindparam("p_cursor", type_=_UUID))
        return (
            select(*table.c)
            .where(*filters)
            .order_by(t.id.desc())
            .limit(bindparam("p_limit", type_=Integer()))
        )

    return build


def _count_jobs(table: Table) -> Any:
    """The counting family: how many jobs match a filter."""

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape)
        return (
            select(func.count())
            .select_from(table)
            .where(*shape_filters(table, shape, _SHAPE_TERMS))
        )

    return build


def _rerun_values() -> dict[str, Any]:
    return rerun_values(_state(JobState.CREATED), _db_now())


def _rerun_jobs(table: Table) -> Any:
    """The re-run family: up to ``p_limit`` FAILED (or CANCELLED) jobs matching a
    filter, oldest finished first, each made a new job; returns their ids. ``FOR
    UPDATE SKIP LOCKED``: a finished row someone else holds is left out, not waited
    for."""
    t = table.c

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Script:
        assert isinstance(shape, JobsShape) and shape.states is not None
        return _update_returning(
            table,
            lambda: shape_filters(table, shape, _SHAPE_TERMS),
            _rerun_values(),
            [t.id],
            lock=lambda picked: (
                picked.order_by(t.finished_at)
                .limit(bindparam("p_limit", type_=Integer(), literal_execute=True))
                .with_for_update(skip_locked=True)
            ),
        )

    return build


def _control_statements(table: Table) -> dict[str, Any]:
    """Cancel, re-run, list, pause and resume.

    Cancel and re-run one job lock it ``FOR UPDATE`` — waiting for a transaction
    that holds it (a claim committing, or a transaction-mode pass running its
    handler: then until that pass ends) — and read its latest committed state, then
    change it. Nothing is announced (no NOTIFY): a worker holding a cancelled job in
    lease mode learns of it at its next lease renewal.
    """
    t = table.c
    by_id = t.id == bindparam("p_job_id", type_=_UUID)
    current = select(t.state).where(by_id).with_for_update()
    live = [state.value for state in JobState if state.value not in TERMINAL_STATES]
    cancel = (
        update(table).where(by_id).values(state=_state(JobState.CANCELLED), finished_at=_db_now())
    )
    rerun = update(table).where(by_id).values(**_rerun_values())

    def cancel_job(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        state = (yield current, params).scalar()
        keys = ["state", "cancelled", "worker_notified", "announced"]
        if state is None:
            return _Rows(keys, [])
        if state in live:
            yield cancel, params
        return _Rows(keys, [[state, state in live, None, None]])

    def rerun_job(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        state = (yield current, params).scalar()
        keys = ["state", "id", "announced"]
        if state is None:
            return _Rows(keys, [])
        rerunnable = state in RERUNNABLE_STATES
        if rerunnable:
            yield rerun, params
        return _Rows(keys, [[state, params["p_job_id"] if rerunnable else None, None]])

    paused = paused_topics_table(table)
    topic = bindparam("p_topic", type_=_KEY)
    pause = mysql_insert(paused).values(topic=topic).prefix_with("IGNORE")
    resume = delete(paused).where(paused.c.topic == topic)

    def changed_topic(statement: Executable) -> Script:
        """``statement`` returning the topic when it changed a row (INSERT IGNORE's
        and DELETE's row counts: no RETURNING on MySQL)."""

        def run(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
            count = (yield statement, params).rowcount  # type: ignore[attr-defined]
            return _Rows(["topic"], [[params["p_topic"]]] if count else [])

        return Script(run)

    return {
        "cancel_job": Script(cancel_job),
        "rerun_job": Script(rerun_job),
        "rerun_jobs": _rerun_jobs(table),
        "list_jobs": _list_jobs(table),
        "count_jobs": _count_jobs(table),
        "pause_topic": changed_topic(pause),
        "resume_topic": changed_topic(resume),
        "paused_topics": select(paused.c.topic, paused.c.paused_at).order_by(paused.c.topic),
    }


# -- maintenance: statistics and retention --------------------------------------------


_STATS_CLOCK = StatsClock(
    now=lambda: _db_now(),
    seconds_ago=lambda seconds: _after_seconds(-seconds),
    no_time=lambda: literal(None, _UTC),
    as_time=lambda time: time,
    state=lambda state: _state(state),
    claimable=lambda table: _claimable(table),
    finished=lambda table: _finished(table),
)


def _throughput(table: Table) -> Select[tuple[object, ...]]:
    """Finished and failed jobs per bucket of the last ``p_window_seconds`` (rows
    (bucket, finished, failed)), from ``ix_<table>_finished``'s range by finish time."""
    t = table.c
    now = _db_now()
    window = bindparam("p_window_seconds", type_=Float())
    buckets = bindparam("p_buckets", type_=Integer())
    age = func.timestampdiff(literal_column("MICROSECOND"), t.finished_at, now) / literal(
        1_000_000.0, Float()
    )
    # An integer (FLOOR of a DOUBLE is a DOUBLE on MariaDB): the reader indexes by it.
    bucket = cast(
        func.greatest(0, func.least(buckets - 1, func.floor(age * buckets / window))), Integer()
    )
    failed = case((t.state == _state(JobState.FAILED), 1), else_=0)
    return (
        select(
            bucket.label("bucket"),
            func.count().label("finished"),
            func.coalesce(func.sum(failed), 0).label("failed"),
        )
        .where(_finished(table), t.finished_at >= _after_seconds(-window))
        .group_by(literal_column("bucket"))
        .order_by(literal_column("bucket"))
    )


def _prune(table: Table, state: JobState) -> Script:
    """Delete one bounded batch of ``state`` jobs of one topic, finished before the
    TTL, oldest first (``ix_<table>_finished`` / ``_failed`` / ``_cancelled``). The
    batch is picked ``FOR UPDATE SKIP LOCKED`` (a row another transaction holds is
    left for a later batch; two pruners take disjoint batches), then deleted by id
    (MariaDB deletes from no table its own subquery reads), ``LIMIT`` the number of
    ids.

    The LIMIT prevents a deadlock between concurrent pruners (error 1213): without
    it the DELETE's range scan of the primary key, having deleted its last id, reads
    the next record too — and waits for its lock when another pruner's batch holds
    it (a DELETE has no semi-consistent read: it waits even under READ COMMITTED for
    a row that will not match). Each pruner then waits for the other's batch: SHOW
    ENGINE INNODB STATUS showed both DELETEs waiting on a primary-key record the
    other held, one of them "fetching rows" with its whole batch already deleted.
    With LIMIT the scan stops at its last id: every id was locked by the pick, so
    each is there and this transaction's to delete."""
    t = table.c
    cutoff = _after_seconds(-bindparam("p_ttl_seconds", type_=Float()))
    expired = (
        select(t.id)
        .where(
            t.topic == bindparam("p_topic", type_=_KEY),
            t.state == _state(state),
            t.finished_at < cutoff,
        )
        .order_by(t.finished_at)
        .limit(bindparam("p_limit", type_=Integer(), literal_execute=True))
        .with_for_update(skip_locked=True)
    )
    remove: Delete = delete(table).where(t.id.in_(_IDS))

    def run(params: Mapping[str, Any]) -> Generator[Step, Result[Any], Result[Any]]:
        ids = list((yield expired, params).scalars().all())
        # LIMIT takes an integer, not a parameter, on SQLAlchemy 2.0 (mysql_limit for
        # a mysql:// engine, mariadb_limit for a mariadb:// one).
        limited = remove.with_dialect_options(mysql_limit=len(ids), mariadb_limit=len(ids))
        return (yield limited, {"p_ids": ids})

    return Script(run)


def _maintenance_statements(table: Table) -> dict[str, Any]:
    t = table.c
    return {
        "stats_all": stats_statement(table, _STATS_CLOCK, one_topic=False),
        "stats_topic": stats_statement(table, _STATS_CLOCK, one_topic=True),
        "throughput": _throughput(table),
        "finished_topics": select(t.topic).where(_finished(table)).distinct().order_by(t.topic),
        "prune_completed": _prune(table, JobState.COMPLETED),
        "prune_failed": _prune(table, JobState.FAILED),
        "cancelled_topics": select(t.topic)
        .where(t.state == _state(JobState.CANCELLED))
        .distinct()
        .order_by(t.topic),
        "prune_cancelled": _prune(table, JobState.CANCELLED),
        # No transaction-scoped advisory lock (GET_LOCK belongs to the connection,
        # which a pool outlives a transaction with): always "taken"; the prune's
        # SKIP LOCKED keeps concurrent batches disjoint (see _prune).
        "try_prune_lock": select(literal(True)),
    }
