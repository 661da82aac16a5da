"""Argument checks shared by graft's public classes and functions.

NumPy scalars count as numbers (``np.int64(8)``, ``np.float32(0.3)``); a
wrong type is a ``TypeError``, a value out of range (NaN and inf included)
a ``ValueError``, and every message names the parameter, the value and a
value that works.
"""

from __future__ import annotations

import math
import numbers

from maxvol_kit.utils import check_flag as _check_flag

__all__ = ["check_choice", "check_count", "check_flag", "check_number"]


def check_choice(name, value, choices):
    """``value``, one of the strings ``choices`` (TypeError for a non-string)."""
    listed = " or ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be {listed}, got {type(value).__name__} {value!r}."
        )
    if value not in choices:
        raise ValueError(f"{name} ({value!r}) must be {listed}.")
    return value


def check_flag(name, value):
    """``value`` as a bool; strings, None and numbers are refused (TypeError)."""
    return _check_flag(value, name=name)


def check_count(name, value, low=1, *, example=None):
    """``value`` as an int ``>= low``."""
    kind = "a positive integer" if low == 1 else f"an integer >= {low}"
    example = low if example is None else example
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be {kind}, got {type(value).__name__} {value!r}; e.g. "
            f"{name}={example}."
        )
    if value < low:
        raise ValueError(f"{name} ({value!r}) must be {kind}; e.g. {name}={example}.")
    return int(value)


def check_number(
    name, value, *, low, high=math.inf, open_low=False, open_high=False, example
):
    """``value`` as a finite float in the interval from ``low`` to ``high``.

    ``open_low`` / ``open_high`` exclude the ends; ``high=inf`` means no
    upper bound.
    """
    left, right = (
        "(" if open_low else "[",
        ")" if open_high or high == math.inf else "]",
    )
    interval = f"{left}{low:g}, {high:g}{right}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number in {interval}, got {type(value).__name__} "
            f"{value!r}; e.g. {name}={example}."
        )
    number = float(value)
    inside = (low < number if open_low else low <= number) and (
        number < high if open_high else number <= high
    )
    if not (math.isfinite(number) and inside):
        raise ValueError(
            f"{name} ({value!r}) must be a finite number in {interval}; e.g. "
            f"{name}={example}."
        )
    return number
