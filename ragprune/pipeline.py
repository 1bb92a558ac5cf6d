"""Retrieve -> rerank -> prune -> one token budget: the context an LLM should read."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ._validate import check_positive_int, check_queries, check_query
from .budget import Unit, fill_budget
from .prune.base import Pruner, build_pruned
from .rerank.base import Reranker
from .retrieve.base import Retriever
from .text import TokenCounter, checked_counter, count_tokens, sentence_spans
from .types import PrunedDocument, ScoredDocument

__all__ = ["Pipeline", "Context", "fit_context"]


@dataclass(frozen=True)
class Context:
    """What :meth:`Pipeline.run` returns.

    Attributes:
        query: The question.
        text: The final context: one block per document, ``[doc id] title`` then its kept text,
            documents in relevance order.
        documents: The documents in ``text`` with their kept sentences (after the budget).
        tokens: Tokens in ``text`` (by the pipeline's token counter).
        truncated: True when the budget was smaller than the best sentence, which was cut.
        stats: Seconds per stage (``seconds_retrieve`` ...), tokens after each stage
            (``tokens_candidates``: bodies of the top documents unpruned; ``tokens_pruned``;
            ``tokens_final``: the whole context with headers), ``backfilled_sentences``
            (sentences added to fill the budget beyond what the pruner kept) and
            ``compression`` (share of the candidates' body tokens removed).
    """

    query: str
    text: str
    documents: tuple[PrunedDocument, ...]
    tokens: int
    truncated: bool
    stats: Mapping[str, float] = field(default_factory=dict)


class Pipeline:
    """Wire the stages; every stage but the retriever is optional.

    Args:
        retriever: Any :class:`~ragprune.retrieve.base.Retriever`.
        reranker: Optional :class:`~ragprune.rerank.base.Reranker` applied to the candidates.
            Pass the pruner itself (a :class:`~ragprune.ProvencePruner`) for the one-pass
            preset (:attr:`one_pass`): one model ranks all candidates and prunes the best.
        pruner: Optional :class:`~ragprune.prune.base.Pruner` applied to the top documents. Its
            options hold in the context: documents come in the order the pruner returns them
            (the reranker's, or the pruner's own with ``reorder=True``, which may also drop
            documents with ``top_k``), and each document's text is assembled by the pruner
            (:meth:`~ragprune.prune.base.Pruner.select`: sentence order, title...) from the
            sentences the budget kept; text the pruner adds (a title) is charged to the budget.
        max_tokens: The one budget for the final context.
        candidates: How many documents the retriever returns (the reranker's input).
        top_k: How many documents go on to pruning and budgeting.
        token_counter: Counts tokens for the budget and the stats.
        backfill: When the pruner's kept sentences leave part of the budget unused, fill it with
            the sentences it dropped: best-ranked document first, and within a document the
            best sentences by the pruner's score first. With ``False`` the context is exactly what
            the pruner kept, which can be empty when a threshold pruner finds nothing relevant.
            Pruners without sentence scores are never backfilled. ``"kept-documents"`` backfills
            only from the documents the pruner kept a sentence of (the best-ranked document when
            it kept none), so the budget completes the relevant passages instead of adding
            sentences of passages the pruner judged off-topic; the rest of the budget stays unused.

    Example:
        >>> pipe = Pipeline(BM25Retriever.from_documents(docs), CrossEncoderReranker(),   # doctest: +SKIP
        ...                 ProvencePruner(), max_tokens=1000)
        >>> ctx = pipe.run("what causes scurvy")                                          # doctest: +SKIP
        >>> print(ctx.text, ctx.stats["compression"])                                     # doctest: +SKIP
    """

    def __init__(self, retriever: Retriever, reranker: Reranker | None = None, pruner: Pruner | None = None, *,
                 max_tokens: int = 1000, candidates: int = 100, top_k: int = 10,
                 token_counter: TokenCounter = count_tokens, backfill: bool | str = True) -> None:
        owner = "Pipeline"
        if not callable(getattr(retriever, "retrieve_many", None)):
            raise TypeError(f"{owner}: retriever must have retrieve_many(queries, k), got {type(retriever).__name__}.")
        if reranker is not None and not callable(getattr(reranker, "rerank_many", None)):
            raise TypeError(f"{owner}: reranker must have rerank_many(queries, docs, k), got {type(reranker).__name__}.")
        if pruner is not None and not callable(getattr(pruner, "prune_many", None)):
            raise TypeError(f"{owner}: pruner must have prune_many(queries, docs), got {type(pruner).__name__}.")
        if not callable(token_counter):
            raise TypeError(f"{owner}: token_counter must be callable (text -> int), got {type(token_counter).__name__}.")
        self.retriever, self.reranker, self.pruner = retriever, reranker, pruner
        self.max_tokens = check_positive_int(max_tokens, "max_tokens", owner)
        self.candidates = check_positive_int(candidates, "candidates", owner)
        self.top_k = check_positive_int(top_k, "top_k", owner)
        self.token_counter = checked_counter(token_counter, owner)
        if not isinstance(backfill, bool) and backfill != "kept-documents":
            raise TypeError(f"{owner}: backfill must be True, False or 'kept-documents', got {backfill!r}.")
        self.backfill = backfill

    @property
    def one_pass(self) -> bool:
        """True when the reranker *is* the pruner (``Pipeline(r, pruner, pruner)``).

        A Provence-style pruner scores the passage and its sentences in the same forward pass,
        so the pipeline then calls it once on all ``candidates``: documents are ordered by its
        ranking score, the best ``top_k`` are kept with their sentence scores, and no second
        model runs (``stats["seconds_rerank"]`` holds the single pass, ``seconds_prune`` is 0).
        """
        return self.pruner is not None and self.reranker is self.pruner

    def run(self, query: str) -> Context:
        """Build the context for one question (see :class:`Context`)."""
        return self.run_many([query])[0]

    def run_many(self, queries: Sequence[str]) -> list[Context]:
        """Batched :meth:`run`: each stage processes all queries at once."""
        qs = check_queries(queries, "Pipeline.run")
        if not qs:
            return []
        stats: list[dict[str, float]] = [{} for _ in qs]
        t = time.perf_counter()
        hits = self.retriever.retrieve_many(qs, k=max(self.candidates, self.top_k))
        self._time(stats, "retrieve", t)
        t = time.perf_counter()
        if self.one_pass:  # one model pass per candidate: its ranking score and its sentence scores
            pruned = [sorted(p, key=lambda d: -d.score)[: self.top_k] for p in self.pruner.prune_many(qs, hits)]
            top = [[ScoredDocument(d.document, d.score) for d in p] for p in pruned]
            self._time(stats, "rerank", t)
            for st in stats:
                st["seconds_prune"] = 0.0  # nothing left to do
        else:
            if self.reranker is not None:
                top = self.reranker.rerank_many(qs, hits, k=self.top_k)
            else:
                top = [h[: self.top_k] for h in hits]
            self._time(stats, "rerank", t)
            t = time.perf_counter()
            pruned = (self.pruner.prune_many(qs, top) if self.pruner is not None
                      else [[self._keep_all(h) for h in hs] for hs in top])
            self._time(stats, "prune", t)
        t = time.perf_counter()
        out = [self._budget(q, ranked, p, s) for q, ranked, p, s in zip(qs, top, pruned, stats)]
        self._time(stats, "budget", t)
        return out

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _time(stats: list[dict[str, float]], stage: str, start: float) -> None:
        dt = (time.perf_counter() - start) / len(stats)
        for s in stats:
            s[f"seconds_{stage}"] = dt

    def _keep_all(self, hit: ScoredDocument) -> PrunedDocument:
        spans = sentence_spans(hit.document.text)
        return build_pruned(hit.document, spans, range(len(spans)), hit.score, self.token_counter)

    def _budget(self, query: str, ranked: list[ScoredDocument], pruned: list[PrunedDocument],
                stats: dict[str, float]) -> Context:
        # documents in the pruner's order: the reranker's, unless the pruner reorders them itself
        fit = _fit(pruned, self.max_tokens, self.pruner, self.token_counter, self.backfill, headers=True)
        candidates = sum(self.token_counter(h.document.text) for h in ranked)
        stats.update(_stats(fit, pruned, candidates, self.token_counter))
        return Context(query, fit.text, tuple(fit.documents), fit.tokens, fit.truncated, MappingProxyType(stats))

    def __repr__(self) -> str:
        parts = [repr(self.retriever), repr(self.reranker), repr(self.pruner)]
        return f"Pipeline({', '.join(parts)}, max_tokens={self.max_tokens})"



def fit_context(query: str, pruned: Sequence[PrunedDocument], max_tokens: int, *, pruner: Pruner | None = None,
                token_counter: TokenCounter = count_tokens, backfill: bool | str = True,
                headers: bool = True) -> Context:
    """The budget step of :class:`Pipeline` on its own: fit pruned documents into one budget.

    Exactly what :meth:`Pipeline.run` does after pruning, so a caller that already has
    :class:`~ragprune.types.PrunedDocument` s (the CLI's ``prune``, a custom retriever) gets the
    same context: the pruner's kept sentences first (documents in the given order), then, with
    ``backfill``, the sentences it dropped by their pruner score; each document's text is
    assembled by ``pruner`` (:meth:`~ragprune.prune.base.Pruner.select`: its sentence order,
    its title) and what it adds is charged to the budget.

    Args:
        query: The question (recorded in the result).
        pruned: Pruned documents, most relevant first (e.g. a pruner's output); they must carry
            ``spans`` (every ragprune pruner sets them).
        max_tokens: The budget for the whole context text (>= 1).
        pruner: The pruner that made ``pruned``, whose text options apply; ``None`` joins the
            chosen sentences in document order.
        token_counter: Counts tokens for the budget.
        backfill: ``True``, ``False`` or ``"kept-documents"``, as for :class:`Pipeline`.
        headers: Start each document's block with ``[id] title`` (as :class:`Pipeline` does);
            ``False`` joins the documents' texts alone (a blank line between documents).

    Returns:
        A :class:`Context`; ``stats`` has ``tokens_candidates`` (bodies of ``pruned``),
        ``tokens_pruned``, ``tokens_final``, ``backfilled_sentences`` and ``compression``.

    Raises:
        TypeError/ValueError: blank query, ``max_tokens < 1``, ``pruned`` not a list of
            ``PrunedDocument``, a bad ``backfill``, or documents without spans.

    Example:
        >>> from ragprune import Document
        >>> from ragprune.prune.baselines import LeadPruner
        >>> docs = [Document(id="a", text="Tea is green. Coffee is black. Milk is white.")]
        >>> fit_context("tea", LeadPruner(k=1).prune("tea", docs), 20, headers=False).text
        'Tea is green. Coffee is black. Milk is white.'
    """
    owner = "fit_context"
    check_query(query, owner)
    max_tokens = check_positive_int(max_tokens, "max_tokens", owner)
    if isinstance(pruned, (str, bytes)) or not isinstance(pruned, Sequence):
        raise TypeError(f"{owner}: pruned must be a list of PrunedDocument, got {type(pruned).__name__}.")
    for i, p in enumerate(pruned):
        if not isinstance(p, PrunedDocument):
            raise TypeError(f"{owner}: item {i} is a {type(p).__name__}; pass a pruner's PrunedDocument results.")
    if not isinstance(backfill, bool) and backfill != "kept-documents":
        raise TypeError(f"{owner}: backfill must be True, False or 'kept-documents', got {backfill!r}.")
    counter = checked_counter(token_counter, owner)
    pruned = list(pruned)
    fit = _fit(pruned, max_tokens, pruner, counter, backfill, headers=bool(headers))
    stats = _stats(fit, pruned, sum(counter(p.document.text) for p in pruned), counter)
    return Context(query, fit.text, tuple(fit.documents), fit.tokens, fit.truncated, MappingProxyType(stats))


@dataclass(frozen=True)
class _Fit:
    documents: list[PrunedDocument]
    text: str
    tokens: int
    truncated: bool
    units: list[Unit]


def _select(pruner: Pruner | None, p: PrunedDocument, positions: Sequence[int], counter: TokenCounter
            ) -> PrunedDocument:
    """Document ``p`` with the sentences ``positions``, its text assembled by the pruner."""
    if pruner is not None and callable(getattr(pruner, "select", None)):
        return pruner.select(p, positions)
    if p.sentences and not p.spans:
        raise ValueError(f"Pipeline: document {p.id!r} has no sentence spans; pruners must build results with "
                         "ragprune.prune.base.build_pruned (or implement Pruner.select).")
    return build_pruned(p.document, p.spans, positions, p.score, counter, sentence_scores=p.sentence_scores or None)


def _units(pruned: list[PrunedDocument], backfill: bool | str) -> list[Unit]:
    """Budget units: the pruner's kept sentences first, in the given document order (scores in
    (1, 2]); then, with ``backfill``, the other sentences, again in document order and within a
    document by their pruner score (scores in (0, 1)); with ``"kept-documents"`` only from
    documents with a kept sentence."""
    n = max(1, len(pruned))
    units = [Unit(g, j, p.sentences[j], 2.0 - g / n) for g, p in enumerate(pruned) for j in p.kept]
    if backfill:
        groups = set(range(len(pruned)))
        if backfill == "kept-documents":
            groups = {g for g, p in enumerate(pruned) if p.kept} or {0}
        rest = [(s, g, j) for g, p in enumerate(pruned) if g in groups and len(p.sentence_scores) == len(p.sentences)
                for kept in [set(p.kept)] for j, s in enumerate(p.sentence_scores) if j not in kept]
        rest.sort(key=lambda r: (r[1], -r[0], r[2]))
        units += [Unit(g, j, pruned[g].sentences[j], 1.0 - (i + 1) / (len(rest) + 1))
                  for i, (_, g, j) in enumerate(rest)]
    return units


def _fit(pruned: list[PrunedDocument], max_tokens: int, pruner: Pruner | None, counter: TokenCounter,
         backfill: bool | str, *, headers: bool) -> _Fit:
    """Choose sentences with :func:`~ragprune.budget.fill_budget` and render the context."""
    header = {g: f"[{p.id}] {p.document.title}".rstrip() if headers else "" for g, p in enumerate(pruned)}
    # a document costs its header plus any text the pruner adds around its sentences (a title)
    cost = {g: counter(h) + counter(_select(pruner, pruned[g], [], counter).text) for g, h in header.items()}
    budget = fill_budget(_units(pruned, backfill), max_tokens, counter, group_cost=cost)
    chosen = list(budget.units)
    while True:
        docs, text = _render(pruned, header, chosen, budget.truncated, pruner, counter)
        tokens = counter(text)
        if tokens <= max_tokens or len(chosen) <= 1:
            return _Fit(docs, text, tokens, budget.truncated, chosen)
        # a counter that is not additive over joined text: drop the least valuable unit
        chosen.remove(min(chosen, key=lambda u: (u.score, -u.group, -u.position)))


def _render(pruned: list[PrunedDocument], header: Mapping[int, str], chosen: Sequence[Unit], truncated: bool,
            pruner: Pruner | None, counter: TokenCounter) -> tuple[list[PrunedDocument], str]:
    """The budgeted documents (pruner-assembled) and the context text, in budget group order."""
    kept: dict[int, list[int]] = {}
    for u in chosen:
        kept.setdefault(u.group, []).append(u.position)
    docs, blocks = [], []
    for g, positions in kept.items():
        doc = _select(pruner, pruned[g], positions, counter)
        if truncated:  # the best sentence alone was over budget and was cut
            doc = replace(doc, text=chosen[0].text)
        docs.append(doc)
        blocks.append(f"{header[g]}\n{doc.text}" if header[g] else doc.text)
    return docs, "\n\n".join(blocks)


def _stats(fit: _Fit, pruned: list[PrunedDocument], candidates: int, counter: TokenCounter) -> dict[str, float]:
    body = sum(counter(d.text) for d in fit.documents)
    return {"tokens_candidates": float(candidates),
            "tokens_pruned": float(sum(counter(p.text) for p in pruned)),
            "tokens_final": float(fit.tokens),
            "backfilled_sentences": float(sum(u.score < 1.0 for u in fit.units)),
            "compression": max(0.0, 1.0 - body / candidates) if candidates else 0.0}
