"""The two second-stage interfaces, each with one required protected method and typed results.

* :class:`Scorer` (pointwise): ``score(queries, docs)`` gives every ``(queries[i], docs[i])``
  pair a relevance score on its own. Cross-encoders and the Provence ranking head are scorers.
* :class:`Reranker` (list-wise): ``rerank(query, docs, k)`` orders a whole candidate list.
  Pairwise LLM prompting (PRP) is a reranker but not a scorer: it only compares candidates with
  each other, so it does not have a ``score`` method at all.
* :class:`PointwiseReranker` is both: it reranks by sorting on its own scores, optionally fused
  with the scores the candidates arrived with (``first_stage_weight``, an explicit option).

As in langchain-core (``BaseRetriever.invoke`` / ``_get_relevant_documents``), the public
methods validate and normalise their arguments and one protected method does the work:
``Scorer._score`` and ``Reranker._rerank_many``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from .._validate import check_number, check_positive_int, check_queries
from ..types import Document, DocumentLike, ScoredDocument, as_documents

__all__ = ["Scorer", "Reranker", "PointwiseReranker", "FusionWeight", "as_candidates", "check_pairs",
           "check_fusion_weight", "first_stage_scores", "fuse_scores"]

#: A first-stage fusion weight: a number in [0, 1] or ``"recommended"`` (the checkpoint's value).
FusionWeight = Union[float, Literal["recommended"]]  # noqa: UP007 (runtime alias, py3.10)


def as_candidates(docs: Any, owner: str) -> list[Document]:
    """Normalise a candidate list (ScoredDocument, Document, str or dicts) to Documents.

    An empty list is allowed (reranking nothing returns nothing).

    Raises:
        TypeError: ``docs`` is not a list, or an item is none of the accepted kinds.
    """
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise TypeError(f"{owner}: docs must be a list of ScoredDocument/Document/str, got {type(docs).__name__}.")
    if not docs:
        return []
    return as_documents([d.document if isinstance(d, ScoredDocument) else d for d in docs], owner=owner)


def first_stage_scores(docs: Sequence[Any]) -> list[float] | None:
    """The scores a candidate list arrived with: one per item when every item is a
    :class:`~ragprune.types.ScoredDocument`, else ``None`` (an empty list has all of them: ``[]``)."""
    if all(isinstance(d, ScoredDocument) for d in docs):
        return [float(d.score) for d in docs]
    return None


def check_pairs(queries: Sequence[str], docs: Sequence[DocumentLike], owner: str) -> tuple[list[str], list[Document]]:
    """Validate the ``(queries[i], docs[i])`` pairs of a ``score`` call; documents may be given as
    anything :func:`~ragprune.types.as_documents` takes.

    Raises:
        TypeError/ValueError: a blank query, ``docs`` not a list, or the two lengths differ.
    """
    queries = check_queries(queries, owner)
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise TypeError(f"{owner}: docs must be a list (one document per query), got {type(docs).__name__}.")
    if len(docs) != len(queries):
        raise ValueError(f"{owner}: got {len(queries)} queries but {len(docs)} documents; they are scored in pairs.")
    return queries, as_documents(list(docs), owner=owner, unique=False) if docs else []  # a pair may repeat a document


def check_fusion_weight(value: Any, owner: str, recommended: Mapping[str, Any] | None = None) -> float:
    """Validate a ``first_stage_weight`` option and return it as a float in [0, 1].

    Args:
        value: A number in [0, 1], or ``"recommended"`` for the value in ``recommended``
            (a checkpoint's ``ragprune.json``; 0 when it has none).
        owner: Class name for error messages.
        recommended: The checkpoint's recommendations (``{"first_stage_weight": 0.4, ...}``).

    Raises:
        TypeError/ValueError: not a number, outside [0, 1], or an unknown string.
    """
    if isinstance(value, str):
        if value != "recommended":
            raise ValueError(f"{owner}: unknown first_stage_weight {value!r}; pass a number in [0, 1] "
                             "(0 = the model's scores alone) or 'recommended' (the checkpoint's tuned value).")
        value = (recommended or {}).get("first_stage_weight", 0.0)
    return check_number(value, "first_stage_weight", owner, low=0.0, high=1.0)


def fuse_scores(model: Sequence[float], first_stage: Sequence[float], weight: float) -> list[float]:
    """``(1 - weight) * minmax(model) + weight * minmax(first_stage)`` over one candidate list.

    The range comes from the finite scores; ``+inf`` normalises to 1, ``-inf`` and NaN to 0 (a
    candidate without a usable score goes last instead of making every fused score NaN).

    Returns:
        One fused score in [0, 1] per candidate.
    """

    def minmax(xs: Sequence[float]) -> list[float]:
        finite = [x for x in xs if math.isfinite(x)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)

        def one(x: float) -> float:
            if not math.isfinite(x):
                return 1.0 if x == math.inf else 0.0
            return (x - lo) / (hi - lo) if hi > lo else 1.0

        return [one(float(x)) for x in xs]

    return [(1 - weight) * a + weight * b for a, b in zip(minmax(model), minmax(first_stage))]


class Scorer(ABC):
    """Pointwise relevance: each ``(query, document)`` pair gets a score on its own.

    Subclasses implement :meth:`_score` on validated input; :meth:`score` validates.

    Example:
        >>> class Shorter(Scorer):
        ...     def _score(self, queries, docs):
        ...         return [-float(len(d.text)) for d in docs]
        >>> Shorter().score(["q", "q"], ["a long passage", "short"])
        [-14.0, -5.0]
    """

    def score(self, queries: Sequence[str], docs: Sequence[DocumentLike]) -> list[float]:
        """Relevance score of each ``(queries[i], docs[i])`` pair (higher is better).

        Args:
            queries: Non-blank questions, one per document.
            docs: ``Document`` objects, plain strings or BEIR-style dicts (may repeat).

        Returns:
            One float per pair, in input order. The scale is the model's own (e.g. a logit).

        Raises:
            TypeError/ValueError: a blank query, malformed documents, or different lengths.
        """
        queries, documents = check_pairs(queries, docs, f"{type(self).__name__}.score")
        return [float(s) for s in self._score(queries, documents)] if documents else []

    @abstractmethod
    def _score(self, queries: list[str], docs: list[Document]) -> list[float]:
        """Score validated pairs (same length, at least one)."""


class Reranker(ABC):
    """Reorders a candidate list by relevance to the query.

    Subclasses implement :meth:`_rerank_many` on validated input; :meth:`rerank` and
    :meth:`rerank_many` validate their arguments and return new ``ScoredDocument`` objects
    (the caller's list is never changed). A backend that scores pairs one by one subclasses
    :class:`PointwiseReranker` and implements ``_score`` instead.

    Raises:
        TypeError: at class creation, for a list-wise subclass that defines ``score`` (the
            interface before pointwise scoring became :class:`Scorer`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "score" in cls.__dict__ and not issubclass(cls, Scorer):
            raise TypeError(f"{cls.__name__}: a Reranker has no pointwise score(); subclass PointwiseReranker and "
                            "implement _score(queries, docs) -> list[float], or implement "
                            "_rerank_many(queries, docs, first_stage, k) for list-wise reranking.")

    def rerank(self, query: str, docs: Sequence[ScoredDocument | DocumentLike], k: int | None = None
               ) -> list[ScoredDocument]:
        """Order the candidates by relevance to ``query`` and return the best ``k`` (all if None).

        Args:
            query: Non-empty question.
            docs: Candidates: ``ScoredDocument`` (e.g. a retriever's output), ``Document``,
                plain strings or BEIR-style dicts.
            k: Keep the best ``k`` (>= 1); ``None`` keeps all.

        Returns:
            ``ScoredDocument`` list, best first; ``score`` is what the list is ordered by,
            ``model_score`` the reranker's own score and ``first_stage_score`` the score the
            candidate arrived with (``None`` for candidates given without one).

        Raises:
            TypeError/ValueError: blank query, ``k < 1``, malformed candidates.
        """
        return self.rerank_many([query], [docs], k)[0]

    def rerank_many(self, queries: Sequence[str], docs: Sequence[Sequence[ScoredDocument | DocumentLike]],
                    k: int | None = None) -> list[list[ScoredDocument]]:
        """Batched :meth:`rerank`: ``docs[i]`` are the candidates of ``queries[i]``.

        Raises:
            TypeError/ValueError: as :meth:`rerank`, or the two lists differ in length.
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
        first = [first_stage_scores(d) for d in docs]
        return self._rerank_many(queries, cands, first, k)

    @abstractmethod
    def _rerank_many(self, queries: list[str], docs: list[list[Document]], first_stage: list[list[float] | None],
                     k: int | None) -> list[list[ScoredDocument]]:
        """Rerank validated input.

        Args:
            queries: Non-blank questions.
            docs: ``docs[i]``: the candidates of ``queries[i]`` (may be empty).
            first_stage: ``first_stage[i]``: the scores ``docs[i]`` arrived with, or ``None`` when
                any of them came without one (str, ``Document``, dict).
            k: Keep the best ``k`` per query; ``None`` keeps all.
        """


class PointwiseReranker(Scorer, Reranker):
    """A :class:`Reranker` that sorts candidates by its own :class:`Scorer` scores.

    ``first_stage_weight`` (default 0: the model's scores alone) is an explicit option: with a
    weight ``w > 0`` the result's ``score`` is ``(1 - w) * minmax(model) + w * minmax(first stage)``
    over each candidate list (:func:`fuse_scores`), a standard way to keep the first stage's
    lexical evidence, and the candidates must then all be ``ScoredDocument`` (a retriever's
    output): a list without first-stage scores is an error, never a silent switch to model
    scores. ``model_score`` always holds the model's own score.

    All pairs of a :meth:`rerank_many` call are scored together, so batches are full even when
    lists are short.
    """

    first_stage_weight: float = 0.0

    def _rerank_many(self, queries: list[str], docs: list[list[Document]], first_stage: list[list[float] | None],
                     k: int | None) -> list[list[ScoredDocument]]:
        w = self.first_stage_weight
        if w > 0:
            for i, (ds, fs) in enumerate(zip(docs, first_stage)):
                if ds and fs is None:
                    raise ValueError(
                        f"{type(self).__name__}.rerank: first_stage_weight={w:g} fuses the model's score with the "
                        f"score each candidate arrived with, but candidate list {i} holds items without one "
                        "(str, Document or dict); pass ScoredDocument candidates (a retriever's output) or use "
                        "first_stage_weight=0 for the model's scores alone.")
        pairs = [(q, d) for q, ds in zip(queries, docs) for d in ds]
        scores = [float(s) for s in self._score([p[0] for p in pairs], [p[1] for p in pairs])] if pairs else []
        out, pos = [], 0
        for ds, fs in zip(docs, first_stage):
            model = scores[pos : pos + len(ds)]
            pos += len(ds)
            final = fuse_scores(model, fs, w) if w > 0 and ds and fs is not None else model
            order = sorted(range(len(ds)), key=lambda i: (-final[i], i))
            out.append([ScoredDocument(ds[i], float(final[i]), model_score=model[i],
                                       first_stage_score=None if fs is None else fs[i]) for i in order[:k]])
        return out
