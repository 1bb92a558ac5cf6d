"""The retriever interface: one required method, typed results."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from .._validate import check_positive_int, check_queries, check_query
from ..types import Document, ScoredDocument


class Retriever(ABC):
    """Finds the ``k`` best documents of a corpus for a query.

    Subclasses implement :meth:`_retrieve_many` on validated input; the public methods
    validate arguments and never mutate the corpus, so a retriever is safe to share between
    threads once built.
    """

    documents: list[Document]

    def retrieve(self, query: str, k: int = 10) -> list[ScoredDocument]:
        """Return up to ``k`` documents for ``query``, best first.

        Args:
            query: A non-empty question or keyword string.
            k: Number of results (>= 1). A ``k`` larger than the corpus returns every document.

        Returns:
            ``ScoredDocument`` list sorted by descending score; ties keep corpus order.

        Raises:
            TypeError: ``query`` is not a string or ``k`` not an int.
            ValueError: ``query`` is blank or ``k < 1``.
        """
        name = type(self).__name__
        check_query(query, f"{name}.retrieve")
        check_positive_int(k, "k", f"{name}.retrieve")
        self._check_built(f"{name}.retrieve")
        return self._retrieve_many([query], k)[0]

    def _check_built(self, owner: str) -> None:
        if not getattr(self, "documents", None):
            name = type(self).__name__
            raise ValueError(f"{owner}: this retriever holds no documents; build it with {name}.from_documents(...) "
                             f"or {name}.load(path).")

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[ScoredDocument]]:
        """Batched :meth:`retrieve`: one result list per query, in input order."""
        name = type(self).__name__
        qs = check_queries(queries, f"{name}.retrieve_many")
        check_positive_int(k, "k", f"{name}.retrieve_many")
        self._check_built(f"{name}.retrieve_many")
        if not qs:
            return []
        return self._retrieve_many(qs, k)

    @abstractmethod
    def _retrieve_many(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        """Retrieve for validated, non-empty ``queries`` and ``k >= 1``."""

    def __len__(self) -> int:
        return len(self.documents)
