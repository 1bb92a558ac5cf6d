"""LlamaIndex adapters inside a real llama-index-core query engine (MockLLM as the reader)."""

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.llms.mock import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from ragprune import BM25Retriever, Pipeline  # noqa: E402
from ragprune.integrations.llama_index import RagpruneLlamaRetriever, RagpruneNodePostprocessor  # noqa: E402
from ragprune.prune.baselines import LeadPruner  # noqa: E402
from tests.test_langchain import LengthReranker  # noqa: E402


def test_query_engine_with_retriever_and_reranker_postprocessor(toy_docs):
    retriever = RagpruneLlamaRetriever(BM25Retriever.from_documents(toy_docs), k=4)
    post = RagpruneNodePostprocessor(engine=LengthReranker(), top_n=2)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8), node_postprocessors=[post])
    response = engine.query("capital city largest")
    ids = [n.node.node_id for n in response.source_nodes]
    assert len(ids) == 2
    lengths = [len(n.node.get_content()) for n in response.source_nodes]
    assert lengths == sorted(lengths)  # the reranker's order (shortest first)
    assert [n.node.metadata["model_score"] for n in response.source_nodes] == [-float(x) for x in lengths]
    assert set(ids) <= {"paris", "berlin", "cats", "scurvy", "python"}
    assert isinstance(str(response), str)


def test_postprocessor_with_pruner_keeps_pruned_text():
    nodes = [NodeWithScore(node=TextNode(id_="x", text="First sentence. Second sentence."), score=1.0),
             NodeWithScore(node=TextNode(id_="y", text="Only one."), score=0.5)]
    out = RagpruneNodePostprocessor(engine=LeadPruner(k=1)).postprocess_nodes(nodes, query_str="q")
    assert [n.node.get_content() for n in out] == ["First sentence.", "Only one."]
    assert out[0].node.node_id == "x" and "compression" in out[0].node.metadata
    assert RagpruneNodePostprocessor(engine=LeadPruner(k=1)).postprocess_nodes([], query_str="q") == []


def test_retriever_over_pipeline_and_errors(toy_docs):
    pipe = Pipeline(BM25Retriever.from_documents(toy_docs), pruner=LeadPruner(k=1), max_tokens=50, top_k=2)
    nodes = RagpruneLlamaRetriever(pipe).retrieve("capital of Germany")
    assert nodes[0].node.node_id == "berlin" and nodes[0].score is not None
    with pytest.raises(TypeError, match="retriever or Pipeline"):
        RagpruneLlamaRetriever(object())
    with pytest.raises(ValueError, match="k must be"):
        RagpruneLlamaRetriever(pipe, k=0)
    with pytest.raises(ValueError, match="non-empty query"):
        RagpruneNodePostprocessor(engine=LengthReranker()).postprocess_nodes(
            [NodeWithScore(node=TextNode(id_="a", text="t"))], QueryBundle("  "))
