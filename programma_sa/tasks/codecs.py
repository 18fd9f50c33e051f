"""How one argument value is stored in a job's JSON document and read back, by its annotation.

A task's parameter annotation picks a :class:`Codec` (:func:`codec_for`):

* unannotated, ``Any``, ``object``, bare ``list``/``dict`` and unions of JSON types:
  plain JSON, checked (``None``, ``bool``, ``int``, finite ``float``, ``str``, lists,
  objects with string keys) — anything else is refused, since it would come back as
  something else;
* ``int``, ``float``, ``str``, ``bool``, ``None``; ``datetime``, ``date``, ``time``,
  ``UUID``, ``Decimal`` (ISO-8601 / canonical strings); enums (by value);
* ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``set[X]``,
  ``frozenset[X]``, ``dict[str, X]`` (and their ``collections.abc`` spellings);
* dataclasses (an object of their fields, each by its own annotation) and pydantic
  models (``model_dump(mode="json")`` / ``model_validate``);
* a mapped SQLAlchemy class: a *reference* — the primary key (a list for a composite
  key) — loaded again with ``Session.get`` in the handler's session.

A value a codec cannot store raises :class:`Refused`; a stored value it cannot read
raises :class:`Undecodable`; a reference whose row is gone raises :class:`Missing`.
Each carries a reason; :mod:`.arguments` names the task and the argument.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import math
import sys
import types
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session

from ..exceptions import ConfigurationError

__all__ = ["Codec", "EncodeContext", "Missing", "Refused", "Undecodable", "codec_for"]


class Refused(Exception):
    """A value that cannot be stored as its parameter's annotation says."""


class Undecodable(Exception):
    """A stored value that cannot be read as its parameter's annotation says."""


class Missing(Exception):
    """A stored reference to a row that no longer exists."""


@dataclasses.dataclass
class EncodeContext:
    """What an encoding pass noted: the mapped instances that have no primary key
    yet because they are pending in a session (it must flush, then encode again)."""

    pending: list[object] = dataclasses.field(default_factory=list)


def _kind(value: object) -> str:
    return type(value).__name__


class Codec(ABC):
    """Stores values of one annotation as JSON, and reads them back."""

    #: Whether reading needs a session (it loads rows).
    needs_session = False

    @abstractmethod
    def encode(self, value: Any, context: EncodeContext) -> Any:
        """``value`` as JSON-ready data (raise :class:`Refused`)."""

    @abstractmethod
    def decode(self, data: Any, session: Session | None) -> Any:
        """The value ``data`` stores (raise :class:`Undecodable` or :class:`Missing`)."""


class PlainJson(Codec):
    """Any JSON value, stored as it is; only JSON's own types are accepted."""

    def encode(self, value: Any, context: EncodeContext) -> Any:
        _check_plain(value)
        return value

    def decode(self, data: Any, session: Session | None) -> Any:
        return data


def _check_plain(value: object) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused(f"{value!r} has no JSON form")
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused(f"a dict key {key!r} is not a string")
            _check_plain(item)
        return
    raise Refused(
        f"a value of type {_kind(value)} is not plain JSON: annotate the parameter with "
        "its type to store it (see the supported types in docs/tasks.md)"
    )


class Exact(Codec):
    """One JSON scalar type: ``str``, ``bool``, ``int`` (not a bool), ``float``, ``None``."""

    def __init__(self, kind: type) -> None:
        self._kind = kind
        # An int is a float's JSON form too (3 for 3.0); a bool is an int's only in
        # Python, and JSON keeps it a bool: both come back as they went.
        self._accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._accepted):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Refused(f"{value!r} has no JSON form")
        return value

    def decode(self, data: Any, session: Session | None) -> Any:
        if not isinstance(data, self._accepted):
            raise Undecodable(f"expected {self._kind.__name__}, got {_kind(data)}")
        return data


class Textual(Codec):
    """A value stored as a string: dates and times (ISO-8601), ``UUID``, ``Decimal``."""

    def __init__(
        self,
        kind: type,
        to_text: Callable[[Any], str],
        from_text: Callable[[str], Any],
        refused: type | None = None,
    ) -> None:
        self._kind = kind
        self._to_text = to_text
        self._from_text = from_text
        self._refused = refused  # a subclass that would not come back as ``kind``

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._kind) or (
            self._refused is not None and isinstance(value, self._refused)
        ):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        return self._to_text(value)

    def decode(self, data: Any, session: Session | None) -> Any:
        if not isinstance(data, str):
            raise Undecodable(f"expected a {self._kind.__name__} string, got {_kind(data)}")
        try:
            return self._from_text(data)
        except (ValueError, InvalidOperation) as error:
            raise Undecodable(f"{data!r} is not a {self._kind.__name__}") from error


def _decimal(text: str) -> Decimal:
    return Decimal(text)


_TEXTUAL: dict[type, Textual] = {
    datetime: Textual(datetime, datetime.isoformat, datetime.fromisoformat),
    date: Textual(date, date.isoformat, date.fromisoformat, refused=datetime),
    time: Textual(time, time.isoformat, time.fromisoformat),
    uuid.UUID: Textual(uuid.UUID, str, uuid.UUID),
    Decimal: Textual(Decimal, str, _decimal),
}


