"""Ray Data integration: rerank, prune or build contexts for a dataset of queries on a cluster.

Needs ``pip install 'ragprune[ray]'``. Each class is a callable for
:meth:`ray.data.Dataset.map_batches` that loads its model once per actor (in ``__init__``) and
then processes one batch of rows at a time, each row a query with its candidate documents:

- :class:`BatchReranker`: the candidates in reranked order with their scores;
- :class:`BatchPruner`: each candidate's pruned text, kept sentences and compression;
- :class:`BatchContextBuilder`: the :class:`~ragprune.Pipeline`'s context (rerank, prune, one
  token budget) built from the row's candidates instead of a retriever's.

:func:`rerank_dataset`, :func:`prune_dataset` and :func:`build_contexts` wrap ``map_batches``
with a fixed pool of actors. The results equal the in-process library's (``tests/test_ray.py``
checks scores to 1e-5 and identical texts): an actor runs the same classes on the same input.

Rows: a ``query`` column (str) and a ``documents`` column (the column names are options) holding,
per row, a list of strings or of mappings with ``text`` and optional ``id``/``_id``, ``title``
and ``score`` (a first-stage score; when every candidate of a row has one they arrive as
:class:`~ragprune.types.ScoredDocument`, as a retriever's output would). Batches may come as
``"numpy"``/``"default"`` (dict of arrays), ``"pandas"`` or ``"pyarrow"`` (``batch_format``);
a batch comes back in the format it arrived in, with the input columns untouched and the new
columns added (a new column replaces an input column of the same name). Document metadata is
not carried into the output columns.

Models are given as specs that travel to the workers: a name or path the library's loaders
resolve (``"ragprune-reranker"``, ``"ragprune-provence"``, a checkpoint folder, a Hugging Face
id) plus an ``options`` dict for the model's constructor, or a factory called as
``factory(**options)`` (any picklable callable, e.g. a class such as ``LeadPruner``) for other
backends. A built model object is refused: it would
be pickled to every worker instead of loaded there once.

Row order: with more than one actor, Ray Data may return rows in another order than the input's
unless ``ray.data.DataContext.get_current().execution_options.preserve_order = True``; carry an
id column (e.g. ``query_id``) to match results to inputs.

Example:
    >>> import ray                                                                  # doctest: +SKIP
    >>> from ragprune.integrations.ray import rerank_dataset
    >>> ray.init()                      # or ray.init(address="ray://head:10001") for a cluster
    >>> ds = ray.data.from_items([{"query_id": "q1", "query": "what causes scurvy",
    ...                            "documents": [{"id": "d1", "text": "Scurvy is ..."}, ...]}])
    >>> out = rerank_dataset(ds, "ragprune-reranker", top_n=10, concurrency=4, batch_size=16)
    >>> out.take(1)[0]["reranked_ids"]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from importlib.util import find_spec
from numbers import Integral
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from .._validate import check_positive_int, check_query
from ..text import TokenCounter, count_tokens
from ..types import Document, ScoredDocument, as_documents

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

if find_spec("ray") is None:  # checked without importing ray: no import-time side effects
    raise ImportError("ragprune.integrations.ray needs Ray Data: pip install 'ragprune[ray]'")

__all__ = ["BatchReranker", "BatchPruner", "BatchContextBuilder", "rerank_dataset", "prune_dataset",
           "build_contexts", "BATCH_FORMATS"]

#: The ``batch_format`` values the classes accept (``"default"`` is Ray's name for ``"numpy"``).
BATCH_FORMATS = ("default", "numpy", "pandas", "pyarrow")
BatchFormat = Literal["default", "numpy", "pandas", "pyarrow"]
#: A model spec: a name/path for the library's loader, or a factory called as ``factory(**options)``.
ModelSpec = Union[str, "os.PathLike[str]", Callable[..., Any]]  # noqa: UP007 (runtime alias, py3.10)
RerankerKind = Literal["cross-encoder", "provence"]
_RERANKER_KINDS = ("cross-encoder", "provence")


def _require_ray(owner: str) -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:  # pragma: no cover - ray without its data extra (pandas, pyarrow...)
        raise ImportError(f"{owner} needs Ray Data: pip install 'ragprune[ray]'") from e
    return ray


# ------------------------------------------------------------------------------------------
# Model specs


def _check_spec(model: Any, name: str, owner: str, *, optional: bool = False) -> None:
    if model is None and optional:
        return
    if isinstance(model, (str, os.PathLike)):
        if not str(model).strip():
            raise ValueError(f"{owner}: {name} is an empty string; pass a model name or path "
                             "(e.g. 'ragprune-reranker').")
        return
    built = not isinstance(model, type) and any(callable(getattr(model, m, None)) for m in ("rerank_many", "prune_many"))
    if built:
        raise TypeError(f"{owner}: {name} is a built {type(model).__name__}; pass its model name or path (and "
                        "options=...) or a factory (a class or function, called as factory(**options)), so each "
                        "worker loads the model once instead of receiving a pickled copy.")
    if not callable(model):
        raise TypeError(f"{owner}: {name} must be a model name/path (str) or a factory (a class or function), "
                        f"got {type(model).__name__}.")


def _check_options(options: Any, name: str, owner: str) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"{owner}: {name} must be a dict of constructor arguments, got {type(options).__name__}.")
    return dict(options)


def _load(model: ModelSpec, options: Mapping[str, Any], loader: Callable[..., Any], method: str, owner: str) -> Any:
    """Build the backend: ``loader(model, **options)`` for a name/path, ``model(**options)`` for a factory."""
    obj = loader(model, **options) if isinstance(model, (str, os.PathLike)) else model(**options)
    if not callable(getattr(obj, method, None)):
        raise TypeError(f"{owner}: the factory returned a {type(obj).__name__}, which has no {method}(); "
                        f"return a ragprune {'Reranker' if method == 'rerank_many' else 'Pruner'}.")
    return obj


def _cross_encoder(model: Any, **options: Any) -> Any:
    from ..rerank.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(model, **options)


def _provence(model: Any, **options: Any) -> Any:
    from ..prune.provence import ProvencePruner

    return ProvencePruner(model, **options)


def _reranker_loader(kind: str, owner: str) -> Callable[..., Any]:
    if kind not in _RERANKER_KINDS:
        raise ValueError(f"{owner}: unknown kind {kind!r}; expected one of {', '.join(map(repr, _RERANKER_KINDS))}.")
    return _cross_encoder if kind == "cross-encoder" else _provence


# ------------------------------------------------------------------------------------------
# Batches in, batches out


def _plain(x: Any) -> Any:
    """Numpy containers and scalars as plain Python values (lists, dicts, str, float...)."""
    if isinstance(x, np.ndarray):
        return _plain(x.item()) if x.ndim == 0 else [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (lists stay list cells, never a 2-D array)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


class _Batch:
    """Reads the columns of one batch (dict of arrays, pandas or pyarrow) and writes new ones in
    the same format."""

    def __init__(self, batch: Any, owner: str) -> None:
        self.batch, self.owner = batch, owner
        if isinstance(batch, Mapping):
            self.kind, self.names = "numpy", list(batch)
        elif type(batch).__module__.startswith("pandas") and hasattr(batch, "columns"):
            self.kind, self.names = "pandas", [str(c) for c in batch.columns]
        elif type(batch).__module__.startswith("pyarrow") and hasattr(batch, "column_names"):
            self.kind, self.names = "pyarrow", list(batch.column_names)
        else:
            raise TypeError(f"{owner}: expected a batch as a dict of numpy arrays, a pandas DataFrame or a pyarrow "
                            f"Table (map_batches batch_format 'numpy', 'pandas' or 'pyarrow'), got "
                            f"{type(batch).__name__}.")

    def column(self, name: str, option: str, holds: str) -> list[Any]:
        if name not in self.names:
            raise ValueError(f"{self.owner}: the batch has no column {name!r} (columns: {', '.join(map(repr, self.names))}); "
                             f"pass {option}= naming the column that holds {holds}.")
        if self.kind == "numpy":
            col = self.batch[name]
            return [_plain(v) for v in (col if isinstance(col, (np.ndarray, list, tuple)) else list(col))]
        if self.kind == "pandas":
            return [_plain(v) for v in self.batch[name].tolist()]
        return self.batch.column(name).to_pylist()

    def with_columns(self, columns: Mapping[str, tuple[list[Any], Any]]) -> Any:
        """The batch plus ``columns`` (name -> (values, pyarrow type)), in the input's format."""
        if self.kind == "numpy":
            out = {k: _arrow_friendly(v) for k, v in self.batch.items()}
            for name, (values, _) in columns.items():
                out[name] = _objects(values)
            return out
        import pyarrow as pa

        if self.kind == "pandas":
            import pandas as pd

            out = self.batch.copy(deep=False)
            for name, (values, typ) in columns.items():
                out[name] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, type=typ)), index=out.index)
            return out
        out = self.batch
        for name, (values, typ) in columns.items():
            arr = pa.array(values, type=typ)
            i = out.schema.get_field_index(name)
            out = out.set_column(i, name, arr) if i >= 0 else out.append_column(name, arr)
        return out


