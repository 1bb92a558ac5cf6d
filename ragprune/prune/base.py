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
    span) and the spans themselves are stored as given.

    Raises:
        ValueError: an index in ``keep`` is not a sentence index, or ``sentence_scores`` has
            another length than ``spans``.
    """
    spans = tuple((int(s), int(e)) for s, e in spans)
    sentences = tuple(doc.text[s:e] for s, e in spans)
    kept = tuple(sorted(set(keep)))
    if kept and not 0 <= kept[0] <= kept[-1] < len(sentences):
        raise ValueError(f"build_pruned: sentence indices {list(kept)} out of range for {len(sentences)} sentences.")
    text = " ".join(sentences[i] for i in kept)
    total = counter(doc.text)
    compression = 1.0 - counter(text) / total if total else 0.0
    scores = tuple(float(x) for x in sentence_scores) if sentence_scores is not None else ()
    if scores and len(scores) != len(sentences):
        raise ValueError(f"build_pruned: {len(scores)} sentence scores for {len(sentences)} sentences.")
    return PrunedDocument(document=doc, text=text, kept=kept, score=float(score),
                          compression=max(0.0, min(1.0, compression)), sentences=sentences,
                          sentence_scores=scores, spans=spans)


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

    def select(self, pruned: PrunedDocument, keep: Sequence[int]) -> PrunedDocument:
        """The same pruned document with exactly the sentences ``keep`` kept, its text assembled
        the way this pruner assembles its own output (sentence order, title...). The
        :class:`~ragprune.Pipeline` calls it after the token budget chose the sentences.

        Args:
            pruned: A result of this pruner (it must carry ``spans``).
            keep: Sentence indices (into ``pruned.sentences``) to keep.

        Returns:
            A new :class:`PrunedDocument` (``score`` and ``sentence_scores`` carried over).

        Raises:
            ValueError: ``pruned`` has sentences but no spans, or an index is out of range.
        """
        if pruned.sentences and not pruned.spans:
            raise ValueError(f"{type(self).__name__}.select: document {pruned.id!r} has no sentence spans; build "
                             "pruner results with ragprune.prune.base.build_pruned.")
        return build_pruned(pruned.document, pruned.spans, keep, pruned.score, self.token_counter,
                            sentence_scores=pruned.sentence_scores or None)

    @abstractmethod
    def _prune_many(self, queries: list[str], docs: list[list[Document]]) -> list[list[PrunedDocument]]:
        """Prune validated input."""
