"""The mixin: table placement, names, and refusal of names that are not identifiers."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import DeclarativeBase

from programma_sa import ConfigurationError, JobMixin, JobQueue, jobs_table
from programma_sa.migrations import include_object

from ..app import Base, Job


def test_default_table_sits_in_the_applications_metadata() -> None:
    assert Job.__table__.name == "programma_jobs"
    assert Job.__table__.schema is None
    assert "programma_jobs" in Base.metadata.tables
    assert {index.name for index in Job.__table__.indexes} == {
        "ix_programma_jobs_claim",
        "ix_programma_jobs_finished",
        "ix_programma_jobs_processing",
        "ix_programma_jobs_failed",
        "uq_programma_jobs_unique_key",
        "ix_programma_jobs_cancelled",
        "ix_programma_jobs_history",
    }
    # Its companion of paused topics (programma_0005) sits beside it.
    paused = Base.metadata.tables["programma_jobs_paused"]
    assert [column.name for column in paused.primary_key] == ["topic"]
    assert paused.info == {"programma": True}


def test_custom_table_name_and_schema() -> None:
    class OtherBase(DeclarativeBase):
        pass

    class AuditJob(JobMixin, OtherBase):
        __tablename__ = "audit_jobs"
        programma_schema = "queue"

    assert AuditJob.__table__.fullname == "queue.audit_jobs"
    assert "queue.audit_jobs_paused" in OtherBase.metadata.tables
    assert "ix_audit_jobs_claim" in {index.name for index in AuditJob.__table__.indexes}
    assert jobs_table(AuditJob) is AuditJob.__table__


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"__tablename__": "jobs; drop table users"},
            "the jobs table name must be a PostgreSQL identifier",
        ),
        ({"__tablename__": "x" * 64}, "the jobs table name must be a PostgreSQL identifier"),
        (
            {"__tablename__": "x" * 50},
            r"the jobs table name must be at most 49 characters \(its index names",
        ),
        ({"programma_schema": 'a"b'}, "programma_schema must be a PostgreSQL identifier"),
        ({"programma_schema": ""}, "programma_schema must be a PostgreSQL identifier"),
    ],
)
def test_names_that_are_not_identifiers_are_refused(
    attributes: dict[str, str], message: str
) -> None:
    class OtherBase(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match=message):
        type("BadJob", (JobMixin, OtherBase), attributes)


def test_queue_needs_a_jobmixin_model() -> None:
    with pytest.raises(ConfigurationError, match="expected a mapped class using JobMixin"):
        JobQueue(object)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_queue_refuses_a_bad_payload_limit(limit: object) -> None:
    with pytest.raises(ConfigurationError, match="max_payload_bytes must be a positive int"):
        JobQueue(Job, max_payload_bytes=limit)  # type: ignore[arg-type]


def test_include_object_hides_the_jobs_table_from_application_autogenerate() -> None:
    from ..app import Order

    assert include_object(Job.__table__, "programma_jobs", "table", False, None) is False
    claim_index = next(iter(Job.__table__.indexes))
    assert include_object(claim_index, claim_index.name, "index", False, None) is False
    assert include_object(Job.__table__.c.topic, "topic", "column", False, None) is False
    assert include_object(Order.__table__, "orders", "table", False, None) is True


def test_the_longest_table_name_names_every_index_within_63_characters() -> None:
    class OtherBase(DeclarativeBase):
        pass

    model = type("LongJob", (JobMixin, OtherBase), {"__tablename__": "x" * 49})
    names = [index.name for index in model.__table__.indexes]
    names += [constraint.name for constraint in model.__table__.constraints if constraint.name]
    names.append(f"{model.__table__.name}_pkey")  # PostgreSQL's name for the primary key
    # The claim index revision programma_0004 builds before renaming it.
    names.append(f"ix_{model.__table__.name}_claim_new")
    # The companion table of paused topics and its primary key (programma_0005).
    names += [f"{model.__table__.name}_paused", f"{model.__table__.name}_paused_pkey"]
    assert len(names) == 12 and all(len(str(name)) <= 63 for name in names), names
