"""The reranker interface: one required method, typed results."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .._validate import check_positive_int, check_queries
from ..types import Document, DocumentLike, ScoredDocument, as_documents

__all__ = ["Reranker", "as_candidates", "fuse_scores"]


def as_candidates(docs: Any, owner: str) -> list[Document]:
    """Normalise a candidate list (ScoredDocument, Document, str or dicts) to Documents.

    An empty list is allowed (reranking nothing returns nothing).
    """
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise TypeError(f"{owner}: docs must be a list of ScoredDocument/Document/str, got {type(docs).__name__}.")
    if not docs:
        return []
    return as_documents([d.document if isinstance(d, ScoredDocument) else d for d in docs], owner=owner)


def check_pairs(queries: Sequence[str], docs: Sequence[DocumentLike], owner: str) -> tuple[list[str], list[Document]]:
    """Validate the ``(queries[i], docs[i])`` pairs of a ``score`` call; documents may be given as
    anything :func:`~ragprune.types.as_documents` takes."""
    queries = check_queries(queries, owner)
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise TypeError(f"{owner}: docs must be a list (one document per query), got {type(docs).__name__}.")
    if len(docs) != len(queries):
        raise ValueError(f"{owner}: got {len(queries)} queries but {len(docs)} documents; they are scored in pairs.")
    return queries, as_documents(list(docs), owner=owner, unique=False) if docs else []  # a pair may repeat a document


def fuse_scores(model: Sequence[float], first_stage: Sequence[float], weight: float) -> list[float]:
    """``(1 - weight) * minmax(model) + weight * minmax(first_stage)`` over one candidate list.

    The range comes from the finite scores; ``+inf`` normalises to 1, ``-inf`` and NaN to 0 (a
    candidate without a usable score goes last instead of making every fused score NaN)."""

    def minmax(xs: Sequence[float]) -> list[float]:
        finite = [x for x in xs if math.isfinite(x)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)

        def one(x: float) -> float:
            if not math.isfinite(x):
                return 1.0 if x == math.inf else 0.0
            return (x - lo) / (hi - lo) if hi > lo else 1.0

        return [one(float(x)) for x in xs]

    return [(1 - weight) * a + weight * b for a, b in zip(minmax(model), minmax(first_stage))]


class Reranker(ABC):
    """Reorders a candidate list by relevance to the query.

    Subclasses implement :meth:`score` on validated input; the public methods validate
    arguments and return new ``ScoredDocument`` objects carrying the reranker's scores.

    ``first_stage_weight`` (default 0: pure reranker scores) interpolates min-max normalised
    reranker scores with the min-max normalised scores the candidates arrived with (e.g. BM25),
    a standard way to keep the first stage's lexical evidence. It only applies when the
    candidates are ``ScoredDocument`` objects.
    """

    first_stage_weight: float = 0.0

    def rerank(self, query: str, docs: Sequence[ScoredDocument | DocumentLike], k: int | None = None
               ) -> list[ScoredDocument]:
        """Score every candidate against ``query`` and return the best ``k`` (all if None).

        Args:
            query: Non-empty question.
            docs: Candidates: ``ScoredDocument`` (e.g. a retriever's output), ``Document``,
                plain strings or BEIR-style dicts.
            k: Keep the best ``k`` (>= 1); ``None`` keeps all.

        Returns:
            ``ScoredDocument`` list, best first; ties keep the input order.

        Raises:
            TypeError/ValueError: blank query, ``k < 1``, malformed candidates.
        """
        return self.rerank_many([query], [docs], k)[0]

    def rerank_many(self, queries: Sequence[str], docs: Sequence[Sequence[ScoredDocument | DocumentLike]],
                    k: int | None = None) -> list[list[ScoredDocument]]:
        """Batched :meth:`rerank`: ``docs[i]`` are the candidates of ``queries[i]``.

        All pairs are scored together, so batches are full even when lists are short.
        """
        owner = f"{type(self).__name__}.rerank"
        queries = check_queries(queries, owner)
        if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
            raise TypeError(f"{owner}: docs must be a list with one candidate list per query, got {type(docs).__name__}.")
        if len(docs) != len(queries):
            raise ValueError(f"{owner}: got {len(queries)} queries but {len(docs)} candidate lists.")
        if k is not None:
            check_positive_int(k, "k", owner)
        cands = [as_candidates(d, owner) for d in docs]
        pairs = [(q, d) for q, ds in zip(queries, cands) for d in ds]
        scores = self.score([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else []
        out, pos = [], 0
        w = self.first_stage_weight
        for raw, ds in zip(docs, cands):
            s = scores[pos : pos + len(ds)]
            pos += len(ds)
            if w > 0 and ds and all(isinstance(d, ScoredDocument) for d in raw):
                s = fuse_scores(s, [d.score for d in raw], w)
            order = sorted(range(len(ds)), key=lambda i: (-s[i], i))
            out.append([ScoredDocument(ds[i], float(s[i])) for i in order[:k]])
        return out

    @abstractmethod
    def score(self, queries: Sequence[str], docs: Sequence[Document]) -> list[float]:
        """Relevance score of each ``(queries[i], docs[i])`` pair (higher is better)."""
