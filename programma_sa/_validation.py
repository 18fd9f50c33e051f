"""Argument checks shared by the sync and async APIs.

Every function here either returns a value ready to bind into a statement or raises
:class:`~programma_sa.exceptions.InvalidJobInput` naming the argument — always before
a statement is sent, so a refused call leaves the caller's transaction untouched.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime

from .exceptions import ConfigurationError, InvalidJobInput, PayloadTooLarge

#: Default ceiling on the serialised size of a job's data (and of its attributes).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

#: Longest topic, in UTF-8 bytes. A topic is a key of the claim index (PostgreSQL
#: refuses btree entries over 2704 bytes) and the payload of the enqueue NOTIFY
#: (at most 7999 bytes); a longer one would fail inside the caller's transaction
#: and abort it, so it is refused up front.
MAX_TOPIC_BYTES = 1024

#: Largest number of seconds accepted for a delay or a visibility timeout (about 68
#: years). ``retry_after_seconds`` is an ``integer`` column; a larger
#: ``run_after_seconds`` overflows PostgreSQL's interval ("interval out of range")
#: inside the caller's transaction. Later dates: use ``run_after_date``.
MAX_SECONDS = 2**31 - 1

# PostgreSQL identifiers: a letter or underscore, then letters, digits, _ or $,
# at most 63 bytes (NAMEDATALEN - 1). Anything else is refused rather than quoted,
# so a table or schema name can never carry SQL.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")

# A JSON text holds an escaped NUL as \u0000 preceded by an even number of
# backslashes; PostgreSQL's jsonb refuses it ("unsupported Unicode escape sequence").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is a plain PostgreSQL identifier, else raise."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigurationError(
            f"{what} must be a PostgreSQL identifier (a letter or _, then letters, digits, "
            f"_ or $, at most 63 characters), got {value!r}"
        )
    return value


#: The longest jobs table name: the table's constraint and index names add up to 14
#: characters to it (``ix_<table>_processing``) and must fit in 63.
MAX_TABLE_NAME_LENGTH = 63 - len("ix__processing")


def check_table_name(value: object, what: str) -> str:
    """Return ``value`` if it can name a jobs table (and its indexes), else raise."""
    name = check_identifier(value, what)
    if len(name) > MAX_TABLE_NAME_LENGTH:
        raise ConfigurationError(
            f"{what} must be at most {MAX_TABLE_NAME_LENGTH} characters (its index names, "
            f"such as ix_<table>_processing, must fit PostgreSQL's 63), got {name!r} "
            f"({len(name)} characters)"
        )
    return name


def _utf8(text: str, what: str) -> bytes:
    """``text`` as the UTF-8 the driver will send; a lone surrogate cannot be sent."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidJobInput(
            f"{what} is not valid Unicode text (it contains a lone surrogate)"
        ) from error


