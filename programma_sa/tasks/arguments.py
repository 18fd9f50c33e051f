"""A task's call as a job's document, and back: binding, encoding, decoding.

The document is a JSON object of the arguments *given* in the call, by parameter
name (defaults are left out: the function applies its own when it runs). A
``*args`` parameter is a list under its name; the keywords a ``**kwargs`` parameter
takes sit at the top level, as they were passed. So a producer without the task at
hand can enqueue one with ``queue.add_job(session, topic, {"order": 42})``.

Each value goes through the codec of its parameter's annotation (:mod:`.codecs`).
The annotations are resolved on first use, so a task may name a class defined
after it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from ..exceptions import ConfigurationError, InstanceNotFound, InvalidJobInput, TaskDocumentError
from .codecs import Codec, EncodeContext, Missing, Refused, Undecodable, codec_for

__all__ = ["Arguments", "Call"]

#: Positional and keyword arguments, ready for ``function(*args, **kwargs)``.
Call = tuple[tuple[Any, ...], dict[str, Any]]

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class Arguments:
    """The parameters of one task function, and how its calls are stored."""

    def __init__(self, function: Callable[..., Any], name: str) -> None:
        self._function = function
        #: How errors name the task: ``task 'name'``.
        self.where = f"task {name!r}"
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters.values())
        self._star = next(
            (p.name for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL), None
        )
        self._star_star = next(
            (p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None
        )
        self._required = frozenset(
            p.name for p in parameters if p.kind not in _VARIADIC and p.default is p.empty
        )
        #: Passed by position when the function runs: its positional-only parameters,
        #: or every parameter before ``*args`` when the call gives ``*args`` values.
        self._positional_only = [
            p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        self._before_star = [
            p.name
            for p in parameters
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        self._defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        self._codecs: dict[str, Codec] | None = None
        self._needs_session = False

    # -- annotations -------------------------------------------------------------------

    @property
    def codecs(self) -> dict[str, Codec]:
        """The codec of each parameter by its annotation (``*args``/``**kwargs``: of
        each of their values); resolved on first use.

        :raises ConfigurationError: an annotation names no type a job can store, or
            cannot be resolved.
        """
        if self._codecs is None:
            try:
                hints = typing.get_type_hints(self._function)
            except NameError as error:
                raise ConfigurationError(
                    f"{self.where}: an annotation cannot be resolved ({error})"
                ) from error
            codecs = {
                name: codec_for(
                    hints.get(name, inspect.Parameter.empty),
                    f"{self.where}: parameter {name!r}",
                )
                for name in self.signature.parameters
            }
            self._needs_session = any(codec.needs_session for codec in codecs.values())
            self._codecs = codecs
        return self._codecs

    @property
    def needs_session(self) -> bool:
        """Whether reading a call loads rows (a parameter is a mapped class)."""
        codecs = self.codecs  # resolves the annotations on first use
        return bool(codecs) and self._needs_session

    # -- enqueue -----------------------------------------------------------------------

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The arguments a call gives, by parameter name, checked against the signature
        (``where``: how an error names the call).

        :raises InvalidJobInput: the function cannot be called so.
        """
        try:
            return dict(self.signature.bind(*args, **kwargs).arguments)
        except TypeError as error:
            raise InvalidJobInput(f"{where}: {error}") from None

    def encode(
        self, given: Mapping[str, Any], context: EncodeContext, where: str
    ) -> dict[str, Any]:
        """The document of a bound call (``given``, from :meth:`bind`).

        :raises InvalidJobInput: a value cannot be stored as its annotation says.
        """
        codecs = self.codecs
        document: dict[str, Any] = {}

        def encoded(codec: Codec, value: Any, name: str) -> Any:
            try:
                return codec.encode(value, context)
            except Refused as refused:
                raise InvalidJobInput(f"{where}: argument {name!r}: {refused}") from None

        for name, value in given.items():
            codec = codecs[name]
            if name == self._star:
                document[name] = [
                    encoded(codec, item, f"{name}[{index}]") for index, item in enumerate(value)
                ]
            elif name == self._star_star:
                for key, item in value.items():
                    if key in self.signature.parameters:
                        raise InvalidJobInput(
                            f"{where}: keyword argument {key!r} has the name of a parameter, "
                            "so the job's document cannot hold both"
                        )
                    document[key] = encoded(codec, item, key)
            else:
                document[name] = encoded(codec, value, name)
        return document

    def with_defaults(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """A call's ``document`` with the defaults of the arguments it leaves out,
        encoded (an absent ``*args``: an empty list) — what a unique key is derived
        from, so that a call passing a default value and one leaving it out agree.

        :raises InvalidJobInput: a default cannot be stored as its annotation says.
        """
        codecs = self.codecs
        full: dict[str, Any] = {self._star: []} if self._star is not None else {}
        for name, value in self._defaults.items():
            if name not in document:
                try:
                    full[name] = codecs[name].encode(value, EncodeContext())
                except Refused as refused:
                    raise InvalidJobInput(f"the default of argument {name!r}: {refused}") from None
        full.update(document)
        return full

    # -- run ---------------------------------------------------------------------------

    def decode(self, document: Any, session: Session | None) -> Call:
        """The call a job's document stores, its references loaded in ``session``.

        :raises TaskDocumentError: the document does not bind to the signature.
        :raises InstanceNotFound: a referenced row no longer exists.
        """
        if not isinstance(document, dict):
            raise TaskDocumentError(
                f"{self.where}: the job's data must be an object of arguments by "
                f"name, got {type(document).__name__}"
            )
        missing = self._required.difference(document)
        if missing:
            raise TaskDocumentError(
                f"{self.where}: the job's data has no argument {sorted(missing)[0]!r}"
            )
        codecs = self.codecs
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, data in document.items():
            codec = codecs.get(key) if key != self._star_star else None
            if codec is None:
                if self._star_star is None:
                    raise TaskDocumentError(
                        f"{self.where}: the job's data has an unexpected argument {key!r}"
                    )
                extra[key] = self._decoded(codecs[self._star_star], data, key, session)
            elif key == self._star:
                if not isinstance(data, list):
                    raise TaskDocumentError(
                        f"{self.where}: argument {key!r}: expected a list, "
                        f"got {type(data).__name__}"
                    )
                values[key] = [
                    self._decoded(codec, item, f"{key}[{i}]", session)
                    for i, item in enumerate(data)
                ]
            else:
                values[key] = self._decoded(codec, data, key, session)
        return self._call(values, extra)

    def _decoded(self, codec: Codec, data: Any, name: str, session: Session | None) -> Any:
        try:
            return codec.decode(data, session)
        except Undecodable as error:
            raise TaskDocumentError(f"{self.where}: argument {name!r}: {error}") from None
        except Missing as error:
            raise InstanceNotFound(f"{self.where}: argument {name!r}: {error}") from None

    def _call(self, values: dict[str, Any], extra: dict[str, Any]) -> Call:
        """``(args, kwargs)`` for decoded ``values`` by parameter name."""
        star = values.pop(self._star, None) if self._star is not None else None
        positional = self._before_star if star else self._positional_only
        args = [values.pop(name) if name in values else self._defaults[name] for name in positional]
        if star:
            args.extend(star)
        return tuple(args), {**values, **extra}
