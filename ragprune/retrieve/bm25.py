"""BM25 with eagerly precomputed scores in a sparse term-by-document matrix.

The idea is the one of bm25s (Lù, 2024): every (term, document) score is computed once at
index time and stored in a CSR matrix with one row per term, so a row is a posting list. One
query (``retrieve``) slices the posting lists of its terms and sums them with ``np.bincount``: no
sparse matrix is built per call. A batch (``retrieve_many``) becomes a sparse query-by-term
matrix of term counts, and one sparse product per chunk gives every query's scores. Both paths
add the same float64 numbers in the same order, so a query gets the same documents and scores
alone or in a batch. Variants whose score is non-zero for documents *without* a term (BM25L,
BM25+) store ``score(tf) - score(0)`` and add the per-term constant back per query, which keeps
the matrix sparse.

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
# Defaults chosen on development sets by eval/bm25_defaults.py (see BM25Retriever's docstring).
DEFAULT_METHOD: BM25Method = "atire"
DEFAULT_K1 = 1.5
DEFAULT_B = 0.9
# A query whose postings number fewer than n_docs / _SPARSE_RATIO is summed over the matched
# documents only (a sort of the postings); otherwise over a dense array of every document.
_SPARSE_RATIO = 8
# retrieve_many with at least this many queries takes the batched path (a sparse product per
# chunk of _QUERY_CHUNK queries); fewer go one at a time. Both give the same results.
_BATCH_MIN = 4
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
        method: Scoring variant: ``"atire"`` (default; idf ``log(N / df)``), ``"lucene"``
            (Lucene/Pyserini idf, bm25s's default), ``"robertson"``, ``"okapi"`` (rank-bm25's
            BM25Okapi), ``"bm25l"``, ``"bm25+"``.
        k1, b: Term-frequency saturation and length normalisation. The defaults (``atire``,
            ``k1=1.5``, ``b=0.9``) were chosen on development data only: the setting with the
            highest mean nDCG@10 over SciFact *train* queries, SQuAD v1.1 paragraph retrieval
            and HotpotQA distractor paragraphs, out of 6 variants x 5 k1 x 6 b (mean 0.793;
            Anserini's 0.9 / 0.4, the defaults before: 0.779; bm25s's lucene 1.5 / 0.75: 0.787).
            Held-out results (SciFact test, TREC DL19) and the command: eval/README.md, section
            "eval/bm25_defaults.py". On DL19's short web queries Anserini's ``method="lucene",
            k1=0.9, b=0.4`` did better. An index saved with other values keeps them:
            :meth:`load` reads them from the index.
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
        self.method: str = DEFAULT_METHOD
        self.k1 = DEFAULT_K1
        self.b = DEFAULT_B
        self.delta = 0.0
        self.epsilon = 0.25
        self.backend = "native"
        self.vocab: dict[str, int] = {}
        self._matrix: sp.csr_matrix | None = None  # (n_terms, n_docs) float32
        self._nonocc: np.ndarray = np.zeros(0, dtype=np.float32)  # per-term score of tf = 0
        self._has_nonocc = False
        self._has_negative = False
        self._reference: Any = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_documents(
        cls,
        documents: Iterable[DocumentLike],
        *,
        method: BM25Method = DEFAULT_METHOD,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
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
        self._has_nonocc = bool(nonocc.any())
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

    def _query_terms(self, query: str) -> tuple[list[int], list[int]]:
        """Vocabulary ids of the query's known terms, ascending, and how often each occurs."""
        vocab = self.vocab
        counts: dict[int, int] = {}
        for t in self.analyzer(query):
            i = vocab.get(t)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        ids = sorted(counts)
        return ids, [counts[i] for i in ids]

    def _postings(self, ids: list[int], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Documents and scores of every posting of the query terms, term after term.

        The rows of the (term, document) CSR matrix are the posting lists, so this is slicing
        and one concatenation: no sparse matrix is built per query. A term that occurs ``c > 1``
        times has its scores multiplied by ``c`` in float64 (exact, as in the batched product).
        """
        m = self._matrix
        indices, data, indptr = m.indices, m.data, m.indptr
        bounds = indptr.take(ids).tolist(), indptr.take([i + 1 for i in ids]).tolist()
        docs, vals = [], []
        for a, e, c in zip(*bounds, counts):
            if a < e:
                docs.append(indices[a:e])
                vals.append(data[a:e] if c == 1 else np.multiply(data[a:e], c, dtype=np.float64))
        if len(docs) == 1:
            return docs[0], vals[0]
        if not docs:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return np.concatenate(docs), np.concatenate(vals)

    def _shift(self, ids: list[int], counts: list[int]) -> float:
        """Sum of the query terms' tf = 0 scores (BM25L/BM25+; 0 for the other variants)."""
        if not self._has_nonocc:
            return 0.0
        return float(sum(c * v for c, v in zip(counts, self._nonocc.take(ids).tolist())))

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (float32 array in corpus order)."""
        check_query(query, "BM25Retriever.get_scores")
        self._check_built("BM25Retriever.get_scores")
        if self._reference is not None:
            return np.asarray(self._reference.get_scores(self.analyzer(query)), dtype=np.float32)
        ids, counts = self._query_terms(query)
        docs, vals = self._postings(ids, counts)
        return self._dense(docs, vals, self._shift(ids, counts))

    def _dense(self, docs: np.ndarray, sums: np.ndarray, shift: float) -> np.ndarray:
        """Every document's float32 score from per-posting (or per-document) float64 sums."""
        out = np.bincount(docs, weights=sums, minlength=len(self.documents))
        if shift:
            out += shift
        return out.astype(np.float32)

    # How the scores are summed: every (query, document) score is the float64 sum of the
    # document's postings for the query's terms in ascending term id order, plus the query's
    # shift, rounded to float32 once. The single-query path (bincount over the postings) and the
    # batched path (one sparse float64 product per chunk of queries) add the same float64 values
    # in the same order, so a query gets the same documents and scores alone or in a batch.

    def _retrieve_many(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        if self._reference is not None:
            return [self._hits(topk(s, k), s) for s in map(self.get_scores, queries)]
        if len(queries) < _BATCH_MIN:
            return [self._retrieve_one(q, k) for q in queries]
        out: list[list[ScoredDocument]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            out.extend(self._retrieve_chunk(queries[start : start + _QUERY_CHUNK], k))
        return out

    def _retrieve_one(self, query: str, k: int) -> list[ScoredDocument]:
        """The single-query fast path: slice the posting lists, sum them with ``np.bincount``.

        Dense (an array of every document, as bm25s does) unless the postings are a small share
        of the corpus; then over the matched documents only.
        """
        ids, counts = self._query_terms(query)
        docs, vals = self._postings(ids, counts)
        shift = self._shift(ids, counts)
        if self._has_negative or docs.size * _SPARSE_RATIO >= len(self.documents):
            scores = self._dense(docs, vals, shift)
            return self._hits(topk(scores, k), scores)
        matched, inverse = np.unique(docs, return_inverse=True)
        return self._rank(matched, np.bincount(inverse.ravel(), weights=vals, minlength=matched.size), shift, k)

    def _retrieve_chunk(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        """Batched path: one sparse product (float64) of the queries' term counts with the
        posting lists of the terms they use."""
        q = self.query_matrix(queries)
        used = np.unique(q.indices)
        postings = self._matrix[used].astype(np.float64)
        counts = sp.csr_matrix((q.data.astype(np.float64), np.searchsorted(used, q.indices), q.indptr),
                               shape=(len(queries), used.size))
        sums = (counts @ postings).tocsr()
        shifts = [0.0] * len(queries)
        if self._has_nonocc:
            qp = q.indptr.tolist()
            shifts = [self._shift(q.indices[a:e].tolist(), [int(c) for c in q.data[a:e].tolist()])
                      for a, e in zip(qp, qp[1:])]
        sp_ = sums.indptr.tolist()
        return [self._rank(sums.indices[a:e], sums.data[a:e], shift, k)
                for a, e, shift in zip(sp_, sp_[1:], shifts)]

    def _rank(self, matched: np.ndarray, sums: np.ndarray, shift: float, k: int) -> list[ScoredDocument]:
        """Top ``k`` from the float64 sums of the ``matched`` documents (ties: corpus order).

        Documents whose score is not above an unmatched document's (the shift) follow in corpus
        order with the unmatched ones, exactly where a dense ranking puts them.
        """
        if self._has_negative:  # robertson idf: unmatched documents may outrank matched ones
            scores = self._dense(matched, sums, shift)
            return self._hits(topk(scores, k), scores)
        if shift:
            sums = sums + shift
        scores, base = sums.astype(np.float32), np.float32(shift)
        order = topk(scores, k, ids=matched)
        if order.size < k or (order.size and scores[order[-1]] <= base):  # rare: few documents above base
            above = scores > base
            matched, scores = matched[above], scores[above]
            order = topk(scores, k, ids=matched)
        documents = self.documents
        hits = [ScoredDocument(documents[d], s) for d, s in zip(matched[order].tolist(), scores[order].tolist())]
        if len(hits) < k:  # fewer documents above the unmatched score than k
            taken = set(matched.tolist())
            rest = float(base)
            for d in range(len(documents)):
                if len(hits) >= k:
                    break
                if d not in taken:
                    hits.append(ScoredDocument(documents[d], rest))
        return hits

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