class EnumMember(Codec):
    """An enum member, stored as its value."""

    def __init__(self, kind: type[enum.Enum]) -> None:
        self._kind = kind

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._kind):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        _check_plain(value.value)
        return value.value

    def decode(self, data: Any, session: Session | None) -> Any:
        try:
            return self._kind(data)
        except ValueError as error:
            raise Undecodable(f"{data!r} is not a {self._kind.__name__}") from error


class OrNone(Codec):
    """``X | None``."""

    def __init__(self, inner: Codec) -> None:
        self._inner = inner
        self.needs_session = inner.needs_session

    def encode(self, value: Any, context: EncodeContext) -> Any:
        return None if value is None else self._inner.encode(value, context)

    def decode(self, data: Any, session: Session | None) -> Any:
        return None if data is None else self._inner.decode(data, session)


class Items(Codec):
    """A list, set, frozenset or homogeneous tuple of one annotation, stored as a list."""

    def __init__(self, kind: type, item: Codec) -> None:
        self._kind = kind
        self._item = item
        self.needs_session = item.needs_session

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._kind) or isinstance(value, (str, bytes)):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        return [self._item.encode(item, context) for item in typing.cast("Iterable[Any]", value)]

    def decode(self, data: Any, session: Session | None) -> Any:
        if not isinstance(data, list):
            raise Undecodable(f"expected a list, got {_kind(data)}")
        items = [self._item.decode(item, session) for item in data]
        return items if self._kind is list else self._kind(items)


class FixedTuple(Codec):
    """``tuple[X, Y, …]``: one annotation per position, stored as a list."""

    def __init__(self, items: list[Codec]) -> None:
        self._items = items
        self.needs_session = any(item.needs_session for item in items)

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, tuple) or len(value) != len(self._items):
            raise Refused(f"expected a tuple of {len(self._items)}, got {value!r}")
        return [codec.encode(item, context) for codec, item in zip(self._items, value, strict=True)]

    def decode(self, data: Any, session: Session | None) -> Any:
        if not isinstance(data, list) or len(data) != len(self._items):
            raise Undecodable(f"expected a list of {len(self._items)}, got {data!r}")
        return tuple(
            codec.decode(item, session) for codec, item in zip(self._items, data, strict=True)
        )


class StringKeyed(Codec):
    """``dict[str, X]``."""

    def __init__(self, value: Codec) -> None:
        self._value = value
        self.needs_session = value.needs_session

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, collections.abc.Mapping):
            raise Refused(f"expected a mapping, got {_kind(value)}")
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused(f"a dict key {key!r} is not a string")
            encoded[key] = self._value.encode(item, context)
        return encoded

    def decode(self, data: Any, session: Session | None) -> Any:
        if not isinstance(data, dict):
            raise Undecodable(f"expected an object, got {_kind(data)}")
        return {key: self._value.decode(item, session) for key, item in data.items()}


class Fields(Codec):
    """A dataclass: an object of its ``__init__`` fields, each by its own annotation."""

    def __init__(self, kind: type, fields: dict[str, Codec]) -> None:
        self._kind = kind
        self._fields = fields
        self.needs_session = any(codec.needs_session for codec in fields.values())

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._kind):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        return {
            name: codec.encode(getattr(value, name), context)
            for name, codec in self._fields.items()
        }

    def decode(self, data: Any, session: Session | None) -> Any:
        if not isinstance(data, dict):
            raise Undecodable(f"expected a {self._kind.__name__} object, got {_kind(data)}")
        unknown = set(data) - set(self._fields)
        if unknown:
            raise Undecodable(f"{self._kind.__name__} has no field {sorted(unknown)[0]!r}")
        values = {name: self._fields[name].decode(item, session) for name, item in data.items()}
        try:
            return self._kind(**values)
        except TypeError as error:
            raise Undecodable(f"{self._kind.__name__}: {error}") from error


class PydanticModel(Codec):
    """A pydantic model: ``model_dump(mode="json")``, read with ``model_validate``."""

    def __init__(self, kind: Any) -> None:
        self._kind = kind

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._kind):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        return value.model_dump(mode="json")

    def decode(self, data: Any, session: Session | None) -> Any:
        from pydantic import ValidationError

        try:
            return self._kind.model_validate(data)
        except ValidationError as error:
            raise Undecodable(f"not a valid {self._kind.__name__}: {error}") from error


