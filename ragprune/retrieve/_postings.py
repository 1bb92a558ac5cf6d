"""BM25 postings: built chunk by chunk in bounded memory, scored, and updated exactly.

A :class:`Postings` holds what the scores are computed from: the sorted vocabulary, a CSR layout
(one row of documents per term, ascending), the term frequency of every posting and every
document's length. Term ids are the positions of the terms in sorted order, so the arrays depend
only on the corpus, not on how it was put together: built in one go, built chunk by chunk, grown
with :func:`merge` or shrunk with :func:`select`, the same documents give identical arrays, and
:func:`score` then gives identical float32 scores. That is how ``add_documents`` and ``delete``
match a rebuild from scratch exactly (idf and the average length change with every update, so
every score is recomputed from the term frequencies: one vectorised pass over the postings).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

__all__ = ["Postings", "PostingsBuilder", "merge", "select", "score", "idf", "tf_component"]

_SCORE_BLOCK = 1 << 20  # postings scored per step (bounds the float64 temporaries to ~50 MB)


def smallest_uint(max_value: int) -> np.dtype:
    """The smallest unsigned dtype holding ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


@dataclass
class Postings:
    """The corpus statistics BM25 scores are computed from.

    Attributes:
        terms: The vocabulary in sorted order; a term's id is its position.
        indptr: ``n_terms + 1`` int64 offsets: term ``t``'s postings are ``indptr[t]:indptr[t+1]``.
        indices: int32 document position of every posting, ascending within a term.
        tf: Term frequency of every posting (the smallest unsigned dtype that holds it).
        doclen: int32 number of analysed tokens of every document.
    """

    terms: list[str]
    indptr: np.ndarray
    indices: np.ndarray
    tf: np.ndarray
    doclen: np.ndarray

    @property
    def n_docs(self) -> int:
        return int(self.doclen.size)

    @property
    def df(self) -> np.ndarray:
        return np.diff(self.indptr)


class PostingsBuilder:
    """Collects analysed documents chunk by chunk; :meth:`finish` returns the :class:`Postings`.

    Each chunk is reduced at once to its distinct (term, document) pairs and their counts, at
    most 10 bytes per posting (a token list costs far more). With ``spill_dir`` the reduced
    chunks wait on disk, so the peak memory is one chunk plus the final arrays.
    """

    def __init__(self, spill_dir: Path | None = None) -> None:
        self.vocab: dict[str, int] = {}  # provisional ids, in order of first occurrence
        self.n_docs = 0
        self._df = np.zeros(0, dtype=np.int64)
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray] | Path] = []
        self._lengths: list[np.ndarray] = []
        self._tf_max = 0
        self._spill = spill_dir

    def add(self, tokens: list[list[str]]) -> None:
        """Append documents, each given as its list of analysed terms."""
        n = len(tokens)
        if not n:
            return
        if self.n_docs + n > np.iinfo(np.int32).max:
            raise ValueError("BM25Retriever: more than 2**31 - 1 documents do not fit one index; shard the corpus.")
        vocab = self.vocab
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
        for t in set(chain.from_iterable(tokens)).difference(vocab):
            vocab[t] = len(vocab)  # new terms in an arbitrary order: finish() sorts the vocabulary anyway
        ids = np.fromiter(map(vocab.__getitem__, chain.from_iterable(tokens)), dtype=np.int64, count=int(lengths.sum()))
        keys = ids * n + np.repeat(np.arange(n, dtype=np.int64), lengths)
        uniq, tf = np.unique(keys, return_counts=True)  # sorted by term, then document
        term, doc = np.divmod(uniq, n)
        self._df = np.concatenate([self._df, np.zeros(len(vocab) - self._df.size, dtype=np.int64)])
        self._df += np.bincount(term, minlength=len(vocab))
        tf_max = int(tf.max()) if tf.size else 0
        self._tf_max = max(self._tf_max, tf_max)
        chunk = (term.astype(np.int32), (doc + self.n_docs).astype(np.int32), tf.astype(smallest_uint(tf_max)))
        self._lengths.append(lengths.astype(np.int32))
        self.n_docs += n
        if self._spill is None:
            self._chunks.append(chunk)
            return
        self._spill.mkdir(parents=True, exist_ok=True)
        path = self._spill / f"chunk-{len(self._chunks)}-{uuid.uuid4().hex[:8]}.npz"
        np.savez(path, term=chunk[0], doc=chunk[1], tf=chunk[2])
        self._chunks.append(path)

    def _iter_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for c in self._chunks:
            if isinstance(c, Path):
                with np.load(c, allow_pickle=False) as z:
                    arrays = (z["term"], z["doc"], z["tf"])
                c.unlink()
                yield arrays
            else:
                yield c

    def finish(self) -> Postings:
        """Sort the vocabulary, lay the postings out by term and return them (frees the chunks)."""
        vocab = self.vocab
        terms = sorted(vocab)
        order = np.fromiter((vocab[t] for t in terms), dtype=np.int64, count=len(terms))
        new_id = np.empty(len(terms), dtype=np.int64)
        new_id[order] = np.arange(len(terms))
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(self._df[order], out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        tf = np.empty(indices.size, dtype=smallest_uint(self._tf_max))
        fill = indptr[:-1].copy()
        for term, doc, counts in self._iter_chunks():
            _scatter(new_id[term], doc, counts, fill, indices, tf)
        doclen = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int32)
        self._chunks, self._lengths, self.vocab = [], [], {}
        return Postings(terms, indptr, indices, tf, doclen)