def _arrow_friendly(col: Any) -> Any:
    """An input column passed through: object cells that are numpy arrays of strings or dicts
    (how Ray hands over list columns) become lists, which Ray converts back to Arrow lists
    instead of pickling them. Other columns, numeric tensors included, are returned as they are."""
    if isinstance(col, np.ndarray) and col.dtype == object and col.ndim == 1 and any(
            isinstance(v, np.ndarray) and v.dtype == object for v in col):
        return _objects([_plain(v) if isinstance(v, np.ndarray) and v.dtype == object else v for v in col])
    return col


def _queries(batch: _Batch, column: str, owner: str) -> list[str]:
    out = []
    for i, q in enumerate(batch.column(column, "query_column", "the queries")):
        check_query(q, f"{owner} (row {i} of the batch, column {column!r})")
        out.append(q)
    return out


def _rows(batch: Any, query_column: str, documents_column: str, owner: str) -> tuple[_Batch, list[str], list[Any]]:
    """A batch as ``(batch, queries, candidate lists)``, each checked (errors name the row)."""
    b = _Batch(batch, owner)
    return b, _queries(b, query_column, owner), _candidates(b, documents_column, owner)


def _candidates(batch: _Batch, column: str, owner: str) -> list[list[Document] | list[ScoredDocument]]:
    """Per row: ``ScoredDocument`` s when every candidate carries a numeric ``score``, else ``Document`` s."""
    out: list[Any] = []
    for i, docs in enumerate(batch.column(column, "documents_column", "each query's candidate documents")):
        where = f"{owner} (row {i} of the batch, column {column!r})"
        if docs is None:
            docs = []
        if isinstance(docs, (str, bytes, Mapping)) or not isinstance(docs, Sequence):
            raise TypeError(f"{where}: expected a list of documents (str, or mappings with 'text' and optional "
                            f"'id'/'title'/'score'), got a single {type(docs).__name__}; wrap it in a list.")
        if not docs:
            out.append([])
            continue
        documents = as_documents([d.document if isinstance(d, ScoredDocument) else d for d in docs], owner=where)
        scores = [d.get("score") if isinstance(d, Mapping) else getattr(d, "score", None) for d in docs]
        if all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            out.append([ScoredDocument(d, float(s)) for d, s in zip(documents, scores)])
        else:
            out.append(documents)
    return out


