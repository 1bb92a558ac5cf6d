"""Hybrid retrieval: fuse the ranked lists of two (or more) retrievers.

``fusion="rrf"``: reciprocal-rank fusion (Cormack et al., 2009), ``sum_i w_i / (rrf_k + rank_i)``.
``fusion="convex"``: a weighted sum of per-list min-max normalised scores; a document absent
from a list gets that list's minimum (0 after normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .._topk import topk
from .._validate import check_choice, check_number, check_positive_int
from ..types import ScoredDocument
from .base import Retriever

__all__ = ["HybridRetriever"]

Fusion = Literal["rrf", "convex"]


class HybridRetriever(Retriever):
    """Combine retrievers over the same corpus (e.g. BM25 + dense).

    Args:
        retrievers: Two or more retrievers whose documents share ids.
        fusion: ``"rrf"`` (default, rank-based, robust to score scales) or ``"convex"``.
        weights: One non-negative weight per retriever (default: equal).
        rrf_k: The RRF constant (60 as in the original paper).
        depth: How many candidates each retriever contributes (at least ``k``).

    Example:
        >>> hybrid = HybridRetriever([bm25, dense], fusion="convex", weights=[0.5, 0.5])  # doctest: +SKIP
        >>> hits = hybrid.retrieve("what causes scurvy", k=10)                               # doctest: +SKIP
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        fusion: Fusion = "rrf",
        weights: Sequence[float] | None = None,
        rrf_k: float = 60.0,
        depth: int = 100,
    ) -> None:
        owner = "HybridRetriever"
        if isinstance(retrievers, Retriever) or not isinstance(retrievers, Sequence):
            raise TypeError(f"{owner}: retrievers must be a list of at least two retrievers.")
        if len(retrievers) < 2:
            raise ValueError(f"{owner}: needs at least two retrievers, got {len(retrievers)}.")
        for r in retrievers:
            if not callable(getattr(r, "retrieve_many", None)):
                raise TypeError(f"{owner}: {type(r).__name__} has no retrieve_many(queries, k); pass ragprune retrievers.")
        self.retrievers = list(retrievers)
        self.fusion = check_choice(fusion, ("rrf", "convex"), "fusion", owner)
        if weights is None:
            weights = [1.0 / len(retrievers)] * len(retrievers)
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
            raise TypeError(f"{owner}: weights must be a list of numbers, got {type(weights).__name__}.")
        if len(weights) != len(retrievers):
            raise ValueError(f"{owner}: got {len(weights)} weights for {len(retrievers)} retrievers.")
        self.weights = [check_number(w, "weight", owner, low=0.0) for w in weights]
        if sum(self.weights) <= 0:
            raise ValueError(f"{owner}: at least one weight must be > 0.")
        self.rrf_k = check_number(rrf_k, "rrf_k", owner, low=0.0)
        self.depth = check_positive_int(depth, "depth", owner)
        ids = [[d.id for d in r.documents] for r in self.retrievers]
        if any(len(x) != len(ids[0]) or set(x) != set(ids[0]) for x in ids[1:]):
            raise ValueError(f"{owner}: the retrievers index different corpora ({[len(x) for x in ids]} documents); "
                             "build them from the same documents.")
        self.documents = self.retrievers[0].documents
        self._position = {d.id: i for i, d in enumerate(self.documents)}

    def _fuse(self, lists: Sequence[list[ScoredDocument]], k: int) -> list[ScoredDocument]:
        fused: dict[str, float] = {}
        docs = {}
        for w, hits in zip(self.weights, lists):
            if not hits:
                continue
            if self.fusion == "rrf":
                contrib = [w / (self.rrf_k + rank) for rank in range(1, len(hits) + 1)]
            else:
                s = np.array([h.score for h in hits], dtype=np.float64)
                span = s.max() - s.min()
                contrib = list(w * ((s - s.min()) / span if span > 0 else np.ones_like(s)))
            for h, c in zip(hits, contrib):
                fused[h.document.id] = fused.get(h.document.id, 0.0) + float(c)
                docs.setdefault(h.document.id, h.document)
        ids = list(fused)
        scores = np.array([fused[i] for i in ids])
        order = np.array([self._position.get(i, len(self._position)) for i in ids])
        return [ScoredDocument(docs[ids[j]], float(scores[j])) for j in topk(scores, k, ids=order)]

    def _retrieve_many(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        depth = max(k, self.depth)
        per_retriever = [r.retrieve_many(queries, depth) for r in self.retrievers]
        return [self._fuse([lists[i] for lists in per_retriever], k) for i in range(len(queries))]

    def __repr__(self) -> str:
        names = ", ".join(type(r).__name__ for r in self.retrievers)
        return f"HybridRetriever([{names}], fusion={self.fusion!r}, weights={self.weights})"