def _scatter(term: np.ndarray, doc: np.ndarray, tf: np.ndarray, fill: np.ndarray,
             indices: np.ndarray, tf_out: np.ndarray) -> None:
    """Place one chunk's postings (grouped by term, documents ascending) after those already
    placed; ``fill[t]`` is where term ``t``'s next posting goes."""
    if not term.size:
        return
    starts = np.flatnonzero(np.concatenate([[True], term[1:] != term[:-1]]))
    counts = np.diff(np.append(starts, term.size))
    first = term[starts]
    pos = np.repeat(fill[first] - starts, counts) + np.arange(term.size)
    indices[pos] = doc
    tf_out[pos] = tf
    fill[first] += counts


def merge(old: Postings, new: Postings) -> tuple[Postings, dict[str, int]]:
    """The postings of ``old``'s documents followed by ``new``'s, and the new term -> id map."""
    terms = sorted(set(old.terms).union(new.terms))
    vocab = {t: i for i, t in enumerate(terms)}
    map_old = np.fromiter((vocab[t] for t in old.terms), dtype=np.int64, count=len(old.terms))
    map_new = np.fromiter((vocab[t] for t in new.terms), dtype=np.int64, count=len(new.terms))
    df_old = np.zeros(len(terms), dtype=np.int64)
    df_old[map_old] = old.df
    df = df_old.copy()
    df[map_new] += new.df
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    tf_max = max(int(old.tf.max()) if old.tf.size else 0, int(new.tf.max()) if new.tf.size else 0)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    tf = np.empty(indices.size, dtype=smallest_uint(tf_max))
    at_old = np.repeat(indptr[map_old] - old.indptr[:-1], old.df) + np.arange(old.indices.size)
    indices[at_old] = old.indices
    tf[at_old] = old.tf
    del at_old
    at_new = np.repeat(indptr[map_new] + df_old[map_new] - new.indptr[:-1], new.df) + np.arange(new.indices.size)
    indices[at_new] = new.indices + np.int32(old.n_docs)
    tf[at_new] = new.tf
    doclen = np.concatenate([old.doclen, new.doclen])
    return Postings(terms, indptr, indices, tf, doclen), vocab


def select(p: Postings, keep: np.ndarray) -> tuple[Postings, dict[str, int]]:
    """The postings of the documents where the boolean mask ``keep`` is true (renumbered in
    order), without the terms no kept document uses; and the new term -> id map."""
    new_doc = (np.cumsum(keep) - 1).astype(np.int32)
    mask = keep[p.indices]
    kept_before = np.concatenate([[0], np.cumsum(mask)])
    df = kept_before[p.indptr[1:]] - kept_before[p.indptr[:-1]]
    alive = df > 0
    terms = [t for t, a in zip(p.terms, alive.tolist()) if a]
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(df[alive], out=indptr[1:])
    tf = p.tf[mask]
    tf = tf.astype(smallest_uint(int(tf.max()) if tf.size else 0))
    out = Postings(terms, indptr, new_doc[p.indices[mask]], tf, p.doclen[keep].astype(np.int32))
    return out, {t: i for i, t in enumerate(terms)}


def idf(method: str, n_docs: int, df: np.ndarray, epsilon: float) -> np.ndarray:
    """Inverse document frequency of every term under BM25 variant ``method`` (float64)."""
    df = df.astype(np.float64)
    n = float(n_docs)
    if method == "lucene":
        return np.log1p((n - df + 0.5) / (df + 0.5))
    if method == "robertson":
        return np.log((n - df + 0.5) / (df + 0.5))
    if method == "okapi":  # rank-bm25's BM25Okapi: negative idf floored at epsilon * mean idf
        out = np.log((n - df + 0.5) / (df + 0.5))
        floor = epsilon * (out.mean() if out.size else 0.0)
        return np.where(out < 0, floor, out)
    if method == "atire":
        return np.log(n / df)
    if method == "bm25l":
        return np.log((n + 1.0) / (df + 0.5))
    if method == "bm25+":
        return np.log((n + 1.0) / df)
    raise AssertionError(method)


def tf_component(method: str, tf: np.ndarray, norm: np.ndarray, k1: float, delta: float) -> np.ndarray:
    """Term-frequency saturation; ``norm`` is ``1 - b + b * dl / avgdl`` per entry."""
    if method == "bm25l":
        c = tf / norm
        return (k1 + 1.0) * (c + delta) / (k1 + c + delta)
    out = tf * (k1 + 1.0) / (tf + k1 * norm)
    if method == "bm25+":
        out = out + delta
    return out


def score(p: Postings, method: str, k1: float, b: float, delta: float, epsilon: float,
          dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Score of every posting (``dtype``: float32 or float16) and the per-term float32 score of
    an absent term (tf = 0).

    Variants that score documents without the term (BM25L, BM25+) store ``score(tf) -
    score(0)`` so the matrix stays sparse; the query adds ``score(0)`` back per term.
    """
    n_docs = p.n_docs
    total = int(p.doclen.sum(dtype=np.int64))
    avgdl = total / n_docs if n_docs and total > 0 else 1.0
    term_idf = idf(method, n_docs, p.df, epsilon)
    zero = tf_component(method, np.zeros(1), np.ones(1), k1, delta)[0]
    data = np.empty(p.indices.size, dtype=dtype)
    for a in range(0, data.size, _SCORE_BLOCK):
        e = min(data.size, a + _SCORE_BLOCK)
        rows = np.searchsorted(p.indptr, np.arange(a, e), side="right") - 1
        norm = 1.0 - b + b * p.doclen[p.indices[a:e]] / avgdl
        data[a:e] = term_idf[rows] * (tf_component(method, p.tf[a:e].astype(np.float64), norm, k1, delta) - zero)
    return data, (term_idf * zero).astype(np.float32)
