"""A call as a job's document and back, without a database: codecs and binding."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

import pytest

from programma_sa import ConfigurationError, InvalidJobInput, TaskDocumentError
from programma_sa.tasks.arguments import Arguments
from programma_sa.tasks.codecs import EncodeContext, Refused, codec_for


class Size(enum.IntEnum):
    S = 1
    L = 3


@dataclass
class Line:
    sku: str
    quantity: int
    price: Decimal


@dataclass
class Basket:
    lines: list[Line]
    placed: datetime | None = None


ROUND_TRIPS: list[tuple[Any, Any]] = [
    (datetime, datetime(2024, 1, 2, 3, 4, 5)),  # naive stays naive
    (datetime, datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))),
    (date, date(1999, 12, 31)),
    (time, time(12, 0, 1, 5)),
    (uuid.UUID, uuid.uuid4()),
    (Decimal, Decimal("-0.000100")),
    (Size, Size.L),
    (float, 3),  # an int is a float's JSON form: it comes back as it went
    (bool, True),
    (int | None, None),
    (Sequence[date], [date(2024, 1, 1)]),
    (tuple[int, ...], (1, 2, 3)),
    (tuple[str, Decimal], ("a", Decimal("1.5"))),
    (frozenset[uuid.UUID], frozenset({uuid.UUID(int=7)})),
    (dict[str, list[Size]], {"x": [Size.S, Size.L]}),
    (Basket, Basket([Line("a-1", 2, Decimal("9.99"))], datetime(2024, 5, 1, tzinfo=timezone.utc))),
    (Literal["a", "b"], "b"),
    (int | str, "either"),
]


@pytest.mark.parametrize(
    ("annotation", "value"), ROUND_TRIPS, ids=[repr(a) for a, _ in ROUND_TRIPS]
)
def test_a_value_comes_back_as_it_went(annotation: Any, value: Any) -> None:
    codec = codec_for(annotation, "here")
    stored = codec.encode(value, EncodeContext())
    back = codec.decode(stored, None)
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize(
    ("annotation", "value", "reason"),
    [
        (date, datetime(2024, 1, 1), "expected date, got datetime"),
        (int, "1", "expected int, got str"),
        (list[int], "12", "expected list, got str"),
        (dict[str, int], {1: 2}, "a dict key 1 is not a string"),
        (tuple[int, int], (1,), "expected a tuple of 2, got (1,)"),
        (Any, (1, 2), "a value of type tuple is not plain JSON"),
        (Any, {"when": date(2024, 1, 1)}, "a value of type date is not plain JSON"),
        (float, float("inf"), "inf has no JSON form"),
    ],
)
def test_a_value_that_would_not_come_back_is_refused(
    annotation: Any, value: Any, reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        codec_for(annotation, "here").encode(value, EncodeContext())
    assert str(refused.value).startswith(reason)


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (Callable[[], None], "here: collections.abc.Callable["),
        (dict[int, str], "here: a JSON object's keys are strings, not <class 'int'>"),
        (Line | Basket, "here: a union of"),
        (object.__class__, "here: type is not a type a job can store"),
    ],
)
def test_an_annotation_no_job_can_store_is_a_configuration_error(
    annotation: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        codec_for(annotation, "here")
    assert str(refused.value).startswith(message)


def _variadic(a: int, /, b: str = "b", *rest: Decimal, flag: bool = False, **more: date) -> Any:
    return (a, b, rest, flag, more)


def test_positional_only_star_args_and_keywords_round_trip() -> None:
    arguments = Arguments(_variadic, "v")
    given = arguments.bind((1, "x", Decimal("2"), Decimal("3")), {"day": date(2024, 1, 1)}, "v")

    document = arguments.encode(given, EncodeContext(), "v")

    assert document == {"a": 1, "b": "x", "rest": ["2", "3"], "day": "2024-01-01"}
    args, kwargs = arguments.decode(document, None)
    assert _variadic(*args, **kwargs) == (
        1,
        "x",
        (Decimal("2"), Decimal("3")),
        False,
        {"day": date(2024, 1, 1)},
    )
    args, kwargs = arguments.decode({"a": 5}, None)  # defaults apply when the job runs
    assert _variadic(*args, **kwargs) == (5, "b", (), False, {})


def test_a_keyword_named_like_a_parameter_cannot_be_stored() -> None:
    arguments = Arguments(_variadic, "v")
    given = arguments.bind((1,), {"a": date(2024, 1, 1)}, "task 'v'")  # a is positional-only
    with pytest.raises(InvalidJobInput) as refused:
        arguments.encode(given, EncodeContext(), "task 'v'")
    assert str(refused.value) == (
        "task 'v': keyword argument 'a' has the name of a parameter, so the job's document "
        "cannot hold both"
    )


def test_a_document_that_does_not_bind_names_what_is_wrong() -> None:
    arguments = Arguments(_variadic, "v")
    with pytest.raises(TaskDocumentError, match=r"^task 'v': argument 'rest': expected a list"):
        arguments.decode({"a": 1, "rest": "2"}, None)
    with pytest.raises(TaskDocumentError, match=r"^task 'v': argument 'day': expected a date"):
        arguments.decode({"a": 1, "day": 5}, None)
