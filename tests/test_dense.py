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
    with pytest.raises(ValueError, match="unknown index 'annoy'; expected one of 'flat', 'hnsw', 'ivf', 'ivfpq'"):
        DenseRetriever.from_documents(toy_docs, minilm, index="annoy")
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


# ---------------------------------------------------------------------------------------------
# Scale: IVF / IVF-PQ, resumable encoding shards, memory-mapped load. A fake encoder (a seeded
# random unit vector per text) keeps these fast; it counts its calls.


class CountingEncoder:
    """Deterministic stand-in for a sentence-transformers model: one random unit vector per text."""

    def __init__(self, dim: int = 16) -> None:
        self.dim, self.calls, self.texts = dim, 0, 0

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False, **_):
        import hashlib

        import numpy as np

        self.calls += 1
        self.texts += len(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _corpus(n: int) -> list[str]:
    return [f"passage number {i}" for i in range(n)]


QUERIES = ["passage number 7", "a query", "another question", "passage number 123"]


def _ids(r, k=10, queries=QUERIES):
    return [[h.id for h in hits] for hits in r.retrieve_many(queries, k)]


def _scores(r, k=10, queries=QUERIES):
    return [h.score for hits in r.retrieve_many(queries, k) for h in hits]  # flat: pytest.approx is 1-level


@pytest.fixture(scope="module")
def flat600():
    return DenseRetriever.from_documents(_corpus(600), CountingEncoder())


def test_default_nlist_rule():
    from ragprune.retrieve.dense import default_nlist

    assert default_nlist(1_000_000) == 4000  # 4 * sqrt(n)
    assert default_nlist(600) == 15  # clipped: >= 39 training vectors per list
    assert default_nlist(10) == 1
    assert all(default_nlist(n) * 39 <= n for n in (39, 100, 1000, 5000, 10**5))


def test_ivf_probing_every_list_equals_flat(flat600):
    ivf = DenseRetriever.from_documents(_corpus(600), CountingEncoder(), index="ivf", nprobe=1000)
    assert ivf.nlist == 15 and ivf.nprobe == 1000 and ivf.index.nprobe == 15  # clipped to nlist on the index
    assert _ids(ivf) == _ids(flat600)
    assert _scores(ivf) == pytest.approx(_scores(flat600), abs=1e-5)  # exact scores (IVFFlat)
    ivf.nprobe = 1  # search-time setting, changed after the build
    assert ivf.index.nprobe == 1
    assert _ids(ivf)[0][0] == "7" and _ids(ivf)[3][0] == "123"  # a document's own vector is in its nearest list
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        ivf.nprobe = 0


def test_ivf_training_is_seeded_and_deterministic():
    import faiss

    build = lambda seed: DenseRetriever.from_documents(_corpus(600), CountingEncoder(), index="ivf", nlist=8, seed=seed)  # noqa: E731
    a, b, c = build(0), build(0), build(1)
    assert faiss.serialize_index(a.index).tobytes() == faiss.serialize_index(b.index).tobytes()
    assert faiss.serialize_index(a.index).tobytes() != faiss.serialize_index(c.index).tobytes()


def test_ivfpq_recall_and_defaults(flat600):
    pq = DenseRetriever.from_documents(_corpus(600), CountingEncoder(), index="ivfpq", nlist=4, nprobe=4, pq_bits=4)
    assert (pq.nlist, pq.pq_m, pq.pq_bits) == (4, 2, 4)  # pq_m default: sub-vectors of <= 8 dims
    assert type(pq.index).__name__ == "IndexIVFPQ"
    pq = DenseRetriever.from_documents(_corpus(600), CountingEncoder(), index="ivfpq", nlist=4, nprobe=4, pq_m=8,
                                       pq_bits=4)
    assert [ids[0] for ids in _ids(pq)][::3] == ["7", "123"]  # documents find themselves
    exact, approx = _ids(flat600, k=50), _ids(pq, k=50)
    recall = sum(len(set(a) & set(b)) for a, b in zip(exact, approx)) / sum(map(len, exact))
    assert recall > 0.5  # 4 bytes per 16-d vector: approximate, but far above chance (50/600)


def test_ivf_argument_errors(caplog):
    with pytest.raises(ValueError, match=r"nlist=50 needs at least 50 training vectors, got 40 \(40 documents\); "
                                         r"use nlist <= 1 or nlist=None"):
        DenseRetriever.from_documents(_corpus(40), CountingEncoder(), index="ivf", nlist=50)
    with pytest.raises(ValueError, match="index='ivfpq' with pq_bits=8 trains 256 centroids .* needs at least 256 "
                                         "training vectors, got 100 .*use a smaller pq_bits, or index='ivf' or 'flat'"):
        DenseRetriever.from_documents(_corpus(100), CountingEncoder(), index="ivfpq")
    enc = CountingEncoder()
    with pytest.raises(ValueError, match=r"pq_m=5 does not divide the embedding dimension 16; use one of \[1, 2, 4, 8, 16\]"):
        DenseRetriever.from_documents(_corpus(100), enc, index="ivfpq", pq_m=5, pq_bits=4)
    assert enc.calls == 0  # refused before encoding (the model declares its dimension)
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        DenseRetriever.from_documents(_corpus(100), enc, index="ivf", nprobe=0)
    with pytest.raises(ValueError, match="pq_bits must be <= 16"):
        DenseRetriever.from_documents(_corpus(100), enc, index="ivfpq", pq_bits=20)
    with caplog.at_level("WARNING", logger="ragprune.retrieve.dense"):
        tiny = DenseRetriever.from_documents(_corpus(20), CountingEncoder(), index="ivf")
    assert tiny.nlist == 1 and "too few to cluster" in caplog.text and "index='flat' does the same" in caplog.text
    assert _ids(tiny, k=3) == _ids(DenseRetriever.from_documents(_corpus(20), CountingEncoder()), k=3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="ragprune.retrieve.dense"):
        DenseRetriever.from_documents(_corpus(100), CountingEncoder(), index="ivf", nlist=10)
    assert "100 training vectors for nlist=10 lists (< 39 per list)" in caplog.text


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_save_load_and_mmap_load_give_the_same_results(kind, tmp_path):
    kw = {"ivf": {"nprobe": 3}, "ivfpq": {"nlist": 4, "pq_bits": 4, "nprobe": 2}, "hnsw": {"hnsw_m": 8}}.get(kind, {})
    enc = CountingEncoder()
    r = DenseRetriever.from_documents(_corpus(600), enc, index=kind, **kw)
    expected_ids, expected_scores = _ids(r), _scores(r)
    r.save(tmp_path / "idx")
    for mmap in (False, True):
        loaded = DenseRetriever.load(tmp_path / "idx", model=enc, mmap=mmap)
        assert loaded.mmap is mmap and loaded.index_type == kind
        assert (loaded.nlist, loaded.nprobe) == (r.nlist, r.nprobe)
        assert _ids(loaded) == expected_ids
        assert _scores(loaded) == pytest.approx(expected_scores, abs=1e-6)
    # a memory-mapped index saves a self-contained copy, even over the folder it maps
    mapped = DenseRetriever.load(tmp_path / "idx", model=enc, mmap=True)
    mapped.save(tmp_path / "idx")
    mapped.save(tmp_path / "copy")
    for p in ("idx", "copy"):
        assert _ids(DenseRetriever.load(tmp_path / p, model=enc)) == expected_ids
    assert "mmap=True" in repr(mapped)


def test_search_settings_after_load(tmp_path):
    enc = CountingEncoder()
    DenseRetriever.from_documents(_corpus(600), enc, index="ivf", nprobe=2).save(tmp_path / "ivf")
    assert DenseRetriever.load(tmp_path / "ivf", model=enc).nprobe == 2  # saved with the index
    r = DenseRetriever.load(tmp_path / "ivf", model=enc, nprobe=15, mmap=True)
    assert r.nprobe == 15 and r.index.nprobe == 15
    r.nprobe = 4
    assert r.index.nprobe == 4
    DenseRetriever.from_documents(_corpus(100), enc, index="hnsw", ef_search=16).save(tmp_path / "hnsw")
    h = DenseRetriever.load(tmp_path / "hnsw", model=enc, ef_search=99)
    assert h.ef_search == 99 and h.index.hnsw.efSearch == 99
    h.ef_search = 40
    assert h.index.hnsw.efSearch == 40
    with pytest.raises(ValueError, match="DenseRetriever.load: nprobe must be >= 1"):
        DenseRetriever.load(tmp_path / "ivf", model=enc, nprobe=0)
    with pytest.raises(TypeError, match="mmap must be True or False"):
        DenseRetriever.load(tmp_path / "ivf", model=enc, mmap="yes")


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_format_version_1_index_still_loads(kind, tmp_path):
    """An index folder exactly as the first dense format wrote it (no IVF keys) loads as before."""
    import faiss

    from ragprune._io import write_documents, write_index_dir
    from ragprune.types import as_documents

    enc = CountingEncoder()
    docs = as_documents(_corpus(50))
    emb = enc.encode([d.full_text for d in docs])
    idx = faiss.IndexFlatIP(16) if kind == "flat" else faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    idx.add(emb)

    def write(d):
        faiss.write_index(idx, str(d / "index.faiss"))
        write_documents(d / "documents.jsonl", docs)

    params = {"model": "", "model_revision": None, "index": kind, "ef_search": 77, "batch_size": 64,
              "query_prefix": "", "document_prefix": "", "n_docs": 50, "dim": 16}
    write_index_dir(tmp_path / "old", kind="dense", format_version=1, params=params, write_data=write)
    r = DenseRetriever.load(tmp_path / "old", model=enc, mmap=True)
    assert r.index_type == kind and r.retrieve("passage number 7", k=1)[0].id == "7"
    if kind == "hnsw":
        assert r.ef_search == 77


def test_index_type_must_match_the_file(tmp_path):
    import json

    enc = CountingEncoder()
    DenseRetriever.from_documents(_corpus(100), enc).save(tmp_path / "idx")
    data = next(p for p in (tmp_path / "idx").iterdir() if p.is_dir())
    params = json.loads((data / "params.json").read_text())
    (data / "params.json").write_text(json.dumps({**params, "index": "ivf"}))
    with pytest.raises(IndexFormatError, match=r"params say 'ivf', index.faiss holds a IndexFlatIP\); rebuild"):
        DenseRetriever.load(tmp_path / "idx", model=enc)


def test_shards_resume_only_what_is_missing(tmp_path):
    import numpy as np

    docs, shard_dir = _corpus(230), tmp_path / "shards"
    one_shot = DenseRetriever.from_documents(docs, CountingEncoder())
    enc = CountingEncoder()
    first = DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=50)
    assert enc.calls == 5 and enc.texts == 230  # one encode call per shard
    names = sorted(p.name for p in shard_dir.iterdir())
    assert names == [f"shard-{i:06d}.{ext}" for i in range(5) for ext in ("json", "npy")]
    (shard_dir / "shard-000002.npy").unlink()  # as if killed before this shard was written
    (shard_dir / "shard-000004.json").unlink()  # killed between the embeddings and their key
    (shard_dir / f".shard-000001.npy.{'a' * 32}.tmp").write_bytes(b"partial")  # a killed write
    enc = CountingEncoder()
    resumed = DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=50)
    assert enc.calls == 2 and enc.texts == 80  # shards 2 and 4 (the last one holds 30)
    assert not any(p.name.endswith(".tmp") for p in shard_dir.iterdir())
    for r in (first, resumed):
        np.testing.assert_array_equal(r.index.reconstruct_n(0, 230), one_shot.index.reconstruct_n(0, 230))
        assert _ids(r) == _ids(one_shot)
    enc = CountingEncoder()
    DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=50, index="ivf")
    assert enc.calls == 0  # everything reused, whatever the index type


