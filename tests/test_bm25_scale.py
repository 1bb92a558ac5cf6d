"""BM25 at scale: chunked and streamed builds, memory-mapped loads, exact add/delete."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from ragprune import BM25Retriever, Document, IndexFormatError
from ragprune._docstore import DiskDocuments, DocumentView

from .reliability.helpers import make_corpus, make_queries

METHODS = ["atire", "lucene", "robertson", "okapi", "bm25l", "bm25+"]


def _arrays(r: BM25Retriever) -> dict[str, np.ndarray]:
    terms = sorted(r.vocab, key=r.vocab.__getitem__)
    return {"terms": np.array(terms, dtype=object), "indptr": np.asarray(r._indptr), "indices": np.asarray(r._indices),
            "scores": np.asarray(r._data), "tf": np.asarray(r._tf), "doclen": np.asarray(r._doclen),
            "nonocc": np.asarray(r._nonocc)}


def _assert_same_index(a: BM25Retriever, b: BM25Retriever, queries: list[str]) -> None:
    """Identical arrays, documents and results (scores bit for bit)."""
    for name, arr in _arrays(a).items():
        other = _arrays(b)[name]
        assert arr.shape == other.shape and np.array_equal(arr, other), name
    assert [d.id for d in a.documents] == [d.id for d in b.documents]
    assert a.retrieve_many(queries, k=10) == b.retrieve_many(queries, k=10)
    assert [a.retrieve(q, k=7) for q in queries[:10]] == [b.retrieve(q, k=7) for q in queries[:10]]


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(400, seed=5)


@pytest.fixture(scope="module")
def queries():
    return make_queries(40, seed=9) + ["cell cell gene", "unknownword"]


def test_chunked_build_equals_one_chunk(corpus, queries):
    whole = BM25Retriever.from_documents(corpus, chunk_size=10_000)
    for size in (1, 7, 64):
        _assert_same_index(BM25Retriever.from_documents(corpus, chunk_size=size), whole, queries)
    assert sorted(whole.vocab) == list(whole.vocab)  # term ids follow the sorted vocabulary


@pytest.mark.parametrize("mmap", [True, False])
def test_streamed_build_equals_the_in_memory_build(corpus, queries, tmp_path, mmap):
    reference = BM25Retriever.from_documents(corpus, method="bm25l", k1=1.2, b=0.7)
    built = BM25Retriever.build(iter(corpus), tmp_path / "idx", method="bm25l", k1=1.2, b=0.7, chunk_size=33,
                                show_progress=False, mmap=mmap)
    assert isinstance(built.documents, DiskDocuments) is mmap
    _assert_same_index(built, reference, queries)
    assert not list((tmp_path / "idx").rglob(".spill*"))  # the spilled chunks are gone


def test_build_from_jsonl_and_gzip_files(corpus, queries, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    gz = tmp_path / "corpus.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(path.read_text(encoding="utf-8"))
    reference = BM25Retriever.from_documents(corpus)
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl.gz").write_bytes(gz.read_bytes())
    for src in (path, str(gz), beir):
        _assert_same_index(BM25Retriever.build(src, tmp_path / "idx", chunk_size=50, show_progress=False), reference,
                           queries)


def test_build_errors_leave_the_folder_untouched(corpus, tmp_path):
    idx = tmp_path / "idx"
    BM25Retriever.from_documents(corpus[:20]).save(idx)
    before = sorted(p.name for p in idx.rglob("*"))
    dup = corpus[:100] + [corpus[3]]  # the duplicate sits in another chunk
    with pytest.raises(ValueError, match="duplicate document id 'd3'"):
        BM25Retriever.build(dup, idx, chunk_size=30, show_progress=False)
    with pytest.raises(ValueError, match="corpus is empty"):
        BM25Retriever.build(iter([]), idx, show_progress=False)
    with pytest.raises(FileNotFoundError, match="no corpus file"):
        BM25Retriever.build(tmp_path / "missing.jsonl", idx)
    with pytest.raises(TypeError, match="iterable of documents"):
        BM25Retriever.build(42, idx)  # type: ignore[arg-type]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not valid JSON"):
        BM25Retriever.build(bad, idx, show_progress=False)
    assert sorted(p.name for p in idx.rglob("*")) == before
    assert len(BM25Retriever.load(idx)) == 20


def test_strings_get_their_global_position_as_id(tmp_path):
    texts = [f"passage number {i} about topic {i % 7}" for i in range(50)]
    built = BM25Retriever.build(texts, tmp_path / "idx", chunk_size=8, show_progress=False)
    assert [d.id for d in built.documents] == [str(i) for i in range(50)]


@pytest.mark.parametrize("method", METHODS)
def test_add_and_delete_equal_a_rebuild(corpus, queries, method):
    rng = random.Random(method)
    docs = list(corpus[:150])
    r = BM25Retriever.from_documents(docs, method=method)
    pool = iter(corpus[150:])
    for step in range(6):
        if step % 2 == 0:
            new = [next(pool) for _ in range(rng.randint(1, 40))]
            assert r.add_documents(new) == len(new)
            docs += new
        else:
            gone = rng.sample([d["_id"] for d in docs], rng.randint(1, 30))
            assert r.delete(gone) == len(gone)
            docs = [d for d in docs if d["_id"] not in set(gone)]
        _assert_same_index(r, BM25Retriever.from_documents(docs, method=method), queries)


def test_updates_on_a_memory_mapped_index_persist(corpus, queries, tmp_path):
    idx = tmp_path / "idx"
    BM25Retriever.from_documents(corpus[:200]).save(idx)
    r = BM25Retriever.load(idx, mmap=True)
    r.delete(["d0", "d5", "d199"])
    r.add_documents(corpus[200:260])
    assert isinstance(r.documents, DocumentView)
    r.delete(["d210"])  # a document added after the load
    expected = [d for d in corpus[:260] if d["_id"] not in {"d0", "d5", "d199", "d210"}]
    rebuilt = BM25Retriever.from_documents(expected)
    _assert_same_index(r, rebuilt, queries)
    r.save(idx)  # over the folder it is mapped from
    for mmap in (True, False):
        _assert_same_index(BM25Retriever.load(idx, mmap=mmap), rebuilt, queries)
    _assert_same_index(r, rebuilt, queries)  # still readable after its old files were replaced


def test_update_errors_change_nothing(corpus, queries):
    r = BM25Retriever.from_documents(corpus[:50])
    before = r.retrieve_many(queries, k=5)
    with pytest.raises(ValueError, match="already in the index"):
        r.add_documents([corpus[3]])
    with pytest.raises(ValueError, match="duplicate document id"):
        r.add_documents([corpus[60], corpus[60]])
    with pytest.raises(KeyError, match="not in the index.*nothing was deleted"):
        r.delete(["d1", "nope"])
    with pytest.raises(TypeError, match="not a single string"):
        r.delete("d1")
    with pytest.raises(ValueError, match="empty index"):
        r.delete([d["_id"] for d in corpus[:50]])
    with pytest.raises(ValueError, match="corpus is empty"):
        r.add_documents([])
    assert r.delete([]) == 0
    assert r.retrieve_many(queries, k=5) == before and len(r) == 50
    r.add_documents([Document(id="d1-new", text="cell gene cell")])
    r.delete(["d1-new"])
    assert r.retrieve_many(queries, k=5) == before


def test_format_1_index_loads_but_cannot_be_updated():
    from pathlib import Path

    old = BM25Retriever.load(Path(__file__).parent / "data" / "bm25_index_v1_old_defaults")
    with pytest.raises(ValueError, match="format 1.*rebuild"):
        old.add_documents(["new text"])
    with pytest.raises(ValueError, match="format 1"):
        old.save("/nonexistent/never-written")


def test_memory_mapped_load_keeps_documents_on_disk(corpus, tmp_path):
    BM25Retriever.from_documents(corpus).save(tmp_path / "idx")
    r = BM25Retriever.load(tmp_path / "idx", mmap=True)
    assert isinstance(r.documents, DiskDocuments) and isinstance(r._data, np.memmap)
    assert r.documents[-1] == Document(id=corpus[-1]["_id"], text=corpus[-1]["text"], title=corpus[-1]["title"])
    assert [d.id for d in r.documents[2:5]] == ["d2", "d3", "d4"]
    with pytest.raises(IndexError):
        r.documents[len(corpus)]


def test_damaged_offsets_fail_clearly(corpus, tmp_path):
    BM25Retriever.from_documents(corpus[:30]).save(tmp_path / "idx")
    data = next((tmp_path / "idx").glob("v-*"))
    off = np.load(data / "documents.offsets.npy")
    off[5] = off[7]  # points a document at the wrong bytes
    np.save(data / "documents.offsets.npy", off)
    with pytest.raises(IndexFormatError, match="offsets are not ascending"):
        BM25Retriever.load(tmp_path / "idx")  # the full load checks every offset
    r = BM25Retriever.load(tmp_path / "idx", mmap=True)
    with pytest.raises(IndexFormatError, match="rebuild the index"):
        [r.documents[i] for i in range(len(r.documents))]


def test_float16_scores_halve_the_score_array_and_survive_updates(corpus, queries, tmp_path):
    full = BM25Retriever.from_documents(corpus)
    half = BM25Retriever.from_documents(corpus[:300], score_dtype="float16")
    half.add_documents(corpus[300:])
    assert half._data.dtype == np.float16 and half._data.nbytes * 2 == full._data.nbytes
    for q in queries:
        a, b = full.retrieve(q, k=5), half.retrieve(q, k=5)
        assert [h.score for h in b] == pytest.approx([h.score for h in a], rel=2e-3, abs=1e-3)
    half.save(tmp_path / "idx")
    for mmap in (False, True):
        loaded = BM25Retriever.load(tmp_path / "idx", mmap=mmap)
        assert loaded.score_dtype == "float16" and loaded.retrieve_many(queries, k=5) == half.retrieve_many(queries, k=5)
    with pytest.raises(ValueError, match="score_dtype"):
        BM25Retriever.from_documents(corpus, score_dtype="int8")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
def test_ranking_without_sorting_the_corpus_keeps_ties_in_corpus_order(method, monkeypatch):
    """The single-query path ranks only the documents that can reach the top k; ties at the
    k-th place must still resolve by corpus order, exactly as a full ranking does."""
    import ragprune.retrieve.bm25 as bm25_module

    monkeypatch.setattr(bm25_module, "_CANDIDATES_MIN_DOCS", 0)  # the shortcut, even on a small corpus
    calls = []
    real = BM25Retriever._candidates
    monkeypatch.setattr(BM25Retriever, "_candidates", lambda self, *a: calls.append(1) or real(self, *a))
    docs = [f"alpha beta common filler {i % 3}" for i in range(60)] + ["alpha alpha rare beta"] * 5
    docs += [f"common filler words {i}" for i in range(200)]
    r = BM25Retriever.from_documents(docs, method=method)
    for q in ("alpha beta", "rare alpha", "common", "filler 1 alpha", "beta"):
        scores = r.get_scores(q)
        order = np.lexsort((np.arange(scores.size), -scores))
        for k in (1, 7, 10, 64, 300):
            hits = r.retrieve(q, k=k)
            assert [h.id for h in hits] == [str(i) for i in order[:k]], (q, k)
            assert [h.score for h in hits] == scores[order[:k]].tolist()
            assert r.retrieve_many([q] * 4, k=k)[0] == hits
    assert calls or method == "robertson"  # robertson's negative scores rank every document
