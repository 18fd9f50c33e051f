"""Hostile input: stored faithfully or refused with a clear error, never SQL, never half-written.

* Topics, attribute keys and values with quotes, ``;``, ``--``, backslashes,
  driver placeholders, non-ASCII, emoji and long strings round-trip exactly
  (through the row, the claim and the NOTIFY payload) and leave other tables alone.
* What PostgreSQL cannot store (NUL characters, lone surrogates) or would refuse
  inside the caller's transaction (an over-long topic, an interval overflow) is
  refused up front, with an exact message, and the caller's transaction stays usable.
* Identifiers that are not plain identifiers are refused at model definition and
  by the migrations, before any DDL.
* A 10 MB payload is refused under the default 1 MiB limit and stored faithfully
  under a 16 MiB one; a batch that fails — in validation or in the database —
  writes no row at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, inspect, select, text
from sqlalchemy.orm import DeclarativeBase, Session

from programma_sa import (
    ConfigurationError,
    DatabaseError,
    InvalidJobInput,
    JobMixin,
    JobQueue,
    JobSpec,
    PayloadTooLarge,
    jobs_table,
    migrations,
)
from programma_sa.testing import fresh_database

from ..app import Job, Order
from .connections import listening

pytestmark = pytest.mark.reliability

MiB = 1024 * 1024
INJECTION = "x'; DROP TABLE orders; --"

HOSTILE_STRINGS = [
    INJECTION,
    'x"; DROP TABLE programma_jobs; --',
    "'); DELETE FROM orders WHERE ('1'='1",
    "semi;colon",
    "-- a comment",
    "/* block */ comment",
    "back\\slash\\",
    "\\'escaped quote",
    "\\x00 and \\u0000 as text, not NUL",
    "$$dollar$$ $1 $tag$",
    "%s %(name)s %% {0} :name ? @p1",
    "tab\tnew\nline\rcarriage",
    "ünïcödé Ωμέγα кириллица 日本語 עברית العربية",
    "emoji 🚀🔥👩‍👩‍👧‍👦 and a ZWJ",
    "\u200b zero width \u202e right-to-left \u2028 line separator",
    " leading and trailing spaces ",
    "é" * 512,  # 1024 bytes in UTF-8: the longest topic accepted
    "🚀" * 256,  # 1024 bytes too, four per character
]

IDENTIFIER_RULE = "a letter or _, then letters, digits, _ or $, at most 63 characters"


def _escaped(message: str) -> str:
    return "^" + re.escape(message) + "$"


def _hostile_attributes() -> dict[str, Any]:
    """Every hostile string as a key and as a value, plus long and nested ones."""
    attributes: dict[str, Any] = {value: value for value in HOSTILE_STRINGS}
    attributes[""] = "empty key"
    attributes["k" * 10_000] = "v" * 200_000
    attributes["nested"] = {"a": [INJECTION, {"b": ["🚀", None, True, 1.5, -(2**53)]}]}
    return attributes


# -- faithful storage ------------------------------------------------------------------


@pytest.mark.postgresql_only("hostile topics as NOTIFY payloads")
def test_hostile_topics_attributes_and_data_round_trip_and_inject_nothing(
    engine: Engine, database_url: str
) -> None:
    queue = JobQueue(Job, notify=True)
    attributes = _hostile_attributes()
    with listening(database_url, queue.table) as listener:
        with Session(engine) as session, session.begin():
            session.add(Order(id=1, note=INJECTION))
            job_ids = {
                topic: queue.add_job(session, topic, {"topic": topic}, attributes=attributes)
                for topic in HOSTILE_STRINGS
            }
        # Committed: whatever SQL a topic carried would have run by now.
        payloads = [
            notify.payload for notify in listener.notifies(timeout=10, stop_after=len(job_ids))
        ]

    assert sorted(payloads) == sorted(HOSTILE_STRINGS)
    tables = set(inspect(engine).get_table_names())
    assert {"orders", Job.__tablename__} <= tables
    with Session(engine) as session, session.begin():
        order = session.get(Order, 1)
        assert order is not None and order.note == INJECTION
        for topic, job_id in job_ids.items():
            claimed = queue.claim_jobs(session, topic, max_jobs=10)
            assert [job.id for job in claimed] == [job_id]
            (job,) = claimed
            assert job.topic == topic
            assert job.data == {"topic": topic}
            assert job.attributes == attributes


def test_hostile_attribute_merges_round_trip(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "merge", {}, attributes={"keep": 1, INJECTION: "old"})
    update = {key: {"set": key} for key in HOSTILE_STRINGS}
    assert queue.set_attributes(session, job_id, update)
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.attributes == {"keep": 1, **update}


def test_text_that_looks_like_an_escaped_nul_is_stored_as_written(
    queue: JobQueue, session: Session
) -> None:
    # Backslash-u-0000 as six characters (JSON-escaped to \\u0000) is not a NUL.
    data = {"\\u0000": "\\u0000", "deep": "\\\\u0000", "list": ["\\\\\\u0000x"]}
    job_id = queue.add_job(session, "t", data, attributes={"\\u0000": "\\u0000"})
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.data == data
    assert job.attributes == {"\\u0000": "\\u0000"}


def _nested(levels: int) -> Any:
    nested: Any = INJECTION
    for depth in range(levels):
        nested = {f"level-{depth}": [nested]}
    return nested


@pytest.mark.databases(
    "postgresql",
    "sqlite",
    reason="MariaDB stores JSON nested at most 30 levels deep: deeper is refused up front "
    "(tests/integration/test_mariadb.py, docs/mariadb.md)",
)
def test_deeply_nested_and_long_data_round_trips(queue: JobQueue, session: Session) -> None:
    data = {"nested": _nested(200), "long": "ü🚀" * 150_000}
    job_id = queue.add_job(session, "t", data)
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.data == data


# -- refused up front ------------------------------------------------------------------

NUL_MESSAGE = "{} contains a NUL character, which PostgreSQL jsonb cannot store"
SURROGATE_MESSAGE = "{} is not valid Unicode text (it contains a lone surrogate)"

QueueCall = Callable[[JobQueue, Session], object]

REFUSED_ENQUEUES: list[tuple[str, QueueCall, str]] = [
    (
        "NUL in topic",
        lambda q, s: q.add_job(s, "a\x00b", {}),
        "topic must not contain NUL characters",
    ),
    (
        "NUL in data value",
        lambda q, s: q.add_job(s, "t", {"k": "a\x00b"}),
        NUL_MESSAGE.format("data"),
    ),
    (
        "NUL in data key",
        lambda q, s: q.add_job(s, "t", {"a\x00": 1}),
        NUL_MESSAGE.format("data"),
    ),
    (
        "NUL after an escaped backslash",
        lambda q, s: q.add_job(s, "t", "\\\x00"),
        NUL_MESSAGE.format("data"),
    ),
    (
        "NUL in attribute key",
        lambda q, s: q.add_job(s, "t", {}, attributes={"k\x00": 1}),
        NUL_MESSAGE.format("attributes"),
    ),
    (
        "NUL in attribute value",
        lambda q, s: q.add_job(s, "t", {}, attributes={"k": ["\x00"]}),
        NUL_MESSAGE.format("attributes"),
    ),
    (
        "NUL in one spec of a batch",
        lambda q, s: q.add_jobs(s, "t", [JobSpec(data=1), JobSpec(data=2), JobSpec(data="\x00")]),
        "job spec #2: " + NUL_MESSAGE.format("data"),
    ),
    (
        "lone surrogate in topic",
        lambda q, s: q.add_job(s, "bad\ud800", {}),
        SURROGATE_MESSAGE.format("topic"),
    ),
    (
        "lone surrogate in data",
        lambda q, s: q.add_job(s, "t", {"k": "\udfff"}),
        SURROGATE_MESSAGE.format("data"),
    ),
    (
        "lone surrogate in attributes",
        lambda q, s: q.add_job(s, "t", {}, attributes={"\ud83d": 1}),
        SURROGATE_MESSAGE.format("attributes"),
    ),
    (
        "data nested deeper than the JSON encoder goes",
        lambda q, s: q.add_job(s, "t", _nested(5_000)),
        "data is nested too deeply to serialise as JSON",
    ),
    (
        "topic one byte too long",
        lambda q, s: q.add_job(s, "é" * 512 + "x", {}),
        "topic is 1025 bytes in UTF-8; the limit is 1024 bytes",
    ),
    (
        "100,000-character topic",
        lambda q, s: q.add_jobs(s, "x" * 100_000, [JobSpec(data=1)]),
        "topic is 100000 bytes in UTF-8; the limit is 1024 bytes",
    ),
    (
        "delay that overflows PostgreSQL's interval",
        lambda q, s: q.add_job(s, "t", {}, run_after_seconds=1e300),
        "run_after_seconds is too large (at most 2147483647), got 1e+300",
    ),
    (
        "over-long delay in one spec of a batch",
        lambda q, s: q.add_jobs(s, "t", [JobSpec(data=1), JobSpec(data=2, run_after_seconds=1e13)]),
        "job spec #1: run_after_seconds is too large (at most 2147483647), got 10000000000000.0",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"),
    [pytest.param(call, message, id=name) for name, call, message in REFUSED_ENQUEUES],
)
def test_unstorable_enqueue_is_refused_before_anything_is_written(
    queue: JobQueue, session: Session, call: QueueCall, message: str
) -> None:
    session.add(Order(id=7, note="business write before the bad call"))
    session.flush()
    with pytest.raises(InvalidJobInput, match=_escaped(message)):
        call(queue, session)
    # Nothing was sent: the transaction is usable and holds the business row, no job.
    assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 0
    assert session.get(Order, 7) is not None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda q, s, i: q.set_attributes(s, i, {"k": "\x00"}),
            NUL_MESSAGE.format("attributes"),
            id="NUL",
        ),
        pytest.param(
            lambda q, s, i: q.set_attributes(s, i, {"\ud800": 1}),
            SURROGATE_MESSAGE.format("attributes"),
            id="surrogate",
        ),
        pytest.param(
            lambda q, s, i: q.set_attributes(s, i, {"k": "x" * MiB}),
            f"attributes is {MiB + 8} bytes as JSON; the limit is {MiB} bytes",
            id="too large",
        ),
    ],
)
def test_unstorable_attributes_update_is_refused_and_changes_nothing(
    queue: JobQueue, session: Session, call: Callable[..., object], message: str
) -> None:
    job_id = queue.add_job(session, "t", {"v": 1}, attributes={"a": 1})
    before = queue.get_job(session, job_id)
    with pytest.raises(InvalidJobInput, match=_escaped(message)):
        call(queue, session, job_id)
    assert queue.get_job(session, job_id) == before


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("a\x00", "topic must not contain NUL characters"),
        ("t" * 1025, "topic is 1025 bytes in UTF-8; the limit is 1024 bytes"),
    ],
)
def test_claim_refuses_an_unstorable_topic(
    queue: JobQueue, session: Session, topic: str, message: str
) -> None:
    with pytest.raises(InvalidJobInput, match=_escaped(message)):
        queue.claim_jobs(session, topic)


# -- identifiers -----------------------------------------------------------------------

BAD_IDENTIFIERS = [
    "",
    "1jobs",
    "jobs-table",
    "jobs table",
    'jobs"',
    "jobs; DROP TABLE orders; --",
    "jöbs",
    "a" * 64,
    "public.jobs",
]


def _identifier_message(what: str, value: str) -> str:
    return f"{what} must be a PostgreSQL identifier ({IDENTIFIER_RULE}), got {value!r}"


@pytest.mark.parametrize("name", BAD_IDENTIFIERS)
def test_model_refuses_a_table_name_that_is_not_an_identifier(name: str) -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(
        ConfigurationError, match=_escaped(_identifier_message("the jobs table name", name))
    ):

        class BadJob(JobMixin, Base):
            __tablename__ = name


@pytest.mark.parametrize("schema", BAD_IDENTIFIERS)
def test_model_refuses_a_schema_that_is_not_an_identifier(schema: str) -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(
        ConfigurationError, match=_escaped(_identifier_message("programma_schema", schema))
    ):

        class BadJob(JobMixin, Base):
            programma_schema = schema


def test_model_accepts_plain_identifiers() -> None:
    class Base(DeclarativeBase):
        pass

    class OddJob(JobMixin, Base):
        __tablename__ = "_Jobs$2"
        programma_schema = "q" * 63

    assert jobs_table(OddJob).fullname == f"{'q' * 63}._Jobs$2"


@pytest.mark.parametrize("name", [n for n in BAD_IDENTIFIERS if n])  # "" means "default"
def test_migrations_refuse_a_table_name_that_is_not_an_identifier(name: str) -> None:
    config = migrations.standalone_config(table_name=name)
    with pytest.raises(
        ConfigurationError, match=_escaped(_identifier_message("programma_table_name", name))
    ):
        migrations.table_location(config)


@pytest.mark.parametrize("schema", [n for n in BAD_IDENTIFIERS if n])
def test_migrations_refuse_a_bad_schema_before_any_ddl(schema: str, admin_url: str) -> None:
    message = _escaped(_identifier_message("programma_schema", schema))
    with pytest.raises(ConfigurationError, match=message):
        migrations.table_location(migrations.standalone_config(schema=schema))
    with fresh_database(admin_url, prefix="programma_hostile") as url:
        engine = create_engine(url)
        try:
            schemas_before = set(inspect(engine).get_schema_names())
            with pytest.raises(ConfigurationError, match=message):
                migrations.upgrade(url, schema=schema)
            assert set(inspect(engine).get_schema_names()) == schemas_before
            assert inspect(engine).get_table_names() == []  # not even the version table
        finally:
            engine.dispose()


# -- payload size and atomic batches ---------------------------------------------------


def _ten_megabytes() -> dict[str, Any]:
    """A varied 10 MB JSON document: records with hostile and non-ASCII strings."""
    rows = [
        {"i": i, "name": f"row {i} ü🚀 {INJECTION}", "values": [i, i / 7, None, True]}
        for i in range(150_000)
    ]
    return {"rows": rows, "tail": "z" * 10}


def _json_size(value: Any) -> int:
    # The serialisation the queue stores (see programma_sa._validation.json_text).
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


@pytest.fixture(scope="module")
def ten_megabytes() -> dict[str, Any]:
    payload = _ten_megabytes()
    assert 10 * MiB <= _json_size(payload) < 16 * MiB
    return payload


def test_ten_megabyte_payload_is_refused_by_default(
    queue: JobQueue, session: Session, ten_megabytes: dict[str, Any]
) -> None:
    size = _json_size(ten_megabytes)
    with pytest.raises(
        PayloadTooLarge, match=_escaped(f"data is {size} bytes as JSON; the limit is {MiB} bytes")
    ):
        queue.add_job(session, "big", ten_megabytes)
    with pytest.raises(
        PayloadTooLarge,
        match=_escaped(f"attributes is {size} bytes as JSON; the limit is {MiB} bytes"),
    ):
        queue.add_job(session, "big", {}, attributes=ten_megabytes)
    specs = [JobSpec(data=n) for n in range(3)] + [JobSpec(data=ten_megabytes)]
    with pytest.raises(
        PayloadTooLarge,
        match=_escaped(f"job spec #3: data is {size} bytes as JSON; the limit is {MiB} bytes"),
    ):
        queue.add_jobs(session, "big", specs)
    assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_ten_megabyte_payload_is_stored_faithfully_under_a_16_mib_limit(
    session: Session, ten_megabytes: dict[str, Any]
) -> None:
    roomy = JobQueue(Job, max_payload_bytes=16 * MiB)
    job_id = roomy.add_job(session, "big", ten_megabytes, attributes={"blob": "b" * (11 * MiB)})
    (claimed,) = roomy.claim_jobs(session, "big")
    assert claimed.id == job_id
    assert claimed.data == ten_megabytes
    assert claimed.attributes == {"blob": "b" * (11 * MiB)}


@pytest.mark.postgresql_only("a PL/pgSQL trigger refuses the row")
def test_a_batch_the_database_refuses_midway_writes_no_row(
    queue: JobQueue, session: Session
) -> None:
    # A trigger that fails on the fourth row of the batch, after three were inserted
    # by the same statement (the DDL is rolled back with the test's transaction).
    session.execute(
        text(
            "CREATE FUNCTION reliability_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.data ? 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;"
            " RETURN NEW; END $$"
        )
    )
    session.execute(
        text(
            f"CREATE TRIGGER poison BEFORE INSERT ON {Job.__tablename__}"
            " FOR EACH ROW EXECUTE FUNCTION reliability_poison()"
        )
    )
    session.add(Order(id=8, note="before the batch"))
    session.flush()
    specs = [JobSpec(data={"n": n}) for n in range(3)] + [JobSpec(data={"poison": True})]
    with pytest.raises(DatabaseError, match="poisoned row"), session.begin_nested():
        queue.add_jobs(session, "batch", specs)
    assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 0
    assert session.get(Order, 8) is not None