def _as_dict(hit: ScoredDocument) -> dict[str, Any]:
    return {"id": hit.id, "text": hit.document.text, "title": hit.document.title, "score": float(hit.score)}


def _pa_types() -> dict[str, Any]:
    import pyarrow as pa

    return {"str": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(),
            "strs": pa.list_(pa.string()), "floats": pa.list_(pa.float64()), "ints": pa.list_(pa.list_(pa.int64())),
            "docs": pa.list_(pa.struct([("id", pa.string()), ("text", pa.string()), ("title", pa.string()),
                                        ("score", pa.float64())]))}


def _check_column_name(name: Any, option: str, owner: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{owner}: {option} must be a non-empty column name (str), got {name!r}.")
    return name


# ------------------------------------------------------------------------------------------
# Callable classes for map_batches


class BatchReranker:
    """Rerank each row's candidates; a callable class for ``Dataset.map_batches``.

    The model is loaded once, in ``__init__`` (once per Ray actor). Each call reranks the rows of
    one batch together (:meth:`~ragprune.rerank.base.Reranker.rerank_many`).

    Args:
        model: A name or path for the loader of ``kind`` (default ``"ragprune-reranker"``, the
            shipped MiniLM cross-encoder), or a factory returning a
            :class:`~ragprune.rerank.base.Reranker` (called as ``model(**options)``).
        kind: ``"cross-encoder"`` (:class:`~ragprune.CrossEncoderReranker`) or ``"provence"``
            (:class:`~ragprune.ProvencePruner`'s ranking head); ignored for a factory.
        options: Keyword arguments of the model's constructor (``{"max_length": 256,
            "first_stage_weight": "recommended"}``...).
        top_n: Keep the best ``top_n`` candidates per row (``None``: all).
        query_column, documents_column: Input columns (see the module docstring).

    Returns (per call): the batch with ``reranked_ids`` (list of str, best first),
    ``rerank_scores`` (list of float: what the list is ordered by, as
    :attr:`ScoredDocument.score <ragprune.types.ScoredDocument.score>`), ``rerank_model_scores``
    (list of float: the model's own scores) and ``reranked_documents`` (list of
    ``{id, text, title, score}`` in reranked order, ready to be another stage's ``documents``).

    Raises:
        TypeError/ValueError: at construction, a bad option or model spec; per batch, a missing
            column, an empty query or malformed candidates (the message names the row).

    Example:
        >>> ds.map_batches(BatchReranker, fn_constructor_kwargs={"top_n": 10},          # doctest: +SKIP
        ...                compute=ray.data.ActorPoolStrategy(size=2), batch_size=16)
        >>> BatchReranker()({"query": np.array(["scurvy"]),                             # doctest: +SKIP
        ...                  "documents": np.array([["Scurvy is ...", "Paris is ..."]], dtype=object)})
    """

    _OWNER = "BatchReranker"  # error messages; not type(self).__name__, Ray Data wraps the class

    def __init__(self, model: ModelSpec = "ragprune-reranker", *, kind: RerankerKind = "cross-encoder",
                 options: Mapping[str, Any] | None = None, top_n: int | None = None,
                 query_column: str = "query", documents_column: str = "documents") -> None:
        owner = self._OWNER
        _check_spec(model, "model", owner)
        loader = _reranker_loader(kind, owner)
        self.top_n = None if top_n is None else check_positive_int(top_n, "top_n", owner)
        self.query_column = _check_column_name(query_column, "query_column", owner)
        self.documents_column = _check_column_name(documents_column, "documents_column", owner)
        self.reranker = _load(model, _check_options(options, "options", owner), loader, "rerank_many", owner)

    def __call__(self, batch: Any) -> Any:
        owner = self._OWNER
        b, queries, cands = _rows(batch, self.query_column, self.documents_column, owner)
        hits = self.reranker.rerank_many(queries, cands, k=self.top_n) if queries else []
        t = _pa_types()
        return b.with_columns({
            "reranked_ids": ([[h.id for h in hs] for hs in hits], t["strs"]),
            "rerank_scores": ([[float(h.score) for h in hs] for hs in hits], t["floats"]),
            "rerank_model_scores": ([[float(h.score if h.model_score is None else h.model_score) for h in hs]
                                     for hs in hits], t["floats"]),
            "reranked_documents": ([[_as_dict(h) for h in hs] for hs in hits], t["docs"]),
        })

    def __repr__(self) -> str:
        return f"BatchReranker({self.reranker!r}, top_n={self.top_n})"


class BatchPruner:
    """Prune each row's candidates for its query; a callable class for ``Dataset.map_batches``.

    The model is loaded once, in ``__init__`` (once per Ray actor). Each call prunes the rows of
    one batch together (:meth:`~ragprune.prune.base.Pruner.prune_many`); the candidates of a row
    are pruned together, as in-process (Provence compares passages of one query).

    Args:
        model: A name or path for :class:`~ragprune.ProvencePruner` (default
            ``"ragprune-provence"``, the shipped model), or a factory returning a
            :class:`~ragprune.prune.base.Pruner` (called as ``model(**options)``).
        options: Keyword arguments of the pruner's constructor (``{"threshold": 0.1}``...).
        query_column, documents_column: Input columns (see the module docstring).

    Returns (per call): the batch with, per row and in the pruner's document order (the input
    order unless ``reorder``): ``pruned_ids`` (list of str), ``pruned_texts`` (list of str: the
    kept text), ``kept_sentences`` (list of lists of int: indices into the pruner's sentence
    split of ``text``), ``compressions`` (list of float in [0, 1]: share of tokens removed) and
    ``prune_scores`` (list of float: each document's relevance score).

    Raises:
        TypeError/ValueError: at construction, a bad option or model spec; per batch, a missing
            column, an empty query or malformed candidates (the message names the row).

    Example:
        >>> ds.map_batches(BatchPruner, fn_constructor_kwargs={"options": {"threshold": 0.1}},  # doctest: +SKIP
        ...                compute=ray.data.ActorPoolStrategy(size=2), batch_size=8)
    """

    _OWNER = "BatchPruner"  # error messages; not type(self).__name__, Ray Data wraps the class

    def __init__(self, model: ModelSpec = "ragprune-provence", *, options: Mapping[str, Any] | None = None,
                 query_column: str = "query", documents_column: str = "documents") -> None:
        owner = self._OWNER
        _check_spec(model, "model", owner)
        self.query_column = _check_column_name(query_column, "query_column", owner)
        self.documents_column = _check_column_name(documents_column, "documents_column", owner)
        self.pruner = _load(model, _check_options(options, "options", owner), _provence, "prune_many", owner)

    def __call__(self, batch: Any) -> Any:
        owner = self._OWNER
        b, queries, cands = _rows(batch, self.query_column, self.documents_column, owner)
        pruned = self.pruner.prune_many(queries, cands) if queries else []
        t = _pa_types()
        return b.with_columns({
            "pruned_ids": ([[p.id for p in ps] for ps in pruned], t["strs"]),
            "pruned_texts": ([[p.text for p in ps] for ps in pruned], t["strs"]),
            "kept_sentences": ([[list(p.kept) for p in ps] for ps in pruned], t["ints"]),
            "compressions": ([[float(p.compression) for p in ps] for ps in pruned], t["floats"]),
            "prune_scores": ([[float(p.score) for p in ps] for ps in pruned], t["floats"]),
        })

    def __repr__(self) -> str:
        return f"BatchPruner({self.pruner!r})"


class _GivenCandidates:
    """The candidates of one batch in the role of the :class:`~ragprune.Pipeline`'s retriever.

    ``retrieve_many(queries, k)`` returns the rows' candidate lists (cut to ``k``), in row order.
    Candidates without a first-stage score are ranked in the order given (score ``-position``).
    """

    def __init__(self, lists: list[list[ScoredDocument]]) -> None:
        self.lists = lists

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[ScoredDocument]]:
        if len(queries) != len(self.lists):  # pragma: no cover - the builder passes its own rows
            raise ValueError(f"BatchContextBuilder: {len(queries)} queries for {len(self.lists)} candidate lists.")
        return [hits[:k] for hits in self.lists]

    def __repr__(self) -> str:
        return "GivenCandidates()"


