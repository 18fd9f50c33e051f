"""Column types and server defaults that are PostgreSQL's own on PostgreSQL and portable elsewhere.

The jobs table is PostgreSQL's: ``UUID``, ``JSONB``, ``timestamptz``, partial indexes.
An application's model sits in its own ``MetaData``, though, and that metadata is
often created on SQLite by the application's test suite (``create_all``). Each
element here renders exactly as before on PostgreSQL — the DDL there is
byte-identical, so the shipped migrations and the model still agree — and as
SQLite's nearest equivalent elsewhere:

========================  ==============================  ==================================
element                   PostgreSQL                      SQLite (and other databases)
========================  ==============================  ==================================
:data:`UUID_TYPE`         ``UUID``                        ``CHAR(32)`` (hex, SQLAlchemy's ``Uuid``)
:data:`JSON_TYPE`         ``JSONB``                       ``JSON``
:class:`random_uuid`      ``gen_random_uuid()``           a random version-4 UUID in hex
:class:`empty_json_object` ``'{}'::jsonb``                ``'{}'``
``func.now()``            ``now()``                       ``CURRENT_TIMESTAMP``
========================  ==============================  ==================================

Running the *queue* on another database is another matter: it is refused at the
first call, naming the dialect (:mod:`programma_sa._drivers`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Text, Uuid
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["JSON_TYPE", "TEXT_ARRAY_TYPE", "UUID_TYPE", "empty_json_object", "random_uuid"]

#: A UUID column: ``UUID`` on PostgreSQL, SQLAlchemy's portable ``Uuid`` elsewhere.
UUID_TYPE = Uuid(as_uuid=True).with_variant(UUID(as_uuid=True), "postgresql")
#: A JSON column: ``JSONB`` on PostgreSQL, ``JSON`` elsewhere. A Python ``None`` is
#: stored as JSON ``null``, not SQL NULL (``none_as_null=False``, as for ``data``).
JSON_TYPE = JSON(none_as_null=False).with_variant(JSONB(none_as_null=False), "postgresql")
#: A list of strings: ``text[]`` on PostgreSQL, a JSON array elsewhere.
TEXT_ARRAY_TYPE = JSON().with_variant(ARRAY(Text), "postgresql")


class random_uuid(FunctionElement[Any]):  # named like the SQL functions in func
    """A random UUID, for a server default: ``gen_random_uuid()`` on PostgreSQL."""

    inherit_cache = True


class empty_json_object(ColumnElement[Any]):
    """The JSON object ``{}``, for a server default: ``'{}'::jsonb`` on PostgreSQL."""

    inherit_cache = True


@compiles(random_uuid)
def _random_uuid_postgresql(element: random_uuid, compiler: Any, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(random_uuid, "sqlite")
def _random_uuid_sqlite(element: random_uuid, compiler: Any, **kw: Any) -> str:
    # 32 hex digits without dashes, as SQLAlchemy's Uuid stores a UUID on SQLite (so
    # WHERE id = ? matches): random bits with the version (4) and the variant (8, 9,
    # a or b) where RFC 9562 puts them.
    return (
        "lower(hex(randomblob(6)) || '4' || substr(hex(randomblob(2)), 2) || "
        "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || "
        "hex(randomblob(6)))"
    )


@compiles(empty_json_object)
def _empty_json_object(element: empty_json_object, compiler: Any, **kw: Any) -> str:
    return "'{}'"


@compiles(empty_json_object, "postgresql")
def _empty_json_object_postgresql(element: empty_json_object, compiler: Any, **kw: Any) -> str:
    return "'{}'::jsonb"
