"""The pruner interface: one required method, typed results."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .._validate import check_queries
from ..rerank.base import as_candidates
from ..text import SentenceSplitter, TokenCounter, count_tokens, sentence_spans
from ..types import Document, DocumentLike, PrunedDocument, ScoredDocument

__all__ = ["Pruner", "build_pruned"]


def build_pruned(
    doc: Document,
    spans: Sequence[tuple[int, int]],
    keep: Sequence[int],
    score: float,
    counter: TokenCounter = count_tokens,
    sentence_scores: Sequence[float] | None = None,
) -> PrunedDocument:
    """Assemble a :class:`PrunedDocument` from sentence spans and the indices to keep.

    Kept sentences are joined with a space in their original order; compression is the
    fraction of the body's tokens (``counter``) that were removed. ``sentence_scores`` (one per
    span) are stored as given.
    """
    sentences = tuple(doc.text[s:e] for s, e in spans)
    kept = tuple(sorted(set(keep)))
    text = " ".join(sentences[i] for i in kept)
    total = counter(doc.text)
    compression = 1.0 - counter(text) / total if total else 0.0
    scores = tuple(float(x) for x in sentence_scores) if sentence_scores is not None else ()
    if scores and len(scores) != len(sentences):
        raise ValueError(f"build_pruned: {len(scores)} sentence scores for {len(sentences)} sentences.")
    return PrunedDocument(document=doc, text=text, kept=kept, score=float(score),
                          compression=max(0.0, min(1.0, compression)), sentences=sentences,
                          sentence_scores=scores)


class Pruner(ABC):
    """Keeps the sentences of each document that help answer the query.

    Subclasses implement :meth:`_prune_many` on validated input. ``splitter`` decides the
    sentence units; ``token_counter`` measures compression.
    """

    splitter: SentenceSplitter = staticmethod(sentence_spans)  # type: ignore[assignment]
    token_counter: TokenCounter = staticmethod(count_tokens)  # type: ignore[assignment]

    def prune(self, query: str, docs: Sequence[ScoredDocument | DocumentLike]) -> list[PrunedDocument]:
        """Prune every document for ``query``; one :class:`PrunedDocument` per input, in order.

        Raises:
            TypeError/ValueError: blank query or malformed documents.
        """
        return self.prune_many([query], [docs])[0]

    def prune_many(self, queries: Sequence[str], docs: Sequence[Sequence[ScoredDocument | DocumentLike]]
                   ) -> list[list[PrunedDocument]]:
        """Batched :meth:`prune`: ``docs[i]`` are pruned for ``queries[i]``."""
        owner = f"{type(self).__name__}.prune"
        queries = check_queries(queries, owner)
        if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
            raise TypeError(f"{owner}: docs must be a list with one document list per query, got {type(docs).__name__}.")
        if len(docs) != len(queries):
            raise ValueError(f"{owner}: got {len(queries)} queries but {len(docs)} document lists.")
        return self._prune_many(queries, [as_candidates(d, owner) for d in docs])

    @abstractmethod
    def _prune_many(self, queries: list[str], docs: list[list[Document]]) -> list[list[PrunedDocument]]:
        """Prune validated input."""
