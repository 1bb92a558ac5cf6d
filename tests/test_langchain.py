import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document as LCDocument  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402

from ragprune import BM25Retriever, Pipeline  # noqa: E402
from ragprune.integrations.langchain import RagpruneCompressor, RagpruneRetriever  # noqa: E402
from ragprune.prune.baselines import LeadPruner  # noqa: E402
from ragprune.rerank.base import PointwiseReranker  # noqa: E402


class LengthReranker(PointwiseReranker):
    """Shorter passages first (a deterministic stand-in for a model)."""

    def _score(self, queries, docs):
        return [-float(len(d.text)) for d in docs]


def test_retriever_in_an_lcel_chain(toy_docs):
    retriever = RagpruneRetriever(engine=BM25Retriever.from_documents(toy_docs), k=2)
    seen = {}

    def fmt(docs):
        seen["ids"] = [d.metadata["id"] for d in docs]
        return "\n".join(d.page_content for d in docs)

    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    llm = FakeListChatModel(responses=["vitamin C deficiency"])
    chain = {"context": retriever | fmt, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()
    assert chain.invoke("what causes scurvy") == "vitamin C deficiency"
    assert seen["ids"][0] == "scurvy" and len(seen["ids"]) == 2


def test_retriever_over_a_pipeline(toy_docs):
    pipe = Pipeline(BM25Retriever.from_documents(toy_docs), pruner=LeadPruner(k=1), max_tokens=50, top_k=2)
    docs = RagpruneRetriever(engine=pipe).invoke("capital of Germany")
    assert docs[0].metadata["id"] == "berlin" and "compression" in docs[0].metadata


def test_compressor_with_reranker_and_pruner():
    docs = [LCDocument(page_content="A long passage about many things here.", id="a"),
            LCDocument(page_content="Short one.", metadata={"id": "b"}),
            LCDocument(page_content="Medium length text.")]
    out = RagpruneCompressor(engine=LengthReranker(), top_n=2).compress_documents(docs, "q")
    assert [d.metadata["id"] for d in out] == ["b", "2"]
    assert [d.metadata["model_score"] for d in out] == [-10.0, -19.0]  # the reranker's own score
    pruned = RagpruneCompressor(engine=LeadPruner(k=1)).compress_documents(
        [LCDocument(page_content="First sentence. Second sentence.", id="x")], "q")
    assert pruned[0].page_content == "First sentence."
    assert RagpruneCompressor(engine=LengthReranker()).compress_documents([], "q") == []


def test_standard_retriever_contract(toy_docs):
    retriever = RagpruneRetriever(engine=BM25Retriever.from_documents(toy_docs), k=3)
    docs = retriever.invoke("cats")
    assert all(isinstance(d, LCDocument) for d in docs)
    assert len(retriever.batch(["cats", "paris"])) == 2
    import asyncio

    assert len(asyncio.run(retriever.ainvoke("cats"))) == 3


def _standard_tests_base():
    try:
        from langchain_tests.integration_tests import RetrieversIntegrationTests
    except ImportError:
        return object
    return RetrieversIntegrationTests


class TestRagpruneRetrieverStandard(_standard_tests_base()):
    """langchain-tests' standard retriever suite (k in the constructor and per call, sync/async)."""

    @property
    def retriever_constructor(self):
        return RagpruneRetriever

    @property
    def retriever_constructor_params(self):
        from tests.conftest import TOY

        return {"engine": BM25Retriever.from_documents([dict(d) for d in TOY]), "k": 3}

    @property
    def retriever_query_example(self):
        return "capital city of France"
