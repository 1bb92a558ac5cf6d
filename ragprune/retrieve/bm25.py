"""BM25 with eagerly precomputed scores in a sparse term-by-document matrix.

The idea is the one of bm25s (Lù, 2024): every (term, document) score is computed once at
index time and stored in a CSR matrix with one row per term. A batch of queries becomes a
sparse query-by-term matrix of term counts, and one sparse product gives every query's scores
for every matching document. Variants whose score is non-zero for documents *without* a term
(BM25L, BM25+) store ``score(tf) - score(0)`` and add the per-term constant back per query,
which keeps the matrix sparse.

``backend="rank_bm25"`` scores with the rank-bm25 package instead: slow, but a reference
implementation to compare against.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from .._io import (
    IndexFormatError,
    load_index,
    load_npz,
    read_documents,
    write_documents,
    write_index_dir,
)
from .._topk import topk
from .._validate import check_choice, check_number, check_query
from ..text import Analyzer
from ..types import Document, DocumentLike, ScoredDocument, as_documents
from .base import Retriever

logger = logging.getLogger(__name__)

__all__ = ["BM25Retriever", "BM25Method"]

BM25Method = Literal["lucene", "robertson", "atire", "okapi", "bm25l", "bm25+"]
METHODS: tuple[str, ...] = ("lucene", "robertson", "atire", "okapi", "bm25l", "bm25+")
FORMAT_VERSION = 1
_QUERY_CHUNK = 512


def _idf(method: str, n_docs: int, df: np.ndarray, epsilon: float) -> np.ndarray:
    df = df.astype(np.float64)
    n = float(n_docs)
    if method == "lucene":
        return np.log1p((n - df + 0.5) / (df + 0.5))
    if method == "robertson":
        return np.log((n - df + 0.5) / (df + 0.5))
    if method == "okapi":  # rank-bm25's BM25Okapi: negative idf floored at epsilon * mean idf
        idf = np.log((n - df + 0.5) / (df + 0.5))
        floor = epsilon * (idf.mean() if idf.size else 0.0)
        return np.where(idf < 0, floor, idf)
    if method == "atire":
        return np.log(n / df)
    if method == "bm25l":
        return np.log((n + 1.0) / (df + 0.5))
    if method == "bm25+":
        return np.log((n + 1.0) / df)
    raise AssertionError(method)


def _tf_component(method: str, tf: np.ndarray, norm: np.ndarray, k1: float, delta: float) -> np.ndarray:
    """Term-frequency saturation; ``norm`` is ``1 - b + b * dl / avgdl`` per entry."""
    if method == "bm25l":
        c = tf / norm
        return (k1 + 1.0) * (c + delta) / (k1 + c + delta)
    out = tf * (k1 + 1.0) / (tf + k1 * norm)
    if method == "bm25+":
        out = out + delta
    return out


class BM25Retriever(Retriever):
    """Sparse BM25 retrieval over an in-memory corpus.

    Build with :meth:`from_documents`; persist with :meth:`save` / :meth:`load`.

    Args (of :meth:`from_documents`):
        documents: ``Document`` objects, strings, or BEIR-style dicts. Title and text are
            indexed together.
        method: Scoring variant: ``"lucene"`` (default; Lucene/Pyserini idf), ``"robertson"``,
            ``"atire"``, ``"okapi"`` (rank-bm25's BM25Okapi), ``"bm25l"``, ``"bm25+"``.
        k1, b: Term-frequency saturation and length normalisation. Defaults 0.9 / 0.4 are
            Anserini's general-purpose defaults (used for the Pyserini BEIR baselines).
        delta: BM25L/BM25+ lower-bound shift (rank-bm25 defaults: 0.5 for BM25L, 1.0 for BM25+).
        epsilon: ``okapi`` only: negative idf values become ``epsilon * mean(idf)``.
        analyzer: An :class:`~ragprune.text.Analyzer` (lowercase, stopwords, Snowball stemming).
        backend: ``"native"`` (sparse matrix, fast) or ``"rank_bm25"`` (reference, slow, needs
            ``pip install rank-bm25``, methods okapi/bm25l/bm25+ only, cannot be saved).
        show_progress: Progress bar while analysing the corpus (``None``: only for >= 20k docs).

    Example:
        >>> bm25 = BM25Retriever.from_documents(["Paris is in France.", "Berlin is in Germany."])
        >>> [h.document.id for h in bm25.retrieve("capital of France", k=1)]
        ['0']
    """

    def __init__(self) -> None:  # use from_documents / load
        self.documents: list[Document] = []
        self.analyzer = Analyzer()
        self.method: str = "lucene"
        self.k1 = 0.9
        self.b = 0.4
        self.delta = 0.0
        self.epsilon = 0.25
        self.backend = "native"
        self.vocab: dict[str, int] = {}
        self._matrix: sp.csr_matrix | None = None  # (n_terms, n_docs) float32
        self._nonocc: np.ndarray = np.zeros(0, dtype=np.float32)  # per-term score of tf = 0
        self._has_negative = False
        self._reference: Any = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_documents(
        cls,
        documents: Iterable[DocumentLike],
        *,
        method: BM25Method = "lucene",
        k1: float = 0.9,
        b: float = 0.4,
        delta: float | None = None,
        epsilon: float = 0.25,
        analyzer: Analyzer | None = None,
        backend: Literal["native", "rank_bm25"] = "native",
        show_progress: bool | None = None,
    ) -> BM25Retriever:
        """Index ``documents``; see the class docstring for the arguments.

        Raises:
            ValueError: empty corpus, duplicate ids, unknown ``method``/``backend``, or
                ``k1 < 0``, ``b`` outside [0, 1], ``delta < 0``.
            TypeError: a document's text is not a string.
        """
        owner = "BM25Retriever.from_documents"
        self = cls()
        self.method = check_choice(method, METHODS, "method", owner)
        self.backend = check_choice(backend, ("native", "rank_bm25"), "backend", owner)
        self.k1 = check_number(k1, "k1", owner, low=0.0)
        self.b = check_number(b, "b", owner, low=0.0, high=1.0)
        default_delta = {"bm25l": 0.5, "bm25+": 1.0}.get(method, 0.0)
        self.delta = check_number(default_delta if delta is None else delta, "delta", owner, low=0.0)
        self.epsilon = check_number(epsilon, "epsilon", owner, low=0.0)
        if analyzer is not None and not isinstance(analyzer, Analyzer):
            raise TypeError(f"{owner}: analyzer must be a ragprune.text.Analyzer, got {type(analyzer).__name__}.")
        self.analyzer = analyzer or Analyzer()
        self.documents = as_documents(documents, owner=owner)
        texts = [d.full_text for d in self.documents]
        if show_progress is None:
            show_progress = len(texts) >= 20_000
        tokens = self._analyze_corpus(texts, show_progress)
        if self.backend == "rank_bm25":
            self._build_reference(tokens)
        else:
            self._build_matrix(tokens)
        return self

    def _analyze_corpus(self, texts: Sequence[str], show_progress: bool) -> list[list[str]]:
        if not show_progress:
            return self.analyzer.analyze_many(texts)
        from tqdm.auto import tqdm

        return [self.analyzer(t) for t in tqdm(texts, desc="BM25 analyse", unit="doc")]

    def _build_matrix(self, tokens: list[list[str]]) -> None:
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        for toks in tokens:
            term_ids.extend([vocab.setdefault(t, len(vocab)) for t in toks])
        self.vocab = vocab
        n_docs, n_terms = len(tokens), len(vocab)
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=n_docs)
        doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
        keys = np.asarray(term_ids, dtype=np.int64) * n_docs + doc_of
        uniq, tf = np.unique(keys, return_counts=True)  # sorted by term, then document
        term, doc = np.divmod(uniq, n_docs)
        df = np.bincount(term, minlength=n_terms)
        avgdl = float(lengths.mean()) if n_docs and lengths.sum() > 0 else 1.0
        idf = _idf(self.method, n_docs, df, self.epsilon)
        norm = 1.0 - self.b + self.b * lengths[doc] / avgdl
        zero = _tf_component(self.method, np.zeros(1), np.ones(1), self.k1, self.delta)[0]
        data = idf[term] * (_tf_component(self.method, tf.astype(np.float64), norm, self.k1, self.delta) - zero)
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        self._set_matrix(
            sp.csr_matrix((data.astype(np.float32), doc.astype(np.int32), indptr), shape=(n_terms, n_docs)),
            (idf * zero).astype(np.float32),
        )
        self._avgdl = avgdl

    def _set_matrix(self, matrix: sp.csr_matrix, nonocc: np.ndarray) -> None:
        self._matrix = matrix
        self._nonocc = nonocc
        self._has_negative = bool(matrix.data.size and matrix.data.min() < 0)

    def _build_reference(self, tokens: list[list[str]]) -> None:
        try:
            import rank_bm25
        except ImportError as e:
            raise ImportError("BM25Retriever(backend='rank_bm25') needs rank-bm25: pip install 'ragprune[bench]'") from e
        classes = {"okapi": "BM25Okapi", "bm25l": "BM25L", "bm25+": "BM25Plus"}
        if self.method not in classes:
            raise ValueError(
                f"BM25Retriever: backend 'rank_bm25' supports methods {sorted(classes)}, not {self.method!r}."
            )
        kwargs: dict[str, float] = {"k1": self.k1, "b": self.b}
        if self.method == "okapi":
            kwargs["epsilon"] = self.epsilon
        else:
            kwargs["delta"] = self.delta
        self._reference = getattr(rank_bm25, classes[self.method])(tokens, **kwargs)

    # ------------------------------------------------------------------ querying
    def query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Sparse (n_queries, n_terms) matrix of query-term counts (unknown terms dropped)."""
        vocab = self.vocab
        indptr = [0]
        cols: list[int] = []
        for q in queries:
            cols.extend([i for t in self.analyzer(q) if (i := vocab.get(t)) is not None])
            indptr.append(len(cols))
        data = np.ones(len(cols), dtype=np.float32)
        m = sp.csr_matrix((data, np.asarray(cols, dtype=np.int32), np.asarray(indptr, dtype=np.int64)),
                          shape=(len(queries), len(vocab)))
        m.sum_duplicates()
        return m

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (float32 array in corpus order)."""
        check_query(query, "BM25Retriever.get_scores")
        self._check_built("BM25Retriever.get_scores")
        if self._reference is not None:
            return np.asarray(self._reference.get_scores(self.analyzer(query)), dtype=np.float32)
        q = self.query_matrix([query])
        scores = np.asarray((q @ self._matrix).todense(), dtype=np.float32).ravel()
        return scores + np.float32(q.data @ self._nonocc[q.indices])

    def _retrieve_many(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        if self._reference is not None:
            return [self._hits(topk(s, k), s) for s in map(self.get_scores, queries)]
        out: list[list[ScoredDocument]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            q = self.query_matrix(queries[start : start + _QUERY_CHUNK])
            shift = np.asarray(q @ self._nonocc[:, None], dtype=np.float32).ravel() if self._nonocc.any() else None
            scores = (q @ self._matrix).tocsr()
            for r in range(q.shape[0]):
                a, e = scores.indptr[r], scores.indptr[r + 1]
                out.append(self._row_topk(scores.indices[a:e], scores.data[a:e], k,
                                          0.0 if shift is None else float(shift[r])))
        return out

    def _row_topk(self, idx: np.ndarray, vals: np.ndarray, k: int, shift: float) -> list[ScoredDocument]:
        n_docs = len(self.documents)
        if self._has_negative:  # robertson idf: unmatched documents may outrank matched ones
            dense = np.zeros(n_docs, dtype=np.float32)
            dense[idx] = vals
            return self._hits(topk(dense, k), dense + np.float32(shift))
        order = topk(vals, k, ids=idx)
        docs, scores = idx[order].tolist(), (vals[order] + np.float32(shift)).tolist()
        if len(docs) < min(k, n_docs):  # fewer matches than k: pad with unmatched docs in order
            matched = set(idx.tolist())
            for d in range(n_docs):
                if len(docs) >= k:
                    break
                if d not in matched:
                    docs.append(d)
                    scores.append(shift)
        return [ScoredDocument(self.documents[d], float(s)) for d, s in zip(docs, scores)]

    def _hits(self, positions: np.ndarray, scores: np.ndarray) -> list[ScoredDocument]:
        return [ScoredDocument(self.documents[i], float(scores[i])) for i in positions.tolist()]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to folder ``path`` atomically (see :mod:`ragprune._io`).

        Raises:
            ValueError: the index uses the ``rank_bm25`` reference backend.
        """
        if self._reference is not None:
            raise ValueError("BM25Retriever.save: the 'rank_bm25' backend cannot be saved; use backend='native'.")
        m = self._matrix
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        params = {"method": self.method, "k1": self.k1, "b": self.b, "delta": self.delta,
                  "epsilon": self.epsilon, "analyzer": self.analyzer.config(),
                  "n_docs": len(self.documents), "n_terms": len(terms)}

        def write(d: Path) -> None:
            np.savez(d / "scores.npz", data=m.data, indices=m.indices, indptr=m.indptr, nonocc=self._nonocc)
            (d / "vocab.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
            write_documents(d / "documents.jsonl", self.documents)

        write_index_dir(path, kind="bm25", format_version=FORMAT_VERSION, params=params, write_data=write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Retriever:
        """Load an index written by :meth:`save`. Never unpickles.

        Raises:
            FileNotFoundError: no index at ``path``.
            ragprune.IndexFormatError: corrupt files, another index kind or format version.
        """
        return load_index(path, kind="bm25", format_version=FORMAT_VERSION, read=cls._from_dir)

    @classmethod
    def _from_dir(cls, data_dir: Path, params: dict[str, Any]) -> BM25Retriever:
        self = cls()
        try:
            self.method = check_choice(params["method"], METHODS, "method", "BM25Retriever.load")
            owner = "BM25Retriever.load"
            self.k1 = check_number(params["k1"], "k1", owner, low=0.0)
            self.b = check_number(params["b"], "b", owner, low=0.0, high=1.0)
            self.delta = check_number(params["delta"], "delta", owner, low=0.0)
            self.epsilon = check_number(params["epsilon"], "epsilon", owner, low=0.0)
            self.analyzer = Analyzer.from_config(params["analyzer"])
            n_docs, n_terms = int(params["n_docs"]), int(params["n_terms"])
            terms = json.loads((data_dir / "vocab.json").read_text(encoding="utf-8"))
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise ValueError("vocab.json is not a list of terms")
        except (KeyError, TypeError, ValueError, OSError, RecursionError) as e:
            raise IndexFormatError(f"BM25Retriever.load: {data_dir} has bad params or vocab ({e}); rebuild the index.") from e
        arrays = load_npz(data_dir / "scores.npz")
        self.documents = read_documents(data_dir / "documents.jsonl")
        try:
            if len(terms) != n_terms or len(self.documents) != n_docs:
                raise ValueError("vocabulary or document count differs from params.json")
            if any(arrays[k].dtype.kind not in "iuf" for k in ("data", "indices", "indptr", "nonocc")):
                raise ValueError("an array is not numeric")
            matrix = sp.csr_matrix((arrays["data"].astype(np.float32, copy=False), arrays["indices"], arrays["indptr"]),
                                   shape=(n_terms, n_docs))
            matrix.check_format(full_check=True)
            if arrays["nonocc"].shape != (n_terms,):
                raise ValueError("nonocc has the wrong shape")
            nonocc = arrays["nonocc"].astype(np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"BM25Retriever.load: {data_dir} is inconsistent ({e}); rebuild the index.") from e
        self.vocab = {t: i for i, t in enumerate(terms)}
        self._set_matrix(matrix, nonocc)
        return self

    def __repr__(self) -> str:
        return (f"BM25Retriever(method={self.method!r}, k1={self.k1}, b={self.b}, "
                f"docs={len(self.documents)}, terms={len(self.vocab)}, backend={self.backend!r})")