class Reference(Codec):
    """A mapped instance, stored as its primary key and loaded again with ``Session.get``."""

    needs_session = True

    def __init__(self, kind: type, mapper: Mapper[Any]) -> None:
        self._kind = kind
        self._mapper = mapper
        self._keys: list[Codec] | None = None

    @property
    def keys(self) -> list[Codec]:
        """One codec per primary-key column, by its Python type (built on first use:
        the mapper may not be configured when the task is declared)."""
        if self._keys is None:
            self._keys = [_key_codec(column) for column in self._mapper.primary_key]
        return self._keys

    def encode(self, value: Any, context: EncodeContext) -> Any:
        if not isinstance(value, self._kind):
            raise Refused(f"expected {self._kind.__name__}, got {_kind(value)}")
        state = sa_inspect(value)
        if state.deleted or state.was_deleted:
            raise Refused(f"the {self._kind.__name__} was deleted")
        if state.identity is None:
            if not state.pending:
                raise Refused(
                    f"the {self._kind.__name__} has no primary key yet: add it to the "
                    "session first (session.add)"
                )
            context.pending.append(value)
            return None  # encoded again once the session has flushed it
        key = [
            codec.encode(part, context)
            for codec, part in zip(self.keys, state.identity, strict=True)
        ]
        return key[0] if len(key) == 1 else key

    def decode(self, data: Any, session: Session | None) -> Any:
        assert session is not None, "a reference is read in a session"
        parts = [data] if len(self.keys) == 1 else data
        if not isinstance(parts, list) or len(parts) != len(self.keys):
            raise Undecodable(f"expected a primary key of {self._kind.__name__}, got {data!r}")
        key = tuple(
            codec.decode(part, session) for codec, part in zip(self.keys, parts, strict=True)
        )
        instance = session.get(self._kind, key[0] if len(key) == 1 else key)
        if instance is None:
            raise Missing(f"no {self._kind.__name__} has the primary key {data!r}")
        return instance


def _key_codec(column: Any) -> Codec:
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return PlainJson()
    return _TEXTUAL.get(kind) or PlainJson()


_PLAIN_MEMBERS = (type(None), str, bool, int, float, list, dict)


def codec_for(annotation: Any, where: str) -> Codec:
    """The codec of ``annotation`` (resolved; ``where`` names it in an error).

    :raises ConfigurationError: no value of that annotation can be stored.
    """
    if annotation in (Any, object) or annotation is inspect.Parameter.empty:
        return PlainJson()
    if annotation is None or annotation is type(None):
        return Exact(type(None))
    if annotation in (str, bool, int, float):
        return Exact(annotation)
    if annotation in (list, dict):
        return PlainJson()
    textual = _TEXTUAL.get(annotation)
    if textual is not None:
        return textual
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _union(annotation, arguments, where)
    if origin is not None:
        return _generic(annotation, origin, arguments, where)
    if isinstance(annotation, type):
        return _class(annotation, where)
    raise ConfigurationError(f"{where}: {annotation!r} is not a type a job can store")


def _union(annotation: Any, arguments: tuple[Any, ...], where: str) -> Codec:
    others = [argument for argument in arguments if argument is not type(None)]
    if len(others) == 1:
        return OrNone(codec_for(others[0], where))
    if all((typing.get_origin(member) or member) in _PLAIN_MEMBERS for member in others):
        return PlainJson()
    raise ConfigurationError(
        f"{where}: a union of {annotation!r} cannot be read back unambiguously; "
        "annotate one type (or X | None)"
    )


_ITEMS: dict[Any, type] = {
    list: list,
    collections.abc.Sequence: list,
    collections.abc.Iterable: list,
    set: set,
    collections.abc.Set: set,
    frozenset: frozenset,
}
_MAPPINGS = (dict, collections.abc.Mapping)


def _generic(annotation: Any, origin: Any, arguments: tuple[Any, ...], where: str) -> Codec:
    if origin in _ITEMS:
        item = codec_for(arguments[0], where) if arguments else PlainJson()
        return Items(_ITEMS[origin], item)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return Items(tuple, codec_for(arguments[0], where))
        return FixedTuple([codec_for(argument, where) for argument in arguments])
    if origin in _MAPPINGS:
        if arguments and arguments[0] is not str:
            raise ConfigurationError(
                f"{where}: a JSON object's keys are strings, not {arguments[0]!r}"
            )
        return StringKeyed(codec_for(arguments[1], where) if arguments else PlainJson())
    if origin is typing.Literal:
        return PlainJson()
    raise ConfigurationError(f"{where}: {annotation!r} is not a type a job can store")


def _class(kind: type, where: str) -> Codec:
    if issubclass(kind, enum.Enum):
        return EnumMember(kind)
    if issubclass(kind, tuple):
        return Items(tuple, PlainJson())
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return Fields(
            kind,
            {
                field.name: codec_for(hints.get(field.name, Any), f"{where}: {kind.__name__}")
                for field in dataclasses.fields(kind)
                if field.init
            },
        )
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(kind, pydantic.BaseModel):
        return PydanticModel(kind)
    mapper = sa_inspect(kind, raiseerr=False)
    if isinstance(mapper, Mapper):
        return Reference(kind, mapper)
    raise ConfigurationError(
        f"{where}: {kind.__name__} is not a type a job can store (JSON types, dates and "
        "times, UUID, Decimal, enums, dataclasses, pydantic models, mapped classes and "
        "collections of them)"
    )


def codecs_for(hints: dict[str, Any], names: Iterable[str], where: str) -> dict[str, Codec]:
    """The codec of each of ``names`` by its annotation in ``hints`` (none: plain JSON)."""
    return {
        name: codec_for(hints.get(name, inspect.Parameter.empty), f"{where} {name!r}")
        for name in names
    }
