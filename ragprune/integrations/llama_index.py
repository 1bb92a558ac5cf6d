"""LlamaIndex adapters (needs ``pip install 'ragprune[llamaindex]'``).

- :class:`RagpruneNodePostprocessor`: any ragprune reranker or pruner as a LlamaIndex node
  postprocessor (``node_postprocessors=[...]`` of a query engine).
- :class:`RagpruneLlamaRetriever`: any ragprune retriever or pipeline as a LlamaIndex retriever.

Example:
    >>> from llama_index.core.query_engine import RetrieverQueryEngine         # doctest: +SKIP
    >>> engine = RetrieverQueryEngine.from_args(
    ...     RagpruneLlamaRetriever(engine=bm25, k=20), llm=my_llm,
    ...     node_postprocessors=[RagpruneNodePostprocessor(engine=ProvencePruner())])
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # pragma: no cover - exercised when the extra is missing
    raise ImportError("ragprune.integrations.llama_index needs llama-index-core: "
                      "pip install 'ragprune[llamaindex]'") from e

from ..types import Document, PrunedDocument, ScoredDocument

__all__ = ["RagpruneNodePostprocessor", "RagpruneLlamaRetriever", "to_node", "from_node"]


def to_node(item: ScoredDocument | PrunedDocument) -> NodeWithScore:
    """A ragprune result as a scored LlamaIndex ``TextNode`` (id, title, compression in metadata)."""
    doc = item.document
    text = item.text if isinstance(item, PrunedDocument) else doc.text
    meta: dict[str, Any] = {**dict(doc.metadata), "title": doc.title}
    if isinstance(item, PrunedDocument):
        meta["compression"] = item.compression
        meta["kept_sentences"] = list(item.kept)
    elif item.model_score is not None:
        meta["model_score"] = item.model_score
    return NodeWithScore(node=TextNode(id_=doc.id, text=text, metadata=meta), score=float(item.score))


def from_node(node: NodeWithScore, index: int) -> Document:
    """A LlamaIndex node as a ragprune Document (its node id, else its position)."""
    meta = dict(node.node.metadata or {})
    text = node.node.get_content()
    return Document(id=str(node.node.node_id or index), text=text, title=str(meta.get("title") or ""), metadata=meta)


def _query(query_bundle: QueryBundle | None, owner: str) -> str:
    if query_bundle is None or not str(query_bundle.query_str).strip():
        raise ValueError(f"{owner}: a non-empty query is required (pass query_str or query_bundle).")
    return query_bundle.query_str


class RagpruneNodePostprocessor(BaseNodePostprocessor):
    """A ragprune reranker (``rerank``) or pruner (``prune``) as a LlamaIndex postprocessor.

    Attributes:
        engine: A :class:`~ragprune.rerank.base.Reranker` or :class:`~ragprune.prune.base.Pruner`.
        top_n: Nodes kept by a reranker (``None``: all). A pruner keeps every node with its
            pruned text and drops the ones left empty.
    """

    engine: Any = Field(description="ragprune reranker or pruner")
    top_n: int | None = Field(default=3, description="nodes kept by a reranker")

    @classmethod
    def class_name(cls) -> str:
        return "RagpruneNodePostprocessor"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
                           ) -> list[NodeWithScore]:
        query = _query(query_bundle, "RagpruneNodePostprocessor")
        docs = [from_node(n, i) for i, n in enumerate(nodes)]
        if not docs:
            return []
        if hasattr(self.engine, "prune"):
            return [to_node(p) for p in self.engine.prune(query, docs) if p.text]
        return [to_node(h) for h in self.engine.rerank(query, docs, k=self.top_n)]


class RagpruneLlamaRetriever(BaseRetriever):
    """A ragprune retriever (``retrieve``) or :class:`~ragprune.pipeline.Pipeline` (``run``)
    as a LlamaIndex retriever returning scored ``TextNode`` s."""

    def __init__(self, engine: Any, k: int = 4, **kwargs: Any) -> None:
        if not (hasattr(engine, "retrieve") or hasattr(engine, "run")):
            raise TypeError("RagpruneLlamaRetriever: engine must be a ragprune retriever or Pipeline, "
                            f"got {type(engine).__name__}.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"RagpruneLlamaRetriever: k must be an int >= 1, got {k!r}.")
        self.engine, self.k = engine, k
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = _query(query_bundle, "RagpruneLlamaRetriever")
        if hasattr(self.engine, "run"):
            return [to_node(d) for d in self.engine.run(query).documents]
        return [to_node(h) for h in self.engine.retrieve(query, k=self.k)]