class BatchContextBuilder:
    """Build each row's context from its candidates; a callable class for ``Dataset.map_batches``.

    What :meth:`Pipeline.run_many <ragprune.Pipeline.run_many>` does after retrieval, with the
    row's candidates as the retriever's output: rerank, keep ``top_k``, prune, fit the pruned
    sentences into ``max_tokens`` (the same :class:`~ragprune.Pipeline` runs on the actor, so
    the context text is the in-process one). Models are loaded once, in ``__init__``.

    Args:
        reranker: Reranker spec as :class:`BatchReranker`'s ``model``, or ``None`` to keep the
            candidates' order (their ``score`` if every candidate has one, else the order given).
        pruner: Pruner spec as :class:`BatchPruner`'s ``model``, or ``None`` to keep every sentence.
        reranker_kind: ``kind`` of a reranker given by name (see :class:`BatchReranker`).
        reranker_options, pruner_options: Constructor keyword arguments of each model.
        one_pass: The pruner also reranks (the :attr:`Pipeline.one_pass <ragprune.Pipeline.one_pass>`
            preset: one model pass over all candidates); ``reranker`` must then be ``None``.
        max_tokens, top_k, backfill, token_counter: As for :class:`~ragprune.Pipeline`.
        candidates: Use only each row's first ``candidates`` candidates (``None``: all).
        query_column, documents_column: Input columns (see the module docstring).

    Returns (per call): the batch with ``context`` (str: :attr:`Context.text
    <ragprune.pipeline.Context.text>`), ``context_ids`` (list of str: its documents, in context
    order), ``context_tokens`` (int), ``context_truncated`` (bool) and ``context_compression``
    (float: share of the top documents' body tokens removed).

    Raises:
        TypeError/ValueError: at construction, a bad option or model spec; per batch, a missing
            column, an empty query, malformed candidates, or candidates without scores for a
            reranker that fuses first-stage scores (``first_stage_weight > 0``).

    Example:
        >>> ds.map_batches(BatchContextBuilder, fn_constructor_kwargs={"max_tokens": 300},  # doctest: +SKIP
        ...                compute=ray.data.ActorPoolStrategy(size=2), batch_size=8)
    """

    _OWNER = "BatchContextBuilder"  # error messages; not type(self).__name__, Ray Data wraps the class

    def __init__(self, reranker: ModelSpec | None = "ragprune-reranker", pruner: ModelSpec | None = "ragprune-provence",
                 *, reranker_kind: RerankerKind = "cross-encoder", reranker_options: Mapping[str, Any] | None = None,
                 pruner_options: Mapping[str, Any] | None = None, one_pass: bool = False, max_tokens: int = 1000,
                 top_k: int = 10, candidates: int | None = None, backfill: bool | str = True,
                 token_counter: TokenCounter = count_tokens, query_column: str = "query",
                 documents_column: str = "documents") -> None:
        owner = self._OWNER
        _check_spec(reranker, "reranker", owner, optional=True)
        _check_spec(pruner, "pruner", owner, optional=True)
        loader = _reranker_loader(reranker_kind, owner)
        if one_pass and (reranker is not None or pruner is None):
            raise ValueError(f"{owner}: one_pass=True ranks with the pruner itself; pass reranker=None and a pruner.")
        self.max_tokens = check_positive_int(max_tokens, "max_tokens", owner)
        self.top_k = check_positive_int(top_k, "top_k", owner)
        self.candidates = None if candidates is None else check_positive_int(candidates, "candidates", owner)
        if not isinstance(backfill, bool) and backfill != "kept-documents":
            raise TypeError(f"{owner}: backfill must be True, False or 'kept-documents', got {backfill!r}.")
        self.backfill = backfill
        if not callable(token_counter):
            raise TypeError(f"{owner}: token_counter must be callable (text -> int), got {type(token_counter).__name__}.")
        self.token_counter = token_counter
        self.query_column = _check_column_name(query_column, "query_column", owner)
        self.documents_column = _check_column_name(documents_column, "documents_column", owner)
        r_opts = _check_options(reranker_options, "reranker_options", owner)
        p_opts = _check_options(pruner_options, "pruner_options", owner)
        self.pruner = None if pruner is None else _load(pruner, p_opts, _provence, "prune_many", owner)
        self.reranker = (self.pruner if one_pass else
                         None if reranker is None else _load(reranker, r_opts, loader, "rerank_many", owner))

    def pipeline(self, lists: list[list[ScoredDocument]]) -> Any:
        """The :class:`~ragprune.Pipeline` that builds the contexts of one batch's candidate ``lists``."""
        from ..pipeline import Pipeline

        longest = max((len(c) for c in lists), default=1)
        return Pipeline(_GivenCandidates(lists), self.reranker, self.pruner, max_tokens=self.max_tokens,
                        candidates=self.candidates or max(1, longest), top_k=self.top_k,
                        token_counter=self.token_counter, backfill=self.backfill)

    def __call__(self, batch: Any) -> Any:
        owner = self._OWNER
        b, queries, cands = _rows(batch, self.query_column, self.documents_column, owner)
        lists = []
        fuses = (self.reranker is not None and self.reranker is not self.pruner
                 and float(getattr(self.reranker, "first_stage_weight", 0.0) or 0.0) > 0)
        for i, c in enumerate(cands):
            if c and not isinstance(c[0], ScoredDocument):
                if fuses:
                    raise ValueError(
                        f"{owner} (row {i} of the batch, column {self.documents_column!r}): the reranker fuses its "
                        f"score with a first-stage score (first_stage_weight={self.reranker.first_stage_weight:g}) "
                        "but these candidates carry no 'score'; give every candidate a numeric 'score' (a "
                        "retriever's) or pass reranker_options={'first_stage_weight': 0}.")
                c = [ScoredDocument(d, -float(j)) for j, d in enumerate(c)]  # the order given
            lists.append(c)
        contexts = self.pipeline(lists).run_many(queries) if queries else []
        t = _pa_types()
        return b.with_columns({
            "context": ([c.text for c in contexts], t["str"]),
            "context_ids": ([[d.id for d in c.documents] for c in contexts], t["strs"]),
            "context_tokens": ([int(c.tokens) for c in contexts], t["int"]),
            "context_truncated": ([bool(c.truncated) for c in contexts], t["bool"]),
            "context_compression": ([float(c.stats.get("compression", 0.0)) for c in contexts], t["float"]),
        })

    def __repr__(self) -> str:
        return f"BatchContextBuilder({self.reranker!r}, {self.pruner!r}, max_tokens={self.max_tokens})"


