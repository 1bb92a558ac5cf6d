"""One token budget for every stage: keep the highest-value units until the budget is met.

A *unit* is whatever a scorer ranked: a document, a sentence, an HTML block. Scoring and
budgeting are separate steps (as in HtmlRAG's ``prune_HTML``): scorers order units, this
function decides what fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ._validate import check_positive_int
from .text import TokenCounter, count_tokens

__all__ = ["Unit", "Budgeted", "fill_budget"]


@dataclass(frozen=True)
class Unit:
    """A scored piece of text.

    Attributes:
        group: Which document (or page) the unit belongs to; output keeps groups together.
        position: Order of the unit inside its group (output keeps this order).
        text: The unit's text.
        score: Value of the unit; higher is kept first.
    """

    group: int
    position: int
    text: str
    score: float


@dataclass(frozen=True)
class Budgeted:
    """Result of :func:`fill_budget`.

    Attributes:
        units: Kept units, grouped by ``group`` (groups in order of their best unit) and in
            ``position`` order inside a group.
        tokens: Tokens of the kept units (by the counter used).
        truncated: True when even the best unit exceeded the budget, so it was cut to fit.
    """

    units: tuple[Unit, ...]
    tokens: int
    truncated: bool


def _truncate(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """Longest word-boundary prefix of ``text`` with at most ``max_tokens`` tokens; when not even
    the first word fits (one long run without spaces), the longest character prefix that does."""
    words = text.split(" ")
    n = _longest(len(words), lambda m: counter(" ".join(words[:m])) <= max_tokens)
    if n:
        return " ".join(words[:n])
    return text[: _longest(len(words[0]), lambda m: counter(words[0][:m]) <= max_tokens)]


def _longest(size: int, fits: Callable[[int], bool]) -> int:
    """Largest ``m`` in ``[0, size]`` with ``fits(m)`` (binary search; ``fits`` is monotone)."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _rankable(score: float) -> float:
    """A unit's score for ordering: NaN ranks last (as -inf) instead of scrambling the sort."""
    return -math.inf if score != score else score


def fill_budget(units: Sequence[Unit], max_tokens: int, counter: TokenCounter = count_tokens,
                group_cost: Mapping[int, int] | None = None) -> Budgeted:
    """Keep the highest-scoring units whose tokens fit in ``max_tokens``.

    Greedy by score (ties: lower group, then lower position); a unit that does not fit is
    skipped and smaller ones may still fill the rest. ``group_cost`` charges extra tokens the
    first time a group is used (e.g. a citation header per document). If no unit fits at all,
    the best unit is truncated to the budget and ``truncated`` is set, so the result is never
    empty for non-empty input, unless the best unit's ``group_cost`` alone uses the whole
    budget (then nothing is kept and ``truncated`` is set).

    Raises:
        ValueError/TypeError: ``max_tokens`` is not a positive int, ``units`` is not a sequence
            of :class:`Unit`, or ``group_cost`` is not a mapping.
    """
    check_positive_int(max_tokens, "max_tokens", "fill_budget")
    if isinstance(units, (str, bytes)) or not isinstance(units, Sequence):
        raise TypeError(f"fill_budget: units must be a list of Unit, got {type(units).__name__}.")
    for i, u in enumerate(units):
        if not isinstance(u, Unit):
            raise TypeError(f"fill_budget: unit {i} is a {type(u).__name__}; build units with ragprune.budget.Unit.")
    if group_cost is not None and not isinstance(group_cost, Mapping):
        raise TypeError(f"fill_budget: group_cost must be a mapping group -> tokens, got {type(group_cost).__name__}.")
    order = sorted(range(len(units)), key=lambda i: (-_rankable(units[i].score), units[i].group, units[i].position))
    extra = group_cost or {}
    kept: list[Unit] = []
    opened: set[int] = set()
    used = 0
    for i in order:
        u = units[i]
        n = counter(u.text) + (0 if u.group in opened else extra.get(u.group, 0))
        if used + n <= max_tokens:
            kept.append(u)
            opened.add(u.group)
            used += n
    truncated = False
    if not kept and order:
        best = units[order[0]]
        head = extra.get(best.group, 0)
        if head >= max_tokens:  # not even the group's header fits: nothing can be kept
            return Budgeted((), 0, True)
        cut = _truncate(best.text, max_tokens - head, counter)
        kept, used, truncated = [Unit(best.group, best.position, cut, best.score)], counter(cut) + head, True
    rank = {}
    for u in sorted(kept, key=lambda u: (-_rankable(u.score), u.group, u.position)):
        rank.setdefault(u.group, len(rank))
    kept.sort(key=lambda u: (rank[u.group], u.position))
    return Budgeted(tuple(kept), used, truncated)
