"""Baseline sentence pruners: keep-all, random, lead-k, BM25 sentence scoring, embedding cosine.

Each is a :class:`SentenceScoringPruner`: it scores every sentence of every candidate and
keeps those at or above ``threshold``. The scores are exposed (:meth:`score_sentences`) so
that eval/pruning.py can sweep thresholds and compare methods at matched compression.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import check_number, check_positive_int
from ..text import SentenceSplitter, TokenCounter, count_tokens, sentence_spans, tokenizer_safe
from ..types import Document, PrunedDocument
from .base import Pruner, build_pruned

__all__ = ["SentenceScoringPruner", "KeepAllPruner", "RandomPruner", "LeadPruner", "BM25SentencePruner",
           "EmbeddingSentencePruner", "bm25_sentence_scores"]

Spans = Sequence[tuple[int, int]]


def bm25_sentence_scores(query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
    """BM25 score of every sentence for ``query``, the sentences of all ``docs`` forming the
    collection (so IDF is computed over what is pruned together); one array per document."""
    from ..retrieve.bm25 import BM25Retriever

    sents = [d.text[a:b] for d, sp in zip(docs, spans) for a, b in sp]
    if not sents:
        return [np.zeros(0) for _ in spans]
    flat = BM25Retriever.from_documents(sents, show_progress=False).get_scores(query).astype(float)
    return _split(flat, spans)


class SentenceScoringPruner(Pruner):
    """Keeps sentences whose score is >= ``threshold``; subclasses define the score."""

    def __init__(self, threshold: float, *, splitter: SentenceSplitter = sentence_spans,
                 token_counter: TokenCounter = count_tokens) -> None:
        self.threshold = check_number(threshold, "threshold", type(self).__name__)
        self.splitter = splitter
        self.token_counter = token_counter

    @abstractmethod
    def score_sentences(self, query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
        """One score array per document (one score per sentence span)."""

    def _prune_many(self, queries: list[str], docs: list[list[Document]]) -> list[list[PrunedDocument]]:
        out = []
        for q, ds in zip(queries, docs):
            spans = [list(self.splitter(d.text)) for d in ds]
            scores = self.score_sentences(q, ds, spans) if ds else []
            out.append([build_pruned(d, sp, [j for j, s in enumerate(sc) if s >= self.threshold],
                                     float(np.max(sc, initial=0.0)), self.token_counter, sentence_scores=sc)
                         for d, sp, sc in zip(ds, spans, scores)])
        return out


class KeepAllPruner(SentenceScoringPruner):
    """No pruning: every sentence is kept (the reference for quality and compression)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(0.0, **kw)

    def score_sentences(self, query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
        return [np.ones(len(s)) for s in spans]


class RandomPruner(SentenceScoringPruner):
    """Keeps a random ``keep`` fraction of sentences (seeded per query: deterministic)."""

    def __init__(self, keep: float = 0.5, seed: int = 0, **kw: Any) -> None:
        keep = check_number(keep, "keep", "RandomPruner", low=0.0, high=1.0)
        super().__init__(1.0 - keep, **kw)
        self.seed = seed

    def score_sentences(self, query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
        # bytes seed the same as the equal str, and also work for queries with lone surrogates
        rng = random.Random(f"{self.seed}|{query}".encode("utf-8", "surrogatepass"))
        return [np.array([rng.random() for _ in s]) for s in spans]


class LeadPruner(SentenceScoringPruner):
    """Keeps the first ``k`` sentences of each document (score = minus the position)."""

    def __init__(self, k: int = 2, **kw: Any) -> None:
        k = check_positive_int(k, "k", "LeadPruner")
        super().__init__(-(k - 1) - 0.5, **kw)

    def score_sentences(self, query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
        return [-np.arange(len(s), dtype=float) for s in spans]


class BM25SentencePruner(SentenceScoringPruner):
    """BM25 score of each sentence, with statistics from all sentences of the call's documents."""

    def __init__(self, threshold: float = 1.0, **kw: Any) -> None:
        super().__init__(threshold, **kw)

    def score_sentences(self, query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
        return bm25_sentence_scores(query, docs, spans)


class EmbeddingSentencePruner(SentenceScoringPruner):
    """Cosine similarity between the query and each sentence (sentence-transformers model)."""

    def __init__(self, threshold: float = 0.3, model: Any = "minilm", **kw: Any) -> None:
        super().__init__(threshold, **kw)
        from ..retrieve.dense import load_sentence_transformer

        self.model = load_sentence_transformer(model, owner="EmbeddingSentencePruner")

    def score_sentences(self, query: str, docs: Sequence[Document], spans: Sequence[Spans]) -> list[np.ndarray]:
        sents = [d.text[a:b] for d, sp in zip(docs, spans) for a, b in sp]
        if not sents:
            return [np.zeros(0) for _ in spans]
        emb = self.model.encode([tokenizer_safe(t) for t in (query, *sents)], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return _split(emb[1:] @ emb[0], spans)


def _split(flat: np.ndarray, spans: Sequence[Spans]) -> list[np.ndarray]:
    out, pos = [], 0
    for sp in spans:
        out.append(np.asarray(flat[pos : pos + len(sp)], dtype=float))
        pos += len(sp)
    return out