def test_shards_are_keyed_by_texts_prefix_model_and_size(tmp_path):
    docs, shard_dir = _corpus(100), tmp_path / "shards"
    DenseRetriever.from_documents(docs, CountingEncoder(), shard_dir=shard_dir, shard_size=50)
    enc = CountingEncoder()
    changed = docs[:60] + ["an edited passage"] + docs[61:]
    DenseRetriever.from_documents(changed, enc, shard_dir=shard_dir, shard_size=50)
    assert enc.texts == 50  # only the shard holding the edit
    enc = CountingEncoder()
    DenseRetriever.from_documents(changed + ["a new passage"], enc, shard_dir=shard_dir, shard_size=50)
    assert enc.texts == 1  # a corpus grown at its end encodes only the new shard
    enc = CountingEncoder()
    DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=50, document_prefix="passage: ")
    assert enc.texts == 100
    enc = CountingEncoder()
    DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=40)
    assert enc.texts == 100

    class OtherModel(CountingEncoder):
        pass

    enc = OtherModel()
    DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=40)
    assert enc.texts == 100
    (shard_dir / "shard-000000.npy").write_bytes(b"not an array")  # a corrupt file is re-encoded
    enc = OtherModel()
    DenseRetriever.from_documents(docs, enc, shard_dir=shard_dir, shard_size=40)
    assert enc.texts == 40
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="shard_dir .*file exists and is not a folder"):
        DenseRetriever.from_documents(docs, enc, shard_dir=tmp_path / "file")
