"""LangChain adapters (needs ``pip install 'ragprune[langchain]'``).

- :class:`RagpruneRetriever`: any ragprune retriever or :class:`~ragprune.pipeline.Pipeline`
  as a LangChain ``BaseRetriever``.
- :class:`RagpruneCompressor`: any ragprune reranker or pruner as a ``BaseDocumentCompressor``,
  so it drops into ``ContextualCompressionRetriever``.

Example:
    >>> from ragprune.integrations.langchain import RagpruneRetriever              # doctest: +SKIP
    >>> retriever = RagpruneRetriever(engine=BM25Retriever.from_documents(docs), k=5)
    >>> chain = retriever | format_docs | prompt | llm
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import BaseDocumentCompressor
    from langchain_core.documents import Document as LCDocument
    from langchain_core.retrievers import BaseRetriever
except ImportError as e:  # pragma: no cover - exercised when the extra is missing
    raise ImportError("ragprune.integrations.langchain needs langchain-core: pip install 'ragprune[langchain]'") from e

from ..types import Document, PrunedDocument, ScoredDocument

__all__ = ["RagpruneRetriever", "RagpruneCompressor", "to_langchain", "from_langchain"]


def to_langchain(item: ScoredDocument | PrunedDocument | Document, **extra: Any) -> LCDocument:
    """A ragprune result as a LangChain Document (id, title and score in metadata)."""
    doc = item if isinstance(item, Document) else item.document
    text = item.text if isinstance(item, PrunedDocument) else doc.text
    meta: dict[str, Any] = {**dict(doc.metadata), "id": doc.id, "title": doc.title, **extra}
    if isinstance(item, (ScoredDocument, PrunedDocument)):
        meta["score"] = item.score
    if isinstance(item, ScoredDocument) and item.model_score is not None:
        meta["model_score"] = item.model_score
    if isinstance(item, PrunedDocument):
        meta["compression"] = item.compression
        meta["kept_sentences"] = list(item.kept)
    return LCDocument(page_content=text, metadata=meta, id=doc.id)


def from_langchain(doc: LCDocument, index: int) -> Document:
    """A LangChain Document as a ragprune Document (id from ``doc.id``/metadata, else its position)."""
    meta = dict(doc.metadata or {})
    doc_id = doc.id or meta.get("id") or str(index)
    return Document(id=str(doc_id), text=doc.page_content, title=str(meta.get("title") or ""), metadata=meta)


class RagpruneRetriever(BaseRetriever):
    """A ragprune retriever (``retrieve``) or pipeline (``run``) behind LangChain's retriever API.

    Attributes:
        engine: A :class:`~ragprune.retrieve.base.Retriever` or :class:`~ragprune.pipeline.Pipeline`.
        k: Documents returned by a retriever (a pipeline returns what fits its budget).
    """

    engine: Any
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[LCDocument]:
        """``k`` (e.g. ``retriever.invoke(q, k=2)``) overrides the constructor's ``k`` for one call."""
        if hasattr(self.engine, "run"):
            ctx = self.engine.run(query)
            return [to_langchain(d) for d in ctx.documents][: k or None]
        return [to_langchain(h) for h in self.engine.retrieve(query, k=k or self.k)]


class RagpruneCompressor(BaseDocumentCompressor):
    """A ragprune reranker (``rerank``) or pruner (``prune``) as a LangChain document compressor.

    Attributes:
        engine: A :class:`~ragprune.rerank.base.Reranker` or :class:`~ragprune.prune.base.Pruner`.
        top_n: Documents kept by a reranker (``None``: all); a pruner keeps every document,
            with its pruned text, and drops the ones left empty.
    """

    engine: Any
    top_n: int | None = 3

    def compress_documents(self, documents: Sequence[LCDocument], query: str, callbacks: Any = None) -> Sequence[LCDocument]:
        docs = [from_langchain(d, i) for i, d in enumerate(documents)]
        if not docs:
            return []
        if hasattr(self.engine, "prune"):
            return [to_langchain(p) for p in self.engine.prune(query, docs) if p.text]
        return [to_langchain(h) for h in self.engine.rerank(query, docs, k=self.top_n)]
