import threading

import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from ragprune import DenseRetriever, IndexFormatError  # noqa: E402
from ragprune.models import ModelNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def dense(minilm):
    from tests.conftest import TOY

    return DenseRetriever.from_documents(TOY, minilm)


def test_semantic_match(dense):
    # no word overlap with "Scurvy is a disease caused by a lack of vitamin C."
    assert dense.retrieve("ascorbic acid deficiency illness", k=1)[0].id == "scurvy"
    assert dense.retrieve("feline pets", k=1)[0].id == "cats"


def test_scores_are_cosines_best_first(dense):
    hits = dense.retrieve("capital of France", k=5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0001 <= s <= 1.0001 for s in scores)
    assert len(dense.retrieve("x", k=50)) == 5  # k > corpus returns all


def test_embeddings_are_normalised(dense):
    import numpy as np

    emb = dense.encode_queries(["a", "longer query text"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_batch_equals_single(dense):
    qs = ["capital of France", "programming", "purring animals"]
    many = dense.retrieve_many(qs, k=3)
    for q, hits in zip(qs, many):
        single = dense.retrieve(q, k=3)
        assert [h.id for h in single] == [h.id for h in hits]
        assert [h.score for h in single] == pytest.approx([h.score for h in hits], abs=1e-5)


def test_hnsw_index(minilm, toy_docs):
    r = DenseRetriever.from_documents(toy_docs, minilm, index="hnsw", hnsw_m=8)
    assert r.retrieve("vitamin C", k=1)[0].id == "scurvy"


def test_save_load_round_trip(dense, tmp_path, minilm):
    dense.save(tmp_path / "idx")
    loaded = DenseRetriever.load(tmp_path / "idx", model=minilm)
    q = ["capital of Germany", "vitamin"]
    assert [[h.id for h in r] for r in loaded.retrieve_many(q, 3)] == [[h.id for h in r] for r in dense.retrieve_many(q, 3)]
    (next(p for p in (tmp_path / "idx").iterdir() if p.is_dir()) / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="index.faiss is missing or corrupt"):
        DenseRetriever.load(tmp_path / "idx", model=minilm)


def test_load_in_memory_model_index_needs_model(minilm, toy_docs, tmp_path):
    r = DenseRetriever.from_documents(toy_docs, minilm)
    r.save(tmp_path / "idx")
    with pytest.raises(ValueError, match="pass model="):
        DenseRetriever.load(tmp_path / "idx")


def test_missing_model_names_the_path(toy_docs, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model folder at .*nope"):
        DenseRetriever.from_documents(toy_docs, str(tmp_path / "nope"))
    (tmp_path / "broken").mkdir()
    with pytest.raises(ValueError, match="could not load a sentence-transformers model from .*broken"):
        DenseRetriever.from_documents(toy_docs, str(tmp_path / "broken"))


def test_bad_arguments(minilm, toy_docs):
    with pytest.raises(ValueError, match="unknown index 'ivf'"):
        DenseRetriever.from_documents(toy_docs, minilm, index="ivf")
    with pytest.raises(ValueError, match="corpus is empty"):
        DenseRetriever.from_documents([], minilm)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DenseRetriever.from_documents(toy_docs, minilm, batch_size=0)


def test_concurrent_queries(dense):
    qs = ["capital of France", "programming language", "vitamin C", "cats", "Germany"]
    expected = [[h.id for h in dense.retrieve(q, 3)] for q in qs]
    out, errors = {}, []

    def work(i):
        try:
            out[i] = [[h.id for h in dense.retrieve(q, 3)] for q in qs]
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors and all(v == expected for v in out.values())
