"""Retrieve -> rerank -> prune -> one token budget: the context an LLM should read."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ._validate import check_positive_int, check_queries
from .budget import Unit, fill_budget
from .prune.base import Pruner, build_pruned
from .rerank.base import Reranker
from .retrieve.base import Retriever
from .text import TokenCounter, checked_counter, count_tokens, sentence_spans
from .types import PrunedDocument, ScoredDocument

__all__ = ["Pipeline", "Context"]


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
        if self.reranker is not None:
            top = self.reranker.rerank_many(qs, hits, k=self.top_k)
        else:
            top = [h[: self.top_k] for h in hits]
        self._time(stats, "rerank", t)
        t = time.perf_counter()
        pruned = self.pruner.prune_many(qs, top) if self.pruner is not None else [[self._keep_all(h) for h in hs] for hs in top]
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

    def _select(self, p: PrunedDocument, positions: Sequence[int]) -> PrunedDocument:
        """Document ``p`` with the sentences ``positions``, its text assembled by the pruner."""
        if self.pruner is not None and callable(getattr(self.pruner, "select", None)):
            return self.pruner.select(p, positions)
        if p.sentences and not p.spans:
            raise ValueError(f"Pipeline: document {p.id!r} has no sentence spans; pruners must build results with "
                             "ragprune.prune.base.build_pruned (or implement Pruner.select).")
        return build_pruned(p.document, p.spans, positions, p.score, self.token_counter,
                            sentence_scores=p.sentence_scores or None)

    def _units(self, pruned: list[PrunedDocument]) -> list[Unit]:
        """Budget units: the pruner's kept sentences first, in the reranker's document order
        (scores in (1, 2]); then, with ``backfill``, the other sentences, again in the reranker's
        document order and within a document by their pruner score (scores in (0, 1)); with
        ``"kept-documents"`` only from documents with a kept sentence."""
        n = max(1, len(pruned))
        units = [Unit(g, j, p.sentences[j], 2.0 - g / n) for g, p in enumerate(pruned) for j in p.kept]
        if self.backfill:
            groups = set(range(len(pruned)))
            if self.backfill == "kept-documents":
                groups = {g for g, p in enumerate(pruned) if p.kept} or {0}
            rest = [(s, g, j) for g, p in enumerate(pruned) if g in groups and len(p.sentence_scores) == len(p.sentences)
                    for kept in [set(p.kept)] for j, s in enumerate(p.sentence_scores) if j not in kept]
            rest.sort(key=lambda r: (r[1], -r[0], r[2]))
            units += [Unit(g, j, pruned[g].sentences[j], 1.0 - (i + 1) / (len(rest) + 1))
                      for i, (_, g, j) in enumerate(rest)]
        return units

    def _budget(self, query: str, ranked: list[ScoredDocument], pruned: list[PrunedDocument],
                stats: dict[str, float]) -> Context:
        # documents in the pruner's order: the reranker's, unless the pruner reorders them itself
        units = self._units(pruned)
        header = {g: f"[{p.id}] {p.document.title}".rstrip() for g, p in enumerate(pruned)}
        # a document costs its header plus any text the pruner adds around its sentences (a title)
        cost = {g: self.token_counter(h) + self.token_counter(self._select(pruned[g], []).text)
                for g, h in header.items()}
        budget = fill_budget(units, self.max_tokens, self.token_counter, group_cost=cost)
        chosen = list(budget.units)
        while True:
            docs, text = self._render(pruned, header, chosen, budget.truncated)
            final = self.token_counter(text)
            if final <= self.max_tokens or len(chosen) <= 1:
                break
            # a counter that is not additive over joined text: drop the least valuable unit
            chosen.remove(min(chosen, key=lambda u: (u.score, -u.group, -u.position)))
        candidates = sum(self.token_counter(h.document.text) for h in ranked)
        body = sum(self.token_counter(d.text) for d in docs)
        stats.update({"tokens_candidates": float(candidates),
                      "tokens_pruned": float(sum(self.token_counter(p.text) for p in pruned)),
                      "tokens_final": float(final),
                      "backfilled_sentences": float(sum(u.score < 1.0 for u in chosen)),
                      "compression": max(0.0, 1.0 - body / candidates) if candidates else 0.0})
        return Context(query, text, tuple(docs), final, budget.truncated, MappingProxyType(stats))

    def _render(self, pruned: list[PrunedDocument], header: Mapping[int, str], chosen: Sequence[Unit],
                truncated: bool) -> tuple[list[PrunedDocument], str]:
        """The budgeted documents (pruner-assembled) and the context text, in budget group order."""
        kept: dict[int, list[int]] = {}
        for u in chosen:
            kept.setdefault(u.group, []).append(u.position)
        docs, blocks = [], []
        for g, positions in kept.items():
            doc = self._select(pruned[g], positions)
            if truncated:  # the best sentence alone was over budget and was cut
                from dataclasses import replace

                doc = replace(doc, text=chosen[0].text)
            docs.append(doc)
            blocks.append(f"{header[g]}\n{doc.text}")
        return docs, "\n\n".join(blocks)

    def __repr__(self) -> str:
        parts = [repr(self.retriever), repr(self.reranker), repr(self.pruner)]
        return f"Pipeline({', '.join(parts)}, max_tokens={self.max_tokens})"