# ------------------------------------------------------------------------------------------
# Dataset functions


def _check_dataset(ds: Any, columns: Sequence[str], owner: str) -> Any:
    ray = _require_ray(owner)
    if not isinstance(ds, ray.data.Dataset):
        raise TypeError(f"{owner}: ds must be a ray.data.Dataset, got {type(ds).__name__}; build one with "
                        "ray.data.from_items(rows) or ray.data.read_parquet(path).")
    try:
        names = ds.columns(fetch_if_missing=False)  # known without running the dataset, or None
    except Exception:  # e.g. rows whose types Arrow cannot unify: running the dataset will say so
        names = None
    missing = [c for c in columns if names is not None and c not in names]
    if missing:
        raise ValueError(f"{owner}: the dataset has no column {missing[0]!r} (columns: {', '.join(map(repr, names))}); "
                         "pass query_column=/documents_column= naming the columns that hold the queries and their "
                         "candidate documents.")
    return ray


def _map(ds: Any, cls: type, kwargs: dict[str, Any], *, concurrency: int | tuple[int, int], batch_size: int,
         batch_format: str, num_cpus: float | None, owner: str) -> Any:
    ray = _check_dataset(ds, [kwargs["query_column"], kwargs["documents_column"]], owner)
    if isinstance(concurrency, tuple):
        if len(concurrency) != 2:
            raise ValueError(f"{owner}: concurrency must be an int (actors) or a (min, max) pair, got {concurrency!r}.")
        lo, hi = (check_positive_int(c, "concurrency", owner) for c in concurrency)
        if lo > hi:
            raise ValueError(f"{owner}: concurrency (min, max) must have min <= max, got {concurrency!r}.")
        compute = ray.data.ActorPoolStrategy(min_size=lo, max_size=hi)
    else:
        compute = ray.data.ActorPoolStrategy(size=check_positive_int(concurrency, "concurrency", owner))
    check_positive_int(batch_size, "batch_size", owner)
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"{owner}: unknown batch_format {batch_format!r}; expected one of "
                         f"{', '.join(map(repr, BATCH_FORMATS))}.")
    extra: dict[str, Any] = {}
    if num_cpus is not None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (Integral, float)) or num_cpus <= 0:
            raise ValueError(f"{owner}: num_cpus must be a number > 0 (CPUs reserved per actor), got {num_cpus!r}.")
        extra["num_cpus"] = num_cpus
    return ds.map_batches(cls, fn_constructor_kwargs=kwargs, compute=compute, batch_size=batch_size,
                          batch_format=batch_format, **extra)