def _key_text(value: object, what: str, max_bytes: int) -> str:
    """A non-empty string without NUL characters, at most ``max_bytes`` in UTF-8."""
    if not isinstance(value, str):
        raise InvalidJobInput(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidJobInput(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidJobInput(f"{what} must not contain NUL characters")
    # An ASCII text is as many bytes as characters (isascii() is O(1) for str).
    size = len(value) if value.isascii() else len(_utf8(value, what))
    if size > max_bytes:
        raise InvalidJobInput(f"{what} is {size} bytes in UTF-8; the limit is {max_bytes} bytes")
    return value


def check_topic(topic: object) -> str:
    """A topic is a non-empty string without NUL characters (it is data, never SQL)."""
    return _key_text(topic, "topic", MAX_TOPIC_BYTES)


# One encoder for every payload: json.dumps with non-default options builds a new
# JSONEncoder per call, a measurable share of a bulk enqueue's validation.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_text(value: object, what: str, max_bytes: int) -> str:
    """Serialise ``value`` to the JSON text that will be stored, or raise."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as error:
        raise InvalidJobInput(f"{what} is not JSON-serialisable: {error}") from error
    except RecursionError as error:  # the encoder recurses once per nesting level
        raise InvalidJobInput(f"{what} is nested too deeply to serialise as JSON") from error
    # The substring test is the cheap common case; the regex rules out an escaped
    # backslash followed by "u0000".
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise InvalidJobInput(
            f"{what} contains a NUL character, which PostgreSQL jsonb cannot store"
        )
    # An ASCII text is as many bytes as characters (isascii() is O(1) for str):
    # only other texts are encoded to be measured (and checked for lone surrogates).
    size = len(text) if text.isascii() else len(_utf8(text, what))
    if size > max_bytes:
        raise PayloadTooLarge(f"{what} is {size} bytes as JSON; the limit is {max_bytes} bytes")
    return text


def attributes_text(value: object, max_bytes: int) -> str:
    """Attributes are a JSON object (they are merged key by key by ``set_attributes``)."""
    if not isinstance(value, Mapping):
        raise InvalidJobInput(f"attributes must be a mapping, got {type(value).__name__}")
    return json_text(dict(value), "attributes", max_bytes)


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJobInput(f"{what} must be a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise InvalidJobInput(f"{what} must be finite, got {value!r}")
    if value < 0:
        raise InvalidJobInput(f"{what} must not be negative, got {value!r}")
    if value > MAX_SECONDS:
        raise InvalidJobInput(f"{what} is too large (at most {MAX_SECONDS}), got {value!r}")
    return float(value)


def optional_seconds(value: object, what: str) -> float | None:
    """``None`` or a finite, non-negative number of seconds."""
    return None if value is None else _seconds(value, what)


def retry_seconds(value: object) -> int | None:
    """The visibility timeout: ``None`` (never redelivered) or whole seconds >= 0."""
    if value is None:
        return None
    seconds = _seconds(value, "retry_after_seconds")
    if not seconds.is_integer():
        raise InvalidJobInput(f"retry_after_seconds must be whole seconds, got {value!r}")
    return int(seconds)


def start_date(value: object, what: str) -> datetime:
    """An aware ``datetime`` or an ISO-8601 string with a UTC offset (``Z`` allowed)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat lacks "Z"
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError as error:
            raise InvalidJobInput(f"{what} is not an ISO-8601 date: {value!r}") from error
    if not isinstance(value, datetime):
        raise InvalidJobInput(
            f"{what} must be an aware datetime or an ISO-8601 string, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidJobInput(
            f"{what} must carry a time zone (an aware datetime, or a string with an offset "
            f"such as 'Z' or '+00:00'), got {value.isoformat()!r}"
        )
    return value


def job_id(value: object) -> uuid.UUID:
    """A job id: a :class:`uuid.UUID` or its string form."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError as error:
            raise InvalidJobInput(f"job id is not a UUID: {value!r}") from error
    raise InvalidJobInput(f"job id must be a UUID or a string, got {type(value).__name__}")


def check_max_jobs(value: object) -> int:
    """How many jobs one claim may take: an ``int`` >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobInput(f"max_jobs must be an int, got {value!r}")
    if value < 1:
        raise InvalidJobInput(f"max_jobs must be at least 1, got {value}")
    return value


def payload_limit(value: object) -> int:
    """The queue's ``max_payload_bytes`` setting."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"max_payload_bytes must be a positive int, got {value!r}")
    return value


#: The range of a job's priority: PostgreSQL's ``integer``.
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1


def check_priority(value: object) -> int:
    """A job's priority: an ``int`` in PostgreSQL's ``integer`` range (higher first)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobInput(f"priority must be an int, got {value!r}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidJobInput(
            f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {value}"
        )
    return value


#: Longest unique key, in UTF-8 bytes: it is the key of a btree index entry (at most
#: 2704 bytes), refused up front rather than inside the caller's transaction.
MAX_UNIQUE_KEY_BYTES = 1024


def check_unique_key(value: object) -> str:
    """A unique key: a non-empty string without NUL characters, at most 1,024 bytes."""
    return _key_text(value, "unique_key", MAX_UNIQUE_KEY_BYTES)
