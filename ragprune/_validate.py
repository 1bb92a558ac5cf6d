"""Argument checks shared by every public entry point.

Messages name the class or function (``owner``), what was expected, and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from numbers import Integral, Real
from typing import Any


def check_query(query: Any, owner: str) -> str:
    """Return ``query`` if it is a non-blank string, else raise TypeError/ValueError."""
    if not isinstance(query, str):
        raise TypeError(f"{owner}: query must be a str, got {type(query).__name__}.")
    if not query.strip():
        raise ValueError(f"{owner}: query is empty or whitespace; pass a non-empty question.")
    return query


def check_queries(queries: Any, owner: str) -> list[str]:
    """Validate a batch of queries (a list/tuple of non-blank strings; may be empty).

    Mappings and sets are refused: their iteration order is not an order the caller chose, and
    results come back in input order.
    """
    if isinstance(queries, (str, bytes, Mapping, AbstractSet)) or not isinstance(queries, Iterable):
        raise TypeError(
            f"{owner}: queries must be a list of str, got {type(queries).__name__}; "
            "use the single-query method for one string."
        )
    return [check_query(q, owner) for q in queries]


def check_positive_int(value: Any, name: str, owner: str) -> int:
    """Return ``value`` as int if it is an integer > 0 (numpy ints accepted, bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"{owner}: {name} must be >= 1, got {value}.")
    return int(value)


def check_choice(value: Any, choices: Sequence[str], name: str, owner: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        raise ValueError(
            f"{owner}: unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}."
        )
    return value


def check_number(value: Any, name: str, owner: str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> float:
    """Return ``value`` as float if it is a finite real number inside the given bounds."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}.")
    v = float(value)
    if v != v:
        raise ValueError(f"{owner}: {name} must not be NaN.")
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {v}.")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}, got {v}.")
    if high is not None and v > high:
        raise ValueError(f"{owner}: {name} must be <= {high}, got {v}.")
    return v
