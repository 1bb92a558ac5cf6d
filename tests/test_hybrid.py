import pytest

from ragprune import BM25Retriever, Document, HybridRetriever, ScoredDocument
from ragprune.retrieve.base import Retriever

DOCS = [Document(id=c, text=c) for c in "abcde"]


class Fixed(Retriever):
    """A retriever that returns a fixed ranking (for exact fusion arithmetic)."""

    def __init__(self, ranking):
        self.documents = DOCS
        self.ranking = ranking

    def _retrieve_many(self, queries, k):
        by_id = {d.id: d for d in DOCS}
        return [[ScoredDocument(by_id[i], s) for i, s in self.ranking[:k]] for _ in queries]


A = Fixed([("a", 10.0), ("b", 8.0), ("c", 2.0)])
B = Fixed([("c", 0.9), ("a", 0.5), ("d", 0.1)])


def test_rrf_arithmetic():
    hits = HybridRetriever([A, B], fusion="rrf", weights=[1, 1], rrf_k=60).retrieve("q", k=4)
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}
    assert [h.id for h in hits] == ["a", "c", "b", "d"]
    assert [h.score for h in hits] == pytest.approx([expected[h.id] for h in hits])


def test_convex_arithmetic_with_weights():
    hits = HybridRetriever([A, B], fusion="convex", weights=[0.25, 0.75]).retrieve("q", k=4)
    # min-max per list: A: a=1, b=0.75, c=0;  B: c=1, a=0.5, d=0
    expected = {"a": 0.25 * 1 + 0.75 * 0.5, "b": 0.25 * 0.75, "c": 0.75 * 1.0, "d": 0.0}
    assert [h.id for h in hits] == ["c", "a", "b", "d"]
    assert [h.score for h in hits] == pytest.approx([expected[h.id] for h in hits])


def test_zero_weight_reproduces_one_retriever():
    hits = HybridRetriever([A, B], fusion="rrf", weights=[1, 0]).retrieve("q", k=3)
    assert [h.id for h in hits] == ["a", "b", "c"]


def test_ties_break_by_corpus_order():
    same = Fixed([("d", 1.0), ("b", 1.0)])
    hits = HybridRetriever([same, Fixed([("b", 1.0), ("d", 1.0)])], fusion="rrf").retrieve("q", k=2)
    assert [h.id for h in hits] == ["b", "d"]


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"retrievers": [A]}, ValueError, "at least two retrievers"),
    ({"retrievers": A}, TypeError, "list of at least two"),
    ({"retrievers": [A, "bm25"]}, TypeError, "str has no retrieve_many"),
    ({"retrievers": [A, B], "weights": [1]}, ValueError, "got 1 weights for 2"),
    ({"retrievers": [A, B], "weights": [0, 0]}, ValueError, "at least one weight must be > 0"),
    ({"retrievers": [A, B], "weights": [-1, 1]}, ValueError, "weight must be >= 0"),
    ({"retrievers": [A, B], "fusion": "max"}, ValueError, "unknown fusion 'max'"),
    ({"retrievers": [A, BM25Retriever.from_documents(["x y", "z"])]}, ValueError, "index different corpora"),
])
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        HybridRetriever(**kwargs)


def test_unbuilt_retriever_is_a_clear_error():
    with pytest.raises(ValueError, match="holds no documents; build it with BM25Retriever.from_documents"):
        BM25Retriever().retrieve("q")
    with pytest.raises(ValueError, match="holds no documents"):
        BM25Retriever().get_scores("q")
    with pytest.raises(TypeError, match="query must be a str"):
        BM25Retriever.from_documents(["x y"]).get_scores(None)


def test_hybrid_over_real_retrievers(toy_docs, minilm):
    from ragprune import DenseRetriever

    bm25 = BM25Retriever.from_documents(toy_docs)
    dense = DenseRetriever.from_documents(toy_docs, minilm)
    for fusion in ("rrf", "convex"):
        h = HybridRetriever([bm25, dense], fusion=fusion)
        assert h.retrieve("ascorbic acid deficiency scurvy", k=1)[0].id == "scurvy"
        assert len(h.retrieve("capital", k=10)) == 5
        with pytest.raises(ValueError, match="query is empty"):
            h.retrieve(" ")
