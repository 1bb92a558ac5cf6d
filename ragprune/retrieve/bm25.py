"""BM25 with eagerly precomputed scores in a sparse term-by-document matrix.

The idea is the one of bm25s (Lù, 2024): every (term, document) score is computed once at
index time and stored in a CSR layout with one row per term, so a row is a posting list. One
query (``retrieve``) slices the posting lists of its terms and sums them with ``np.bincount``: no
sparse matrix is built per call. A batch (``retrieve_many``) becomes a sparse query-by-term
matrix of term counts, and one sparse product per chunk gives every query's scores. Both paths
add the same float32 numbers in the same order, so a query gets the same documents and scores
alone or in a batch. Variants whose score is non-zero for documents *without* a term (BM25L,
BM25+) store ``score(tf) - score(0)`` and add the per-term constant back per query, which keeps
the matrix sparse.

Scale: the corpus is analysed in chunks (:mod:`ragprune.retrieve._postings`), so the peak
memory of a build is a chunk plus the final arrays; :meth:`BM25Retriever.build` streams a corpus
from an iterator or a JSONL file straight into an index folder without holding the documents;
``load(path, mmap=True)`` memory-maps the arrays and reads a document from disk only when it is a
hit. The term frequencies are kept, so :meth:`~BM25Retriever.add_documents` and
:meth:`~BM25Retriever.delete` rescore exactly: scores equal a rebuild from scratch.

``backend="rank_bm25"`` scores with the rank-bm25 package instead: slow, but a reference
implementation to compare against.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from .._docstore import DiskDocuments, DocumentView
from .._io import (
    IndexFormatError,
    iter_jsonl,
    load_index,
    load_npy,
    load_npz,
    read_documents,
    save_npy,
    write_documents,
    write_index_dir,
)
from .._topk import topk
from .._validate import check_choice, check_number, check_positive_int, check_query
from ..text import Analyzer
from ..types import Document, DocumentLike, ScoredDocument, as_documents
from ._postings import Postings, PostingsBuilder, merge, score, select
from .base import Retriever

logger = logging.getLogger(__name__)

__all__ = ["BM25Retriever", "BM25Method"]

BM25Method = Literal["lucene", "robertson", "atire", "okapi", "bm25l", "bm25+"]
METHODS: tuple[str, ...] = ("lucene", "robertson", "atire", "okapi", "bm25l", "bm25+")
# 2: one .npy file per array (memory-mappable), sorted vocabulary, term frequencies and document
# lengths (for exact updates), document offsets. 1: scores.npz; still read, not updatable.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Defaults chosen on development sets by eval/bm25_defaults.py (see BM25Retriever's docstring).
DEFAULT_METHOD: BM25Method = "atire"
DEFAULT_K1 = 1.5
DEFAULT_B = 0.9
DEFAULT_CHUNK = 20_000  # documents analysed per step while building
# A query whose postings number fewer than n_docs / _SPARSE_RATIO is summed over the matched
# documents only (a sort of the postings); otherwise over a dense array of every document.
_SPARSE_RATIO = 8
# retrieve_many with at least this many queries takes the batched path (a sparse product per
# chunk of _QUERY_CHUNK queries); fewer go one at a time. Both give the same results.
_BATCH_MIN = 4
# documents of the rarest query terms scored to bound the k-th best score (BM25Retriever._candidates)
_BOUND_SAMPLE = 2048
_CANDIDATES_MIN_DOCS = 100_000  # below this, ranking every document is as fast
_QUERY_CHUNK = 512
SCORE_DTYPES = ("float32", "float16")
_ARRAYS = ("scores", "indices", "indptr", "nonocc", "tf", "doclen")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class BM25Retriever(Retriever):
    """Sparse BM25 retrieval.

    Build in memory with :meth:`from_documents`, or straight to disk with :meth:`build` (a
    corpus larger than RAM); persist with :meth:`save` / :meth:`load` (``mmap=True`` for a
    memory-mapped index); update with :meth:`add_documents` / :meth:`delete`.

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
        chunk_size: Documents analysed per step (bounds the memory of the analysis).
        score_dtype: ``"float32"`` (default) or ``"float16"``: stored scores at half the size
            (the postings of short passages shrink by about a fifth, documents excluded); sums
            are float32 either way. SciFact nDCG@10 is unchanged (eval/README.md, "eval/scale.py").

    Example:
        >>> bm25 = BM25Retriever.from_documents(["Paris is in France.", "Berlin is in Germany."])
        >>> [h.document.id for h in bm25.retrieve("capital of France", k=1)]
        ['0']
    """

    def __init__(self) -> None:  # use from_documents / build / load
        self.documents: Sequence[Document] = []
        self.analyzer = Analyzer()
        self.method: str = DEFAULT_METHOD
        self.k1 = DEFAULT_K1
        self.b = DEFAULT_B
        self.delta = 0.0
        self.epsilon = 0.25
        self.backend = "native"
        self.score_dtype = "float32"
        self.vocab: dict[str, int] = {}
        # the CSR layout: posting lists of float32 scores, one row per term
        self._indptr = np.zeros(1, dtype=np.int64)
        self._indices = np.zeros(0, dtype=np.int32)
        self._data = np.zeros(0, dtype=np.float32)
        self._nonocc: np.ndarray = np.zeros(0, dtype=np.float32)  # per-term score of tf = 0
        self._has_nonocc = False
        self._has_negative = False
        self._tf: np.ndarray | None = None  # term frequencies (None: a format-1 index)
        self._doclen: np.ndarray | None = None
        self._mapped = False  # arrays memory-mapped from an index folder
        self._source = ""
        self._ids: dict[str, int] | None = None  # id -> position, built on the first update
        self._reference: Any = None

    # ------------------------------------------------------------------ building
    def _configure(self, owner: str, method: str, k1: float, b: float, delta: float | None, epsilon: float,
                   analyzer: Analyzer | None, score_dtype: str) -> None:
        self.method = check_choice(method, METHODS, "method", owner)
        self.score_dtype = check_choice(score_dtype, SCORE_DTYPES, "score_dtype", owner)
        self.k1 = check_number(k1, "k1", owner, low=0.0)
        self.b = check_number(b, "b", owner, low=0.0, high=1.0)
        default_delta = {"bm25l": 0.5, "bm25+": 1.0}.get(method, 0.0)
        self.delta = check_number(default_delta if delta is None else delta, "delta", owner, low=0.0)
        self.epsilon = check_number(epsilon, "epsilon", owner, low=0.0)
        if analyzer is not None and not isinstance(analyzer, Analyzer):
            raise TypeError(f"{owner}: analyzer must be a ragprune.text.Analyzer, got {type(analyzer).__name__}.")
        self.analyzer = analyzer or Analyzer()

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
        chunk_size: int = DEFAULT_CHUNK,
        score_dtype: Literal["float32", "float16"] = "float32",
    ) -> BM25Retriever:
        """Index ``documents`` in memory; see the class docstring for the arguments.

        Raises:
            ValueError: empty corpus, duplicate ids, unknown ``method``/``backend``, or
                ``k1 < 0``, ``b`` outside [0, 1], ``delta < 0``.
            TypeError: a document's text is not a string.
        """
        owner = "BM25Retriever.from_documents"
        self = cls()
        self._configure(owner, method, k1, b, delta, epsilon, analyzer, score_dtype)
        self.backend = check_choice(backend, ("native", "rank_bm25"), "backend", owner)
        check_positive_int(chunk_size, "chunk_size", owner)
        self.documents = as_documents(documents, owner=owner)
        if show_progress is None:
            show_progress = len(self.documents) >= 20_000
        if self.backend == "rank_bm25":
            self._build_reference(self.analyzer.analyze_many([d.full_text for d in self.documents]))
            return self
        builder = PostingsBuilder()
        with self._progress(show_progress, len(self.documents), "BM25 analyse") as bar:
            for chunk in _chunks(self.documents, chunk_size):
                builder.add(self.analyzer.analyze_many([d.full_text for d in chunk]))
                bar.update(len(chunk))
        self._install(builder.finish())
        return self

    @staticmethod
    def _progress(show: bool, total: int | None, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="doc", disable=not show)

    @classmethod
    def build(
        cls,
        source: Iterable[DocumentLike] | str | os.PathLike[str],
        path: str | os.PathLike[str],
        *,
        method: BM25Method = DEFAULT_METHOD,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        delta: float | None = None,
        epsilon: float = 0.25,
        analyzer: Analyzer | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        show_progress: bool = True,
        mmap: bool = True,
        score_dtype: Literal["float32", "float16"] = "float32",
    ) -> BM25Retriever:
        """Index a corpus of any size straight into folder ``path``, in bounded memory.

        The documents stream from ``source`` to the index's document store while they are
        analysed ``chunk_size`` at a time; the analysed chunks wait on disk (in the folder being
        written) until the postings are laid out. Peak memory is one chunk plus the final arrays
        (about 9 bytes per distinct (term, document) pair), never the corpus. The save is atomic
        like :meth:`save`: a failure or a kill leaves the folder as it was.

        Args:
            source: An iterable of documents (``Document``, str, BEIR-style dict; a generator
                is fine), the path of a JSON-lines corpus (``.jsonl`` or ``.jsonl.gz``, rows
                with ``_id``/``id``, ``title``, ``text``) or a BEIR folder (its
                ``corpus.jsonl``), read lazily.
            path: Index folder to write (replaced atomically if it holds an index).
            mmap: Return the index loaded with ``mmap=True`` (else fully in memory).
            Others: as :meth:`from_documents`.

        Returns:
            The built index, loaded from ``path``.

        Raises:
            ValueError: empty corpus, duplicate ids, bad parameters; the folder is untouched.
            FileNotFoundError: ``source`` names a file that does not exist.
        """
        owner = "BM25Retriever.build"
        self = cls()
        self._configure(owner, method, k1, b, delta, epsilon, analyzer, score_dtype)
        check_positive_int(chunk_size, "chunk_size", owner)
        if isinstance(source, (str, os.PathLike)):
            corpus = Path(source)
            if corpus.is_dir():  # a BEIR folder
                corpus = corpus / "corpus.jsonl"
            if not corpus.is_file() and not corpus.with_name(corpus.name + ".gz").is_file():
                raise FileNotFoundError(f"{owner}: no corpus file at {corpus}; give a .jsonl file or an iterable.")
            source = iter_jsonl(corpus, owner)
        elif isinstance(source, (bytes, dict, Document)) or not isinstance(source, Iterable):
            raise TypeError(f"{owner}: source must be an iterable of documents or a .jsonl path, "
                            f"got {type(source).__name__}.")
        params: dict[str, Any] = self._params()

        def write(d: Path) -> None:
            builder = PostingsBuilder(spill_dir=d / ".spill")
            id_hashes: list[np.ndarray] = []
            bar = self._progress(show_progress, None, "BM25 build")

            def stream() -> Iterator[Document]:
                for chunk in _chunks(source, chunk_size):
                    docs = as_documents(chunk, owner=owner, unique=False, start=builder.n_docs)
                    builder.add(self.analyzer.analyze_many([doc.full_text for doc in docs]))
                    id_hashes.append(np.fromiter((hash(doc.id) for doc in docs), dtype=np.int64, count=len(docs)))
                    bar.update(len(docs))
                    yield from docs

            with bar:
                offsets = write_documents(d / "documents.jsonl", stream())
            if not builder.n_docs:
                raise ValueError(f"{owner}: the corpus is empty; pass at least one document.")
            _check_unique_ids(d, offsets, np.concatenate(id_hashes), owner)
            postings = builder.finish()
            shutil.rmtree(d / ".spill", ignore_errors=True)
            data, nonocc = score(postings, self.method, self.k1, self.b, self.delta, self.epsilon,
                                 self.score_dtype)
            self._write_arrays(d, postings, data, nonocc, offsets, params)

        write_index_dir(path, kind="bm25", format_version=FORMAT_VERSION, params=params, write_data=write)
        return cls.load(path, mmap=mmap)

    def _install(self, postings: Postings, vocab: dict[str, int] | None = None) -> None:
        """Score ``postings`` and make them the live index."""
        data, nonocc = score(postings, self.method, self.k1, self.b, self.delta, self.epsilon,
                                 self.score_dtype)
        self.vocab = vocab if vocab is not None else {t: i for i, t in enumerate(postings.terms)}
        self._indptr, self._indices, self._data = postings.indptr, postings.indices, data
        self._tf, self._doclen = postings.tf, postings.doclen
        self._set_scores(nonocc)
        self._mapped = False

    def _set_scores(self, nonocc: np.ndarray, has_negative: bool | None = None) -> None:
        self._nonocc = nonocc
        self._has_nonocc = bool(nonocc.any())
        if has_negative is None:
            has_negative = bool(self._data.size and self._data.min() < 0)
        self._has_negative = has_negative

    def _postings_state(self) -> Postings:
        return Postings(sorted(self.vocab, key=self.vocab.__getitem__), self._indptr, self._indices,
                        self._tf, self._doclen)

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

    def _postings(self, ids: list[int], counts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The documents and float32 scores of each query term's posting list, term after term.

        The rows of the (term, document) CSR layout are the posting lists, so this is slicing:
        no sparse matrix is built per query. A term that occurs ``c > 1`` times has its scores
        multiplied by ``c`` in float32, as in the batched product.
        """
        indices, data, indptr = self._indices, self._data, self._indptr
        bounds = indptr.take(ids).tolist(), indptr.take([i + 1 for i in ids]).tolist()
        out = []
        for a, e, c in zip(*bounds, counts):
            if a < e:
                docs, vals = indices[a:e], data[a:e]
                if c != 1:
                    vals = np.multiply(vals, np.float32(c), dtype=np.float32)
                if self._mapped:  # arrays read lazily from disk were not range-checked at load
                    self._check_documents(docs)
                out.append((docs, vals))
        return out

    @staticmethod
    def _accumulate(postings: list[tuple[np.ndarray, np.ndarray]], size: int,
                    where: np.ndarray | None = None) -> np.ndarray:
        """float32 sums of the postings, added one term after the other (``np.add.at`` adds in
        the order of its input): the order and precision of the batched product. ``where``:
        the positions in the output of the concatenated postings (default: the documents)."""
        out = np.zeros(size, dtype=np.float32)
        if postings:
            docs = where if where is not None else np.concatenate([d for d, _ in postings])
            np.add.at(out, docs, np.concatenate([v for _, v in postings]))
        return out

    def _check_documents(self, docs: np.ndarray) -> None:
        if docs.size and int(docs.view(np.uint32).max()) >= len(self.documents):  # a negative one is huge as uint32
            raise IndexFormatError(f"BM25Retriever: the index files at {self._source} hold a document number out of "
                                   "range (a damaged file); rebuild the index.")

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
        scores = self._accumulate(self._postings(ids, counts), len(self.documents))
        shift = self._shift(ids, counts)
        if shift:
            scores += shift
        return scores

    # How the scores are summed: every (query, document) score is the float32 sum of the
    # document's postings for the query's terms in ascending term id order, plus the query's
    # shift. The single-query path (one scatter-add per term) and the batched path (one sparse
    # float32 product per chunk of queries) add the same float32 values in the same order, so a
    # query gets the same documents and scores alone or in a batch.

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
        """The single-query fast path: slice the posting lists, add them up term by term.

        Many postings: into an array of every document (as bm25s does), ranked over the
        documents that can reach the top ``k`` only. Few: over the matched documents only.
        """
        ids, counts = self._query_terms(query)
        postings = self._postings(ids, counts)
        shift = self._shift(ids, counts)
        n_postings = sum(docs.size for docs, _ in postings)
        if self._has_negative or n_postings * _SPARSE_RATIO >= len(self.documents):
            scores = self._accumulate(postings, len(self.documents))
            if shift:
                scores += shift
            small = self._has_negative or len(self.documents) < _CANDIDATES_MIN_DOCS  # ranking all is cheap
            cand = None if small else self._candidates(scores, ids, k)
            if cand is None:
                return self._hits(topk(scores, k), scores)
            order = topk(scores[cand], k, ids=cand)
            return self._hits(cand[order], scores)
        if not postings:
            return self._rank(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), shift, k)
        matched, inverse = np.unique(np.concatenate([docs for docs, _ in postings]), return_inverse=True)
        return self._rank(matched, self._accumulate(postings, matched.size, inverse.ravel()), shift, k)

    def _candidates(self, scores: np.ndarray, ids: list[int], k: int) -> np.ndarray | None:
        """Every document that can be in the top ``k`` of ``scores``, in corpus order, found
        without ranking the whole corpus (None: no shortcut, rank everything).

        The documents of the query's rarest terms are scored already: the k-th best of their
        scores is a lower bound of the k-th best overall, and usually close to it, so one
        comparison over the corpus leaves few candidates (ties with the k-th included).
        """
        indptr, indices = self._indptr, self._indices
        rare = sorted(ids, key=lambda t: int(indptr[t + 1] - indptr[t]))
        parts, total = [], 0
        for t in rare:
            parts.append(indices[indptr[t]:indptr[t + 1]])
            total += parts[-1].size
            if total >= _BOUND_SAMPLE:
                break
        seen = parts[0]  # one posting list names each document once
        if len(parts) > 1:
            seen = np.sort(np.concatenate(parts))
            seen = seen[np.concatenate(([True], seen[1:] != seen[:-1]))]
        if seen.size < k:
            return None
        kth = -np.partition(-scores[seen], k - 1)[k - 1]
        return np.flatnonzero(scores >= kth)

    def _retrieve_chunk(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        """Batched path: one sparse float32 product of the queries' term counts with the
        posting lists of the terms they use."""
        q = self.query_matrix(queries)
        used = np.unique(q.indices)
        postings = self._rows(used)
        counts = sp.csr_matrix((q.data.astype(np.float32), np.searchsorted(used, q.indices), q.indptr),
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

    def _rows(self, terms: np.ndarray) -> sp.csr_matrix:
        """The posting lists of ``terms`` as a float32 CSR matrix (one row per term)."""
        starts, ends = self._indptr[terms], self._indptr[terms + 1]
        lengths = ends - starts
        indptr = np.zeros(terms.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(int(indptr[-1]))
        docs = self._indices[take]
        if self._mapped:
            self._check_documents(docs)
        return sp.csr_matrix((self._data[take].astype(np.float32), docs, indptr),
                             shape=(terms.size, len(self.documents)))

    def _rank(self, matched: np.ndarray, sums: np.ndarray, shift: float, k: int) -> list[ScoredDocument]:
        """Top ``k`` from the float32 sums of the ``matched`` documents (ties: corpus order).

        Documents whose score is not above an unmatched document's (the shift) follow in corpus
        order with the unmatched ones, exactly where a dense ranking puts them.
        """
        if self._has_negative:  # robertson idf: unmatched documents may outrank matched ones
            scores = np.zeros(len(self.documents), dtype=np.float32)
            scores[matched] = sums
            if shift:
                scores += shift
            return self._hits(topk(scores, k), scores)
        scores, base = (sums + shift if shift else sums).astype(np.float32, copy=False), np.float32(shift)
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

    # ------------------------------------------------------------------ updates
    def add_documents(self, documents: Iterable[DocumentLike], *, show_progress: bool | None = None) -> int:
        """Add documents to the index; every score afterwards equals a rebuild from scratch.

        Document frequencies and the average length change with the corpus, so all postings
        are rescored from the stored term frequencies (one vectorised pass, seconds for
        millions of passages): add in batches rather than one document at a time. Only memory
        changes; call :meth:`save` to persist (atomic: a kill leaves the saved index as it was).
        Not safe while other threads query this object; swap in an updated copy instead.

        Returns:
            The number of documents added.

        Raises:
            ValueError: an id already in the index or repeated in ``documents``, an empty list,
                or an index that cannot be updated (format 1, the rank_bm25 backend).
        """
        owner = "BM25Retriever.add_documents"
        self._check_updatable(owner)
        new = as_documents(documents, owner=owner, start=len(self.documents))
        ids = self._id_positions()
        clash = [d.id for d in new if d.id in ids]
        if clash:
            raise ValueError(f"{owner}: {len(clash)} id(s) already in the index (e.g. {clash[0]!r}); "
                             "delete them first to replace them, or give new ids.")
        if show_progress is None:
            show_progress = len(new) >= 20_000
        builder = PostingsBuilder()
        with self._progress(show_progress, len(new), "BM25 add") as bar:
            for chunk in _chunks(new, DEFAULT_CHUNK):
                builder.add(self.analyzer.analyze_many([d.full_text for d in chunk]))
                bar.update(len(chunk))
        postings, vocab = merge(self._postings_state(), builder.finish())
        start = len(self.documents)
        if isinstance(self.documents, list):
            documents: Sequence[Document] = [*self.documents, *new]
        elif isinstance(self.documents, DocumentView):
            documents = DocumentView(self.documents.base, self.documents.positions, [*self.documents.extra, *new])
        else:
            documents = DocumentView(self.documents, np.arange(len(self.documents)), new)
        self._install(postings, vocab)
        self.documents = documents
        ids.update((d.id, start + i) for i, d in enumerate(new))
        return len(new)

    def delete(self, ids: Iterable[str]) -> int:
        """Remove the documents with these ids; scores afterwards equal a rebuild from scratch.

        Rescoring works as in :meth:`add_documents`; call :meth:`save` to persist.

        Returns:
            The number of documents removed.

        Raises:
            KeyError: an id is not in the index (nothing is removed).
            ValueError: the deletion would leave the index empty, or the index cannot be updated.
        """
        owner = "BM25Retriever.delete"
        self._check_updatable(owner)
        if isinstance(ids, str):
            raise TypeError(f"{owner}: give a list of ids, not a single string (wrap it in a list).")
        wanted = list(dict.fromkeys(ids))
        if not all(isinstance(i, str) for i in wanted):
            raise TypeError(f"{owner}: document ids are strings.")
        positions = self._id_positions()
        missing = [i for i in wanted if i not in positions]
        if missing:
            raise KeyError(f"{owner}: {len(missing)} id(s) not in the index (e.g. {missing[0]!r}); nothing was deleted.")
        if not wanted:
            return 0
        if len(wanted) >= len(self.documents):
            raise ValueError(f"{owner}: deleting every document would leave an empty index; build a new one instead.")
        keep = np.ones(len(self.documents), dtype=bool)
        keep[[positions[i] for i in wanted]] = False
        postings, vocab = select(self._postings_state(), keep)
        docs = self.documents
        if isinstance(docs, list):
            documents: Sequence[Document] = [d for d, k in zip(docs, keep.tolist()) if k]
        elif isinstance(docs, DocumentView):
            documents = docs.select(keep)
        else:
            documents = DocumentView(docs, np.flatnonzero(keep))
        self._install(postings, vocab)
        self.documents = documents
        self._ids = None  # positions moved; rebuilt on the next update
        return len(wanted)

    def _check_updatable(self, owner: str) -> None:
        self._check_built(owner)
        if self._reference is not None:
            raise ValueError(f"{owner}: the 'rank_bm25' reference backend cannot be updated; use backend='native'.")
        if self._tf is None or self._doclen is None:
            raise ValueError(f"{owner}: this index was saved by an older ragprune (format 1) without term frequencies; "
                             "rebuild it (BM25Retriever.from_documents(index.documents, ...)) to update it.")

    def _id_positions(self) -> dict[str, int]:
        if self._ids is None:
            self._ids = {d.id: i for i, d in enumerate(self.documents)}
        return self._ids

    # ------------------------------------------------------------------ persistence
    def _params(self) -> dict[str, Any]:
        return {"method": self.method, "k1": self.k1, "b": self.b, "delta": self.delta,
                "epsilon": self.epsilon, "analyzer": self.analyzer.config(), "score_dtype": self.score_dtype}

    @staticmethod
    def _write_arrays(d: Path, p: Postings, data: np.ndarray, nonocc: np.ndarray, offsets: np.ndarray,
                      params: dict[str, Any]) -> None:
        """The format-2 files of ``p`` into ``d``; completes ``params`` with the counts."""
        arrays = {"scores": data, "indices": p.indices, "indptr": p.indptr, "nonocc": nonocc, "tf": p.tf,
                  "doclen": p.doclen}
        for name, arr in arrays.items():
            save_npy(d / f"{name}.npy", arr)
        save_npy(d / "documents.offsets.npy", offsets)
        (d / "vocab.json").write_text(json.dumps(p.terms, ensure_ascii=False), encoding="utf-8")
        params.update(n_docs=p.n_docs, n_terms=len(p.terms), nnz=int(p.indices.size),
                      has_negative=bool(data.size and data.min() < 0))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to folder ``path`` atomically (see :mod:`ragprune._io`).

        Saving over the folder the index was memory-mapped from is fine: the new version is
        written next to the old one, which is removed only after the switch.

        Raises:
            ValueError: the index uses the ``rank_bm25`` reference backend, or is a format-1
                index loaded from disk (rebuild it to save it in the current format).
        """
        if self._reference is not None:
            raise ValueError("BM25Retriever.save: the 'rank_bm25' backend cannot be saved; use backend='native'.")
        if self._tf is None:
            raise ValueError("BM25Retriever.save: this index was loaded from the older format 1, which lacks term "
                             "frequencies; rebuild it with BM25Retriever.from_documents(index.documents, ...).")
        self._check_built("BM25Retriever.save")
        params = self._params()

        def write(d: Path) -> None:
            offsets = write_documents(d / "documents.jsonl", self.documents)
            self._write_arrays(d, self._postings_state(), self._data, self._nonocc, offsets, params)

        write_index_dir(path, kind="bm25", format_version=FORMAT_VERSION, params=params, write_data=write)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False) -> BM25Retriever:
        """Load an index written by :meth:`save` or :meth:`build`. Never unpickles.

        Args:
            path: The index folder.
            mmap: Memory-map the arrays and leave the documents on disk (read per hit): loads
                in milliseconds and holds only what queries touch in RAM. Checks that read
                every posting run lazily (a damaged file surfaces at query time, still as
                ``IndexFormatError``). Format-1 indexes always load fully.

        Raises:
            FileNotFoundError: no index at ``path``.
            ragprune.IndexFormatError: corrupt files, another index kind or format version.
        """
        return load_index(path, kind="bm25", format_version=READABLE_VERSIONS,
                          read=lambda data_dir, params: cls._from_dir(data_dir, params, mmap))

    @classmethod
    def _from_dir(cls, data_dir: Path, params: dict[str, Any], mmap: bool) -> BM25Retriever:
        self = cls()
        owner = "BM25Retriever.load"
        try:
            self.method = check_choice(params["method"], METHODS, "method", owner)
            self.k1 = check_number(params["k1"], "k1", owner, low=0.0)
            self.b = check_number(params["b"], "b", owner, low=0.0, high=1.0)
            self.delta = check_number(params["delta"], "delta", owner, low=0.0)
            self.epsilon = check_number(params["epsilon"], "epsilon", owner, low=0.0)
            self.analyzer = Analyzer.from_config(params["analyzer"])
            self.score_dtype = check_choice(params.get("score_dtype", "float32"), SCORE_DTYPES, "score_dtype", owner)
            n_docs, n_terms = int(params["n_docs"]), int(params["n_terms"])
            terms = json.loads((data_dir / "vocab.json").read_text(encoding="utf-8"))
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise ValueError("vocab.json is not a list of terms")
        except (KeyError, TypeError, ValueError, OSError, RecursionError) as e:
            raise IndexFormatError(f"BM25Retriever.load: {data_dir} has bad params or vocab ({e}); rebuild the index.") from e
        self._source = str(data_dir)
        if params["format_version"] == 1:
            self._read_v1(data_dir, n_docs, n_terms, terms)
        else:
            self._read_v2(data_dir, params, n_docs, n_terms, terms, mmap)
        self.vocab = {t: i for i, t in enumerate(terms)}
        if len(self.vocab) != n_terms:
            raise IndexFormatError(f"BM25Retriever.load: {data_dir}/vocab.json repeats a term; rebuild the index.")
        return self

    def _read_v1(self, data_dir: Path, n_docs: int, n_terms: int, terms: list[str]) -> None:
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
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"BM25Retriever.load: {data_dir} is inconsistent ({e}); rebuild the index.") from e
        self._indptr = matrix.indptr.astype(np.int64)
        self._indices = matrix.indices.astype(np.int32)
        self._data = matrix.data
        self._set_scores(arrays["nonocc"].astype(np.float32))

    def _read_v2(self, data_dir: Path, params: dict[str, Any], n_docs: int, n_terms: int, terms: list[str],
                 mmap: bool) -> None:
        a = {name: load_npy(data_dir / f"{name}.npy", mmap=mmap) for name in _ARRAYS}
        offsets = load_npy(data_dir / "documents.offsets.npy", mmap=mmap)
        try:
            _check_arrays(a, offsets, n_docs, n_terms, len(terms), int(params["nnz"]), full=not mmap)
            has_negative = params["has_negative"]
            if not isinstance(has_negative, bool):
                raise ValueError("has_negative is not a boolean")
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise IndexFormatError(f"BM25Retriever.load: {data_dir} is inconsistent ({e}); rebuild the index.") from e
        docs_path = data_dir / "documents.jsonl"
        self.documents = DiskDocuments(docs_path, offsets) if mmap else read_documents(docs_path)
        if len(self.documents) != n_docs:
            raise IndexFormatError(f"BM25Retriever.load: {docs_path} holds {len(self.documents)} documents, "
                                   f"params.json says {n_docs}; rebuild the index.")
        self._indptr, self._indices, self._data = a["indptr"], a["indices"], a["scores"]
        self._tf, self._doclen = a["tf"], a["doclen"]
        self._set_scores(np.asarray(a["nonocc"], dtype=np.float32), has_negative)
        self._mapped = mmap

    def __repr__(self) -> str:
        return (f"BM25Retriever(method={self.method!r}, k1={self.k1}, b={self.b}, "
                f"docs={len(self.documents)}, terms={len(self.vocab)}, backend={self.backend!r})")


def _check_arrays(a: dict[str, np.ndarray], offsets: np.ndarray, n_docs: int, n_terms: int, n_vocab: int, nnz: int,
                  *, full: bool) -> None:
    """Shapes and dtypes always; with ``full`` also every document number and offset (reads
    the whole index, so a memory-mapped load skips it and checks postings per query)."""
    want = {"scores": ("f", (nnz,)), "indices": ("i", (nnz,)), "indptr": ("i", (n_terms + 1,)),
            "nonocc": ("f", (n_terms,)), "tf": ("u", (nnz,)), "doclen": ("i", (n_docs,))}
    for name, (kind, shape) in want.items():
        if a[name].dtype.kind != kind or a[name].shape != shape:
            raise ValueError(f"{name}.npy has dtype {a[name].dtype} and shape {a[name].shape}, expected "
                             f"kind {kind!r} and shape {shape}")
    if n_vocab != n_terms or offsets.shape != (n_docs + 1,) or offsets.dtype.kind not in "iu":
        raise ValueError("vocabulary, documents and params.json disagree")
    indptr = a["indptr"]
    if n_terms and (int(indptr[0]) != 0 or int(indptr[-1]) != nnz or bool(np.any(np.diff(indptr) < 0))):
        raise ValueError("indptr is not an ascending offset array")
    if full:
        idx = a["indices"]
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n_docs):
            raise ValueError("a posting names a document out of range")
        if bool(np.any(np.diff(offsets) <= 0)):
            raise ValueError("document offsets are not ascending")


def _check_unique_ids(d: Path, offsets: np.ndarray, hashes: np.ndarray, owner: str) -> None:
    """Raise if two documents written to ``d`` share an id (hashes first; equal hashes are
    confirmed by reading the ids back)."""
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if not same.size:
        return
    store = DiskDocuments(d / "documents.jsonl", offsets)
    seen: dict[str, int] = {}
    for pos in sorted(set(order[same].tolist()) | set(order[same + 1].tolist())):
        doc_id = store[pos].id
        if doc_id in seen:
            raise ValueError(f"{owner}: duplicate document id {doc_id!r} (documents {seen[doc_id]} and {pos}); "
                             "ids must be unique within a corpus.")
        seen[doc_id] = pos