def rerank_dataset(ds: ray.data.Dataset, reranker: ModelSpec = "ragprune-reranker", *, top_n: int | None = None,
                   kind: RerankerKind = "cross-encoder", options: Mapping[str, Any] | None = None,
                   concurrency: int | tuple[int, int] = 1, batch_size: int = 16, batch_format: BatchFormat = "numpy",
                   num_cpus: float | None = None, query_column: str = "query",
                   documents_column: str = "documents") -> ray.data.Dataset:
    """Rerank every row's candidates on a pool of Ray actors (:class:`BatchReranker`).

    Args:
        ds: Rows with a query and its candidate documents (module docstring).
        reranker, kind, options, top_n, query_column, documents_column: As for :class:`BatchReranker`.
        concurrency: Actors (each loads the model once), or ``(min, max)`` for an autoscaling pool.
        batch_size: Rows per call (each row holds all its candidates).
        batch_format: How batches reach the actors: ``"numpy"`` (``"default"``), ``"pandas"``
            or ``"pyarrow"``; results are the same.
        num_cpus: CPUs reserved per actor (Ray's default: 1; torch then uses that many threads).

    Returns:
        A new lazy ``Dataset``: the input columns plus ``reranked_ids``, ``rerank_scores``,
        ``rerank_model_scores`` and ``reranked_documents``.

    Raises:
        TypeError/ValueError: a bad option, ``ds`` not a Dataset, or a column missing from a
            schema known without running the dataset (else the first batch raises).

    Example:
        >>> out = rerank_dataset(ds, top_n=10, concurrency=2, batch_size=16)   # doctest: +SKIP
        >>> out.select_columns(["query_id", "reranked_ids"]).write_parquet("reranked/")  # doctest: +SKIP
    """
    owner = "rerank_dataset"
    kwargs = {"model": reranker, "kind": kind, "options": _check_options(options, "options", owner), "top_n": top_n,
              "query_column": query_column, "documents_column": documents_column}
    _check_spec(reranker, "reranker", owner)
    _reranker_loader(kind, owner)
    if top_n is not None:
        check_positive_int(top_n, "top_n", owner)
    return _map(ds, BatchReranker, kwargs, concurrency=concurrency, batch_size=batch_size,
                batch_format=batch_format, num_cpus=num_cpus, owner=owner)


