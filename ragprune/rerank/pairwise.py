"""Pairwise Ranking Prompting (PRP; Qin et al., "Large Language Models are Effective Text
Rankers with Pairwise Ranking Prompting").

The LLM sees the query and two passages and says which is more relevant. Each comparison is
asked in both orders (A/B and B/A); when the two answers disagree the comparison is a tie,
which removes most of the position bias of small models. Three ways to turn comparisons into a
ranking, with the paper's call counts for ``n`` candidates (``x2`` for both orders):

* ``allpair``: every pair, ``n(n-1)/2`` comparisons; a document's score is its wins (+0.5 per tie).
* ``sliding``: ``k`` bubble-sort passes from the bottom of the list to the top; at most
  ``k(n-1)`` comparisons (pass ``p`` stops at position ``p``, which is already final).
* ``heapsort``: a max-heap over the candidates, then ``k`` pops: ``O(n + k log n)`` comparisons.

Malformed or empty LLM output counts as a tie, is logged and counted in the stats, and never
stops the ranking; an unreachable server raises (see :mod:`ragprune.rerank.llm`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._validate import check_choice, check_positive_int
from ..types import Document, ScoredDocument
from .base import Reranker
from .llm import LLMBackend, LLMResponseError, pick_label

__all__ = ["PairwiseReranker", "PairwiseStats", "PairwiseResult", "PRP_PROMPT", "PROMPTS", "prp_counts"]

logger = logging.getLogger(__name__)

#: The paper's prompt (generation variant); ``{query}``, ``{a}`` and ``{b}`` are filled in.
PRP_PROMPT = (
    'Given a query "{query}", which of the following two passages is more relevant to the query?\n\n'
    'Passage A: "{a}"\n\nPassage B: "{b}"\n\nOutput Passage A or Passage B:'
)
#: Prompt variants measured by ``eval/prp_pairs.py`` (``PairwiseReranker(prompt=PROMPTS[name])``).
#: ``query-last`` repeats the query after the passages, next to the question the model answers;
#: ``instruct`` states the task first and asks for exactly one of the two labels.
PROMPTS = {
    "paper": PRP_PROMPT,
    "query-last": (
        'Query: "{query}"\n\nPassage A: "{a}"\n\nPassage B: "{b}"\n\n'
        'Which passage is more relevant to the query "{query}"? Output Passage A or Passage B:'
    ),
    "instruct": (
        "You judge search results. Read the query and the two passages, then decide which passage "
        "better answers or supports the query. Judge only the content, not the order.\n\n"
        "Query: {query}\n\nPassage A: {a}\n\nPassage B: {b}\n\n"
        'Reply with exactly "Passage A" or "Passage B".'
    ),
}
LABELS = ("A", "B")
METHODS = ("sliding", "heapsort", "allpair")


@dataclass(frozen=True)
class PairwiseStats:
    """What one ranking cost.

    Attributes:
        method: ``sliding``, ``heapsort`` or ``allpair``.
        candidates: Number of candidates ranked.
        comparisons: Document comparisons made (each is 1 or 2 LLM calls).
        llm_calls: Calls that reached the LLM (cache hits excluded).
        cache_hits: Prompts answered from the per-call cache.
        prompt_tokens / completion_tokens: As reported by the backend.
        seconds: Wall time of the ranking.
        disagreements: Comparisons whose two orders gave opposite answers (counted as ties).
        failures: LLM answers that named no label (malformed/empty; counted as ties).
        gated: Comparisons turned into ties by ``min_margin``.
        budget_exhausted: ``max_calls`` was reached; later comparisons were ties.
    """

    method: str
    candidates: int = 0
    comparisons: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    disagreements: int = 0
    failures: int = 0
    gated: int = 0
    budget_exhausted: bool = False

    @property
    def disagreement_rate(self) -> float:
        """Share of both-order comparisons whose orders disagreed."""
        return self.disagreements / self.comparisons if self.comparisons else 0.0


class PairwiseResult(list):
    """A ``list[ScoredDocument]`` (best first) that also carries :class:`PairwiseStats` as ``.stats``."""

    def __init__(self, items: Sequence[ScoredDocument], stats: PairwiseStats) -> None:
        super().__init__(items)
        self.stats = stats


class _Session:
    """State of one ranking call: the cache, counters and the call budget."""

    def __init__(self, reranker: PairwiseReranker, query: str, docs: list[Document]) -> None:
        self.r, self.query = reranker, query
        self.texts = [reranker._passage(d) for d in docs]
        self.cache: dict[tuple[int, int], tuple[str | None, float | None]] = {}
        self.calls = self.hits = self.comparisons = self.disagreements = self.failures = self.gated = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.exhausted = False
        self.last_a = -1

    def ask(self, a: int, b: int) -> tuple[str | None, float | None]:
        """With ``a`` as Passage A and ``b`` as Passage B: the label the LLM picks and its
        log-probability margin ``logP(A) - logP(B)`` (``None`` when the backend gives no logprobs)."""
        key = (a, b)
        if self.r.cache and key in self.cache:
            self.hits += 1
            return self.cache[key]
        if self.r.max_calls is not None and self.calls >= self.r.max_calls:
            if not self.exhausted:
                logger.warning("PairwiseReranker: max_calls=%d reached; remaining comparisons are ties",
                               self.r.max_calls)
            self.exhausted = True
            return None, None
        prompt = self.r.prompt.format(query=self.query, a=self.texts[a], b=self.texts[b])
        self.calls += 1
        margin = None
        try:
            reply = self.r.llm.choose(prompt, LABELS, answer_prefix="Passage ")
        except LLMResponseError as e:
            logger.warning("PairwiseReranker: unusable LLM reply counted as a tie: %s", e)
            label = None
        else:
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
            label = pick_label(reply, LABELS)
            lp = reply.label_logprobs or {}
            if all(isinstance(lp.get(x), float) and math.isfinite(lp[x]) for x in LABELS):
                margin = lp["A"] - lp["B"]
            if label is None:
                logger.info("PairwiseReranker: LLM output names no passage, counted as a tie: %r", reply.text[:80])
        if label is None:
            self.failures += 1
        self.cache[key] = (label, margin)
        return label, margin

    def compare(self, i: int, j: int) -> int:
        """+1 if document ``i`` is more relevant than ``j``, -1 if less, 0 for a tie."""
        self.comparisons += 1
        if not self.r.both_orders:
            self.last_a = i
            return {"A": 1, "B": -1}.get(self.ask(i, j)[0] or "", 0)
        # Ask first the order whose Passage A was Passage A of the previous prompt: servers
        # with prompt caching (llama.cpp, vLLM) then reuse the KV of the shared prefix.
        if self.last_a == j:
            (l2, m2), (l1, m1) = self.ask(j, i), self.ask(i, j)
            self.last_a = i
        else:
            (l1, m1), (l2, m2) = self.ask(i, j), self.ask(j, i)
            self.last_a = j
        v1, v2 = {"A": 1, "B": -1}.get(l1 or "", 0), {"A": -1, "B": 1}.get(l2 or "", 0)
        if v1 and v2 and v1 != v2:
            self.disagreements += 1
        # m1 = bias + s, m2 = bias - s: the difference cancels a constant position bias
        s = m1 - m2 if m1 is not None and m2 is not None else None
        if self.r.min_margin and s is not None and abs(s) <= self.r.min_margin:
            self.gated += 1
            return 0  # not confident enough to overrule the input order
        if self.r.decision == "margin" and s is not None:
            return 1 if s > 0 else -1 if s < 0 else 0
        return v1 if v1 == v2 else 0


class PairwiseReranker(Reranker):
    """Rerank with an LLM comparing two passages at a time (PRP).

    A list-wise :class:`~ragprune.rerank.base.Reranker` only: it compares candidates with each
    other and has no pointwise ``score()`` (it is not a :class:`~ragprune.rerank.base.Scorer`,
    so it cannot be an ``HtmlPruner`` block scorer). Scores of the candidates' first stage are
    not used; ``model_score`` equals ``score``.

    Args:
        llm: Any :class:`~ragprune.rerank.llm.LLMBackend` (local transformers model,
            OpenAI-compatible server, in-process llama.cpp, or a Python callable).
        method: ``"sliding"`` (default), ``"heapsort"`` or ``"allpair"``.
        k: How many top positions ``sliding`` and ``heapsort`` sort (the paper's K); the rest
            keep their input order. ``allpair`` always orders everything.
        both_orders: Ask each comparison as A/B and B/A; disagreement -> tie.
        decision: How a both-order comparison is decided. ``"labels"`` (the paper's rule):
            ``i`` wins only when both orders pick it; otherwise a tie. ``"margin"``: when the
            backend exposes label log-probabilities, ``i`` wins when
            ``[logP(A)-logP(B)]`` with ``i`` as A exceeds the same margin with ``j`` as A,
            which cancels a constant preference for one position (small models often prefer
            Passage A whatever it says); falls back to ``"labels"`` without log-probabilities.
        min_margin: Confidence gate (>= 0; default 0, no gate). With both orders and label
            log-probabilities, a comparison whose debiased margin ``|s|`` (``s`` as above, in
            nats) is at most ``min_margin`` is a tie whatever the decision rule says, so
            ``sliding`` and ``heapsort`` keep the first-stage order unless the LLM is sure.
            Pick it on training queries with ``python -m eval.prp_pairs --split train``; it has
            no effect on backends without log-probabilities or with ``both_orders=False``.
        max_calls: Hard cap on LLM calls per query (``None``: no cap); once reached, the
            remaining comparisons are ties and ``stats.budget_exhausted`` is set.
        max_passage_words: Passages are cut to this many words in the prompt.
        prompt: Template with ``{query}``, ``{a}`` and ``{b}``.
        cache: Reuse answers to identical prompts within one ranking.

    ``rerank()`` returns a :class:`PairwiseResult`: ``ScoredDocument`` s best first (the score
    is ``n - rank`` for sliding/heapsort and the win count for allpair) with ``.stats``;
    ``rerank_many()`` one per query, each with its own cache and call budget.

    Raises:
        TypeError/ValueError: at construction, for invalid options; in ``rerank``, for a blank
            query, ``k < 1`` or malformed candidates (as every reranker).

    Example:
        >>> from ragprune.rerank.llm import CallableLLM
        >>> def longer(prompt):  # a toy judge: the longer passage wins
        ...     a = prompt.split('Passage A: "')[1].split('"')[0]
        ...     b = prompt.split('Passage B: "')[1].split('"')[0]
        ...     return "Passage A" if len(a) > len(b) else "Passage B"
        >>> r = PairwiseReranker(CallableLLM(longer), method="allpair")
        >>> [d.id for d in r.rerank("q", ["bb", "a", "ccc"])]
        ['2', '0', '1']
    """

    def __init__(self, llm: LLMBackend, method: str = "sliding", k: int = 10, *, both_orders: bool = True,
                 decision: str = "labels", min_margin: float = 0.0, max_calls: int | None = None,
                 max_passage_words: int = 128, prompt: str = PRP_PROMPT, cache: bool = True) -> None:
        owner = "PairwiseReranker"
        if not isinstance(llm, LLMBackend):
            raise TypeError(f"{owner}: llm must be an LLMBackend (wrap a function with CallableLLM), "
                            f"got {type(llm).__name__}.")
        self.method = check_choice(method, METHODS, "method", owner)
        self.k = check_positive_int(k, "k", owner)
        self.decision = check_choice(decision, ("labels", "margin"), "decision", owner)
        if isinstance(min_margin, bool) or not isinstance(min_margin, (int, float)) \
                or not math.isfinite(min_margin) or min_margin < 0:
            raise ValueError(f"{owner}: min_margin must be a finite number >= 0 (nats), got {min_margin!r}.")
        self.min_margin = float(min_margin)
        if max_calls is not None:
            check_positive_int(max_calls, "max_calls", owner)
        check_positive_int(max_passage_words, "max_passage_words", owner)
        if not isinstance(prompt, str) or any(f"{{{f}}}" not in prompt for f in ("query", "a", "b")):
            raise ValueError(f"{owner}: prompt must be a str containing {{query}}, {{a}} and {{b}}.")
        try:
            prompt.format(query="", a="", b="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{owner}: prompt is not a valid template ({type(e).__name__}: {e}); it may use only "
                             "{query}, {a} and {b}; write literal braces as {{ and }}.") from e
        self.llm, self.both_orders, self.max_calls = llm, bool(both_orders), max_calls
        self.max_passage_words, self.prompt, self.cache = max_passage_words, prompt, bool(cache)

    def __repr__(self) -> str:
        return (f"PairwiseReranker({self.llm!r}, method={self.method!r}, k={self.k}, "
                f"both_orders={self.both_orders}, decision={self.decision!r}"
                f"{f', min_margin={self.min_margin:g}' if self.min_margin else ''}{self._prompt_repr()})")

    def _prompt_repr(self) -> str:
        """``, prompt=<name>`` for a non-default prompt (a named variant or its hash), so
        results and caches made with different prompts are told apart."""
        if self.prompt == PRP_PROMPT:
            return ""
        name = next((k for k, v in PROMPTS.items() if v == self.prompt), None)
        if name is None:
            name = "sha256:" + hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:12]
        return f", prompt={name!r}"

    def _passage(self, doc: Document) -> str:
        return " ".join(doc.full_text.split()[: self.max_passage_words])

    def _rerank_many(self, queries: list[str], docs: list[list[Document]], first_stage: list[list[float] | None],
                     k: int | None) -> list[list[ScoredDocument]]:
        """Each query in turn, each with its own cache and call budget (first-stage scores are
        reported as ``first_stage_score``, never used)."""
        return [self._rank(q, d, f, k) for q, d, f in zip(queries, docs, first_stage)]

    def _rank(self, query: str, cands: list[Document], first: list[float] | None, k: int | None) -> PairwiseResult:
        """Rank validated candidates for one query with the configured method."""
        start = time.perf_counter()
        session = _Session(self, query, cands)
        order, scores = getattr(self, f"_{self.method}")(session, len(cands))
        stats = PairwiseStats(
            method=self.method, candidates=len(cands), comparisons=session.comparisons, llm_calls=session.calls,
            cache_hits=session.hits, prompt_tokens=session.prompt_tokens,
            completion_tokens=session.completion_tokens, seconds=time.perf_counter() - start,
            disagreements=session.disagreements, failures=session.failures, gated=session.gated,
            budget_exhausted=session.exhausted)
        return PairwiseResult([ScoredDocument(cands[i], float(scores[i]), model_score=float(scores[i]),
                                              first_stage_score=None if first is None else first[i])
                               for i in order[:k]], stats)

    # -- the three methods: each returns (order, score per input index) -----------------

    @staticmethod
    def _positional(order: list[int]) -> tuple[list[int], list[float]]:
        n = len(order)
        scores = [0.0] * n
        for rank, i in enumerate(order):
            scores[i] = float(n - rank)
        return order, scores

    def _allpair(self, s: _Session, n: int) -> tuple[list[int], list[float]]:
        wins = [0.0] * n
        for i in range(n):
            for j in range(i + 1, n):
                c = s.compare(i, j)
                wins[i] += 1.0 if c > 0 else 0.5 if c == 0 else 0.0
                wins[j] += 1.0 if c < 0 else 0.5 if c == 0 else 0.0
        return sorted(range(n), key=lambda i: (-wins[i], i)), wins

    def _sliding(self, s: _Session, n: int) -> tuple[list[int], list[float]]:
        ranking = list(range(n))
        for p in range(min(self.k, max(n - 1, 0))):
            for pos in range(n - 2, p - 1, -1):  # bottom to top; positions above p are final
                lower, upper = ranking[pos + 1], ranking[pos]
                if s.compare(lower, upper) > 0:
                    ranking[pos], ranking[pos + 1] = lower, upper
        return self._positional(ranking)

    def _heapsort(self, s: _Session, n: int) -> tuple[list[int], list[float]]:
        heap = list(range(n))

        def better(a: int, b: int) -> bool:  # ties go to the earlier input position
            c = s.compare(a, b)
            return c > 0 or (c == 0 and a < b)

        def sift(root: int, size: int) -> None:
            while True:
                best, left, right = root, 2 * root + 1, 2 * root + 2
                if left < size and better(heap[left], heap[best]):
                    best = left
                if right < size and better(heap[right], heap[best]):
                    best = right
                if best == root:
                    return
                heap[root], heap[best] = heap[best], heap[root]
                root = best

        for root in range(n // 2 - 1, -1, -1):
            sift(root, n)
        top: list[int] = []
        size = n
        while size and len(top) < self.k:
            top.append(heap[0])
            size -= 1
            heap[0] = heap[size]
            sift(0, size)
        rest = sorted(heap[:size])  # unsorted tail keeps the input order
        return self._positional(top + rest)


def prp_counts(n: int, k: int, method: str, both_orders: bool = True) -> dict[str, Any]:
    """Upper bounds on LLM calls from the paper's analysis (used in docs and tests)."""
    per = 2 if both_orders else 1
    if method == "allpair":
        return {"max_calls": per * n * (n - 1) // 2}
    if method == "sliding":
        return {"max_calls": per * min(k, max(n - 1, 0)) * max(n - 1, 0)}
    log = math.ceil(math.log2(max(n, 2)))
    return {"max_calls": per * (2 * n + 2 * min(k, n) * log)}
