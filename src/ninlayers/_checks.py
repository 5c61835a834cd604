"""Argument checks shared by the public constructors.

Every check raises `ValueError` whose message names the argument, says what was
expected and ends with what was received, as Keras does.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

_PADDINGS = ("same", "valid")
_DATA_FORMATS = ("channels_last", "channels_first")


def positive_int(name: str, value: Any) -> int:
    """Returns `value` as an `int`, or raises if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """Returns `value` as an `int`, or raises if it is not an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. Received: {name}={value!r}"
        )
    return int(value)


def pair(name: str, value: Any) -> tuple[int, int]:
    """Returns a positive int or a pair of them as a 2-tuple of ints."""
    items = value if isinstance(value, (list, tuple)) else (value, value)
    try:
        if len(items) != 2:
            raise ValueError
        return (positive_int(name, items[0]), positive_int(name, items[1]))
    except ValueError:
        raise ValueError(
            f"`{name}` must be a positive integer or a tuple of 2 positive "
            f"integers. Received: {name}={value!r}"
        ) from None


def _real(value: Any) -> float | None:
    """`value` as a float if it is a real number (not a bool) that fits one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range, e.g. 10**400
        return None


def fraction(name: str, value: Any) -> float:
    """Returns a float in [0, 1) (a rate, share or probability), or raises."""
    number = _real(value)
    if number is None or not 0.0 <= number < 1.0:
        raise ValueError(
            f"`{name}` must be a number in [0, 1). Received: {name}={value!r}"
        )
    return number


def positive_number(name: str, value: Any) -> float:
    """Returns a finite number > 0 as a `float`, or raises."""
    number = _real(value)
    if number is None or not math.isfinite(number) or not number > 0:
        shown = value if len(repr(value)) < 40 else f"{repr(value)[:37]}..."
        raise ValueError(
            f"`{name}` must be a finite positive number. Received: {name}={shown!r}"
        )
    return number


def optional(check: Callable[[str, Any], Any], name: str, value: Any) -> Any:
    """Returns `None` for `None`, else `check(name, value)`."""
    return None if value is None else check(name, value)


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Returns `value` if it is one of `choices`, or raises."""
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(
            f"`{name}` must be one of {listed}. Received: {name}={value!r}"
        )
    return value


def boolean(name: str, value: Any) -> bool:
    """Returns `value` as a `bool`, or raises if it is not `True` or `False`.

    A string such as `"False"` is refused: `bool("False")` is `True`.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def padding(value: Any) -> str:
    """Returns the padding in lower case, or raises if it is unknown."""
    if not isinstance(value, str) or value.lower() not in _PADDINGS:
        raise ValueError(
            f"`padding` must be one of 'same' or 'valid'. Received: padding={value!r}"
        )
    return value.lower()


def data_format(value: Any) -> str:
    """Returns the data format, Keras's default for `None`, or raises."""
    if value is None:
        return keras.config.image_data_format()
    if not isinstance(value, str) or value.lower() not in _DATA_FORMATS:
        raise ValueError(
            "`data_format` must be one of 'channels_last', 'channels_first' "
            f"or None. Received: data_format={value!r}"
        )
    return value.lower()


def activation(name: str, value: Any):
    """Returns the Keras activation function for `value`, or raises."""
    try:
        return keras.activations.get(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"`{name}` must be the name of a Keras activation (such as "
            f"'relu') or a callable. Received: {name}={value!r}"
        ) from None