def prune_dataset(ds: ray.data.Dataset, pruner: ModelSpec = "ragprune-provence", *,
                  options: Mapping[str, Any] | None = None, concurrency: int | tuple[int, int] = 1,
                  batch_size: int = 8, batch_format: BatchFormat = "numpy", num_cpus: float | None = None,
                  query_column: str = "query", documents_column: str = "documents") -> ray.data.Dataset:
    """Prune every row's candidates on a pool of Ray actors (:class:`BatchPruner`).

    Args and Raises as :func:`rerank_dataset`, with ``pruner``/``options`` as for :class:`BatchPruner`.

    Returns:
        A new lazy ``Dataset``: the input columns plus ``pruned_ids``, ``pruned_texts``,
        ``kept_sentences``, ``compressions`` and ``prune_scores``.

    Example:
        >>> out = prune_dataset(rerank_dataset(ds, top_n=5), documents_column="reranked_documents",
        ...                     concurrency=2)                                      # doctest: +SKIP
    """
    owner = "prune_dataset"
    _check_spec(pruner, "pruner", owner)
    kwargs = {"model": pruner, "options": _check_options(options, "options", owner), "query_column": query_column,
              "documents_column": documents_column}
    return _map(ds, BatchPruner, kwargs, concurrency=concurrency, batch_size=batch_size,
                batch_format=batch_format, num_cpus=num_cpus, owner=owner)


