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
:data:`KEY_TEXT_TYPE`     ``text``                        ``TEXT``
:data:`TIME_TYPE`         ``timestamptz``                 ``DATETIME``
:class:`random_uuid`      ``gen_random_uuid()``           a random version-4 UUID in hex
:class:`empty_json_object` ``'{}'::jsonb``                ``'{}'``
:class:`utc_now`          ``now()``                       ``CURRENT_TIMESTAMP``
========================  ==============================  ==================================

On MariaDB and MySQL (dialect ``mysql`` or ``mariadb``; docs/mariadb.md) the queue
runs too, and the table there needs types of its own: ``CHAR(32)`` ids (hex, in
UUIDv7 order), ``JSON``, ``DATETIME(6)`` holding UTC (:class:`UtcDateTime`:
MariaDB has no time zone type), ``UTC_TIMESTAMP(6)`` for ``now()``, and
``VARBINARY(1024)`` for the texts that are index keys (:data:`KEY_TEXT_TYPE`: an
InnoDB index key holds at most 3072 bytes, 768 utf8mb4 characters, and a topic may
be 1024 UTF-8 bytes; binary, so that topics compare byte for byte as on PostgreSQL,
not case-insensitively as MariaDB's default collation would).

Running the *queue* on another database is another matter: it is refused at the
first call, naming the dialect (:mod:`programma_sa._drivers`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Text, Uuid
from sqlalchemy.dialects.mysql import DATETIME, VARBINARY
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import func
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

__all__ = [
    "JSON_TYPE",
    "KEY_TEXT_TYPE",
    "MYSQL_DIALECTS",
    "TEXT_ARRAY_TYPE",
    "TIME_TYPE",
    "UUID_TYPE",
    "HexUuid",
    "UtcDateTime",
    "empty_json_object",
    "random_uuid",
    "utc_now",
]

#: SQLAlchemy's dialect names for MariaDB and MySQL (``mysql://`` names MariaDB too).
MYSQL_DIALECTS = ("mysql", "mariadb")


class HexUuid(TypeDecorator[uuid.UUID]):
    """A UUID kept as 32 hex digits (``CHAR(32)``), taking its text too, as
    PostgreSQL's ``uuid`` does."""

    impl = Uuid(as_uuid=True, native_uuid=False)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return uuid.UUID(value) if isinstance(value, str) else value


#: A UUID column: ``UUID`` on PostgreSQL, SQLAlchemy's portable ``Uuid`` elsewhere.
UUID_TYPE = (
    Uuid(as_uuid=True)
    .with_variant(UUID(as_uuid=True), "postgresql")
    # CHAR(32) hex on MariaDB too, not its UUID type: MariaDB 10.11 orders UUIDs by
    # their fields in reverse (for version 1), so UUIDv7 ids would not sort in
    # creation order, which listings and their keyset pagination rely on.
    .with_variant(HexUuid(), "mysql", "mariadb")
)
#: A JSON column: ``JSONB`` on PostgreSQL, ``JSON`` elsewhere. A Python ``None`` is
#: stored as JSON ``null``, not SQL NULL (``none_as_null=False``, as for ``data``).
JSON_TYPE = JSON(none_as_null=False).with_variant(JSONB(none_as_null=False), "postgresql")
#: A list of strings: ``text[]`` on PostgreSQL, a JSON array elsewhere.
TEXT_ARRAY_TYPE = JSON().with_variant(ARRAY(Text), "postgresql")
#: Longest text kept in a :data:`KEY_TEXT_TYPE` column on MariaDB, in UTF-8 bytes
#: (programma_sa._validation refuses longer topics and unique keys first).
KEY_TEXT_BYTES = 1024


class KeyText(TypeDecorator[str]):
    """Text kept as its UTF-8 bytes (``VARBINARY``): compared byte for byte, read back
    as ``str``."""

    impl = VARBINARY(KEY_TEXT_BYTES)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return value.encode() if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return value.decode() if isinstance(value, (bytes, bytearray)) else value


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime kept as UTC in ``DATETIME(6)`` (MariaDB keeps no zone): an
    aware value is converted to UTC when written, every value read back is aware
    (UTC), as a ``timestamptz`` is on PostgreSQL."""

    impl = DATETIME(fsp=6)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


#: A text that is an index key (topic, unique key): ``text``; ``VARBINARY`` on MariaDB.
KEY_TEXT_TYPE = Text().with_variant(KeyText(), *MYSQL_DIALECTS)
#: A point in time: ``timestamptz``; ``DATETIME(6)`` in UTC on MariaDB.
TIME_TYPE = DateTime(timezone=True).with_variant(UtcDateTime(), *MYSQL_DIALECTS)


class random_uuid(FunctionElement[Any]):  # named like the SQL functions in func
    """A random UUID, for a server default: ``gen_random_uuid()`` on PostgreSQL."""

    inherit_cache = True


class utc_now(FunctionElement[Any]):
    """The database's current time, for a server default: ``now()`` on PostgreSQL,
    ``CURRENT_TIMESTAMP`` on SQLite (both UTC there), ``UTC_TIMESTAMP(6)`` on MariaDB
    (whose ``now()`` is the session's local time)."""

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


@compiles(random_uuid, "mysql")
@compiles(random_uuid, "mariadb")
def _random_uuid_mysql(element: random_uuid, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy's 32 hex digits (UUID_TYPE).
    return "(replace(uuid(),'-',''))"  # as MariaDB shows it back (autogenerate compares)


@compiles(utc_now)
def _utc_now(element: utc_now, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(func.now(), **kw))


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _utc_now_mysql(element: utc_now, compiler: Any, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"


@compiles(empty_json_object, "mysql")
@compiles(empty_json_object, "mariadb")
def _empty_json_object_mysql(element: empty_json_object, compiler: Any, **kw: Any) -> str:
    return "('{}')"  # an expression: MySQL takes no literal default on a JSON column


@compiles(empty_json_object)
def _empty_json_object(element: empty_json_object, compiler: Any, **kw: Any) -> str:
    return "'{}'"


@compiles(empty_json_object, "postgresql")
def _empty_json_object_postgresql(element: empty_json_object, compiler: Any, **kw: Any) -> str:
    return "'{}'::jsonb"