def build_contexts(ds: ray.data.Dataset, reranker: ModelSpec | None = "ragprune-reranker",
                   pruner: ModelSpec | None = "ragprune-provence", *, max_tokens: int = 1000, top_k: int = 10,
                   candidates: int | None = None, backfill: bool | str = True, one_pass: bool = False,
                   reranker_kind: RerankerKind = "cross-encoder", reranker_options: Mapping[str, Any] | None = None,
                   pruner_options: Mapping[str, Any] | None = None, token_counter: TokenCounter = count_tokens,
                   concurrency: int | tuple[int, int] = 1, batch_size: int = 8, batch_format: BatchFormat = "numpy",
                   num_cpus: float | None = None, query_column: str = "query",
                   documents_column: str = "documents") -> ray.data.Dataset:
    """Build every row's context on a pool of Ray actors (:class:`BatchContextBuilder`).

    Args and Raises as :func:`rerank_dataset`, with the model and budget options as for
    :class:`BatchContextBuilder`.

    Returns:
        A new lazy ``Dataset``: the input columns plus ``context``, ``context_ids``,
        ``context_tokens``, ``context_truncated`` and ``context_compression``.

    Example:
        >>> out = build_contexts(ds, max_tokens=300, top_k=5, concurrency=2)   # doctest: +SKIP
        >>> out.take(1)[0]["context"]                                          # doctest: +SKIP
    """
    owner = "build_contexts"
    _check_spec(reranker, "reranker", owner, optional=True)
    _check_spec(pruner, "pruner", owner, optional=True)
    _reranker_loader(reranker_kind, owner)
    check_positive_int(max_tokens, "max_tokens", owner)
    check_positive_int(top_k, "top_k", owner)
    if candidates is not None:
        check_positive_int(candidates, "candidates", owner)
    if one_pass and (reranker is not None or pruner is None):
        raise ValueError(f"{owner}: one_pass=True ranks with the pruner itself; pass reranker=None and a pruner.")
    kwargs = {"reranker": reranker, "pruner": pruner, "reranker_kind": reranker_kind,
              "reranker_options": _check_options(reranker_options, "reranker_options", owner),
              "pruner_options": _check_options(pruner_options, "pruner_options", owner), "one_pass": one_pass,
              "max_tokens": max_tokens, "top_k": top_k, "candidates": candidates, "backfill": backfill,
              "token_counter": token_counter, "query_column": query_column, "documents_column": documents_column}
    return _map(ds, BatchContextBuilder, kwargs, concurrency=concurrency, batch_size=batch_size,
                batch_format=batch_format, num_cpus=num_cpus, owner=owner)
