import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from ragprune import BM25Retriever, Document, IndexFormatError
from ragprune.text import Analyzer

# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("method", ["okapi", "bm25+"])
def test_scores_match_rank_bm25(scifact_sample, method):
    """Same analysed tokens, same formulas: scores equal rank-bm25's to float32 precision."""
    pytest.importorskip("rank_bm25")
    docs, queries = scifact_sample
    ours = BM25Retriever.from_documents(docs, method=method, k1=1.5, b=0.75)
    ref = BM25Retriever.from_documents(docs, method=method, k1=1.5, b=0.75, backend="rank_bm25")
    for q in queries:
        np.testing.assert_allclose(ours.get_scores(q), ref.get_scores(q), rtol=1e-4, atol=1e-4)
        assert [h.id for h in ours.retrieve(q, 10)] == [h.id for h in ref.retrieve(q, 10)]


def _reference_scores(tokens, query, method, k1, b, delta):
    """Textbook BM25L / Lucene formulas, written out per document."""
    n = len(tokens)
    avgdl = sum(map(len, tokens)) / n
    out = []
    for doc in tokens:
        s = 0.0
        for t in query:
            df = sum(t in d for d in tokens)
            if df == 0:
                continue
            tf = doc.count(t)
            norm = 1 - b + b * len(doc) / avgdl
            if method == "bm25l":  # Lv & Zhai 2011: applies to every document
                idf = math.log((n + 1) / (df + 0.5))
                c = tf / norm
                s += idf * (k1 + 1) * (c + delta) / (k1 + c + delta)
            else:  # lucene
                if tf:
                    s += math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf * (k1 + 1) / (tf + k1 * norm)
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("method", ["bm25l", "lucene"])
def test_scores_match_textbook_formula(scifact_sample, method):
    # rank-bm25's BM25L multiplies by the raw term frequency (and so zeroes documents
    # without the term), which is not Lv & Zhai's formula; we follow the paper, like bm25s.
    docs, queries = scifact_sample
    docs = docs[:60]
    ours = BM25Retriever.from_documents(docs, method=method, k1=1.2, b=0.75, delta=0.5)
    an = Analyzer()
    tokens = [an(d["title"] + " " + d["text"]) for d in docs]
    for q in queries[:8]:
        ref = _reference_scores(tokens, an(q), method, 1.2, 0.75, 0.5)
        np.testing.assert_allclose(ours.get_scores(q), ref, rtol=1e-4, atol=1e-4)


def _bm25s_top5(docs, queries, method, k1, b):
    """bm25s's top-5 ids and scores on ragprune's analyzer tokens."""
    bm25s = pytest.importorskip("bm25s")
    an = Analyzer()
    ref = bm25s.BM25(method=method, k1=k1, b=b)
    ref.index([an(d["title"] + " " + d["text"]) for d in docs], show_progress=False)
    return ref.retrieve([an(q) for q in queries], k=5, show_progress=False, n_threads=1)


def test_rankings_match_bm25s(scifact_sample):
    docs, queries = scifact_sample
    ids, scores = _bm25s_top5(docs, queries, "lucene", 0.9, 0.4)
    ours = BM25Retriever.from_documents(docs, method="lucene", k1=0.9, b=0.4)
    for q, row, srow in zip(queries, ids, scores):
        hits = ours.retrieve(q, 5)
        # bm25s leaves out Lucene's constant (k1 + 1) factor: same ranking, scaled scores.
        np.testing.assert_allclose([h.score for h in hits], srow * 1.9, rtol=1e-4, atol=1e-4)
        assert [h.id for h in hits] == [docs[i]["_id"] for i in row]


def test_default_scores_match_bm25s_with_the_same_parameters(scifact_sample):
    docs, queries = scifact_sample
    ids, scores = _bm25s_top5(docs, queries, "atire", 1.5, 0.9)
    ours = BM25Retriever.from_documents(docs)  # atire, k1=1.5, b=0.9
    for q, row, srow in zip(queries, ids, scores):
        hits = ours.retrieve(q, 5)
        np.testing.assert_allclose([h.score for h in hits], srow, rtol=1e-4, atol=1e-4)
        assert [h.id for h in hits] == [docs[i]["_id"] for i in row]


# ----------------------------------------------------------------------------- defaults

OLD_INDEX = Path(__file__).parent / "data" / "bm25_index_v1_old_defaults"


def test_defaults_are_the_setting_chosen_on_dev_data(toy_docs):
    bm25 = BM25Retriever.from_documents(toy_docs)
    assert (bm25.method, bm25.k1, bm25.b) == ("atire", 1.5, 0.9)
    results = Path(__file__).parents[1] / "eval" / "results" / "bm25_defaults.json"
    if results.is_file():  # the dev grid that chose them (eval/bm25_defaults.py)
        chosen = json.loads(results.read_text())["chosen"]
        assert (chosen["method"], chosen["k1"], chosen["b"]) == (bm25.method, bm25.k1, bm25.b)


def test_index_saved_with_the_old_defaults_keeps_its_parameters(toy_docs):
    """An index written before the defaults changed (lucene, k1=0.9, b=0.4) loads with its own
    parameters and scores, not today's defaults."""
    old = BM25Retriever.load(OLD_INDEX)
    assert (old.method, old.k1, old.b) == ("lucene", 0.9, 0.4)
    # scores written down by the version that saved the index
    expected = {"capital city of France": [("paris", 3.1922173500), ("berlin", 1.7310593128), ("cats", 0.0)],
                "vitamin C deficiency disease": [("scurvy", 4.1116676331), ("paris", 0.0), ("berlin", 0.0)]}
    for q, want in expected.items():
        hits = old.retrieve(q, k=3)
        assert [h.id for h in hits] == [d for d, _ in want]
        assert [h.score for h in hits] == pytest.approx([s for _, s in want], rel=1e-6)
    fresh = BM25Retriever.from_documents(toy_docs)  # same corpus, today's defaults
    assert fresh.retrieve("capital city of France", k=1)[0].score != pytest.approx(3.1922173500, rel=1e-3)
    assert "k1=0.9, b=0.4" in repr(old)


# ----------------------------------------------------------------------------- one query vs a batch

EDGE_QUERIES = ["cell cell cell growth growth growth growth", "zzzqqq unknownword", "the of and",
                "xylophone", "vitamin", "Cell", "protein expression in cancer cells of mice"]


@pytest.mark.parametrize("method", ["atire", "lucene", "robertson", "okapi", "bm25l", "bm25+"])
def test_one_query_at_a_time_equals_the_batched_path(scifact_sample, monkeypatch, method):
    """retrieve(q) (posting lists + bincount) and retrieve_many (sparse product) give the same
    documents and bit-identical scores, on the dense and on the matched-only path."""
    import ragprune.retrieve.bm25 as mod

    docs, queries = scifact_sample
    qs = queries[:25] + EDGE_QUERIES
    bm25 = BM25Retriever.from_documents(docs, method=method)
    assert len(qs) >= mod._BATCH_MIN
    for k in (1, 10, len(docs) + 5):
        batched = bm25.retrieve_many(qs, k=k)
        assert [bm25.retrieve(q, k=k) for q in qs] == batched
        for ratio in (0, 10**9):  # every query matched-only / every query dense
            monkeypatch.setattr(mod, "_SPARSE_RATIO", ratio)
            assert [bm25.retrieve(q, k=k) for q in qs] == batched
        monkeypatch.undo()
    for q, hits in zip(qs, bm25.retrieve_many(qs, k=10)):
        scores = bm25.get_scores(q)
        pos = {d.id: i for i, d in enumerate(bm25.documents)}
        assert [h.score for h in hits] == [float(scores[pos[h.id]]) for h in hits]


def test_one_query_equals_batched_with_negative_scores():
    docs = ["common alpha", "common beta", "common gamma", "delta only", "common common alpha"]
    bm25 = BM25Retriever.from_documents(docs, method="robertson")
    qs = ["common", "common alpha", "alpha alpha beta", "delta", "nothing"]
    for k in (1, 3, 10):
        assert [bm25.retrieve(q, k=k) for q in qs] == bm25.retrieve_many(qs, k=k)
    assert bm25.retrieve("common", k=5)[0].id == "3"  # unmatched (0) above negative scores


def test_batched_results_do_not_depend_on_the_batch(scifact_sample):
    docs, queries = scifact_sample
    bm25 = BM25Retriever.from_documents(docs)
    whole = bm25.retrieve_many(queries, k=10)
    assert bm25.retrieve_many(queries[::-1], k=10) == whole[::-1]
    assert bm25.retrieve_many(queries[:3], k=10) == whole[:3]  # below _BATCH_MIN: one at a time


# ----------------------------------------------------------------------------- behaviour


def test_finds_the_obvious_document(toy_docs):
    bm25 = BM25Retriever.from_documents(toy_docs)
    assert bm25.retrieve("what causes scurvy?", k=1)[0].id == "scurvy"
    assert bm25.retrieve("capital of Germany", k=1)[0].id == "berlin"


def test_k_larger_than_corpus_returns_all_in_score_then_corpus_order(toy_docs):
    bm25 = BM25Retriever.from_documents(toy_docs)
    hits = bm25.retrieve("capital city", k=100)
    assert len(hits) == len(toy_docs)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # unmatched documents (score 0) follow in corpus order
    zero = [h.id for h in hits if h.score == 0]
    assert zero == [d["_id"] for d in toy_docs if d["_id"] in zero]


def test_ties_break_by_corpus_order():
    docs = [Document(id=f"d{i}", text="same words here") for i in range(6)]
    bm25 = BM25Retriever.from_documents(docs)
    assert [h.id for h in bm25.retrieve("words", k=4)] == ["d0", "d1", "d2", "d3"]


def test_unknown_or_stopword_only_query_returns_zero_scores(toy_docs):
    bm25 = BM25Retriever.from_documents(toy_docs)
    for q in ["zzzqqq", "the of and", "¿¡"]:
        hits = bm25.retrieve(q, k=3)
        assert [h.id for h in hits] == ["paris", "berlin", "cats"]
        assert all(h.score == 0 for h in hits)


def test_retrieve_equals_retrieve_many_and_is_deterministic(scifact_sample):
    docs, queries = scifact_sample
    bm25 = BM25Retriever.from_documents(docs)
    many = bm25.retrieve_many(queries, k=20)
    assert many == [bm25.retrieve(q, k=20) for q in queries]
    assert many == BM25Retriever.from_documents(docs).retrieve_many(queries, k=20)
    assert bm25.retrieve_many([], k=5) == []


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "okapi", "bm25l", "bm25+"])
def test_every_variant_ranks_the_obvious_document_first(toy_docs, method):
    bm25 = BM25Retriever.from_documents(toy_docs, method=method)
    hits = bm25.retrieve("vitamin C deficiency disease", k=len(toy_docs))
    assert hits[0].id == "scurvy"
    assert len(hits) == len(toy_docs)


def test_robertson_negative_idf_does_not_drop_unmatched_documents():
    # a term in every document gets a negative Robertson idf: unmatched docs must outrank.
    docs = ["common alpha", "common beta", "common gamma", "delta only"]
    bm25 = BM25Retriever.from_documents(docs, method="robertson")
    hits = bm25.retrieve("common", k=4)
    assert hits[0].id == "3" and hits[0].score == 0.0
    assert all(h.score < 0 for h in hits[1:])


def test_caller_documents_are_not_mutated(toy_docs):
    before = json.dumps(toy_docs, sort_keys=True)
    BM25Retriever.from_documents(toy_docs).retrieve("paris", k=2)
    assert json.dumps(toy_docs, sort_keys=True) == before


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("query, exc, msg", [
    ("", ValueError, "query is empty or whitespace"),
    ("   \n\t", ValueError, "query is empty or whitespace"),
    (None, TypeError, "query must be a str, got NoneType"),
    (b"bytes", TypeError, "query must be a str, got bytes"),
    (42, TypeError, "query must be a str, got int"),
])
def test_bad_queries(toy_docs, query, exc, msg):
    bm25 = BM25Retriever.from_documents(toy_docs)
    with pytest.raises(exc, match=msg):
        bm25.retrieve(query)
    with pytest.raises(exc, match=msg):
        bm25.retrieve_many(["fine", query])


@pytest.mark.parametrize("k, exc, msg", [
    (0, ValueError, "k must be >= 1, got 0"),
    (-3, ValueError, "k must be >= 1, got -3"),
    (2.5, TypeError, "k must be an int, got float"),
    (True, TypeError, "k must be an int, got bool"),
])
def test_bad_k(toy_docs, k, exc, msg):
    bm25 = BM25Retriever.from_documents(toy_docs)
    with pytest.raises(exc, match=msg):
        bm25.retrieve("paris", k=k)


def test_retrieve_many_rejects_a_single_string(toy_docs):
    bm25 = BM25Retriever.from_documents(toy_docs)
    with pytest.raises(TypeError, match="queries must be a list of str"):
        bm25.retrieve_many("paris")


@pytest.mark.parametrize("corpus, exc, msg", [
    ([], ValueError, "corpus is empty"),
    ([Document(id="a", text="x"), Document(id="a", text="y")], ValueError, "duplicate document id 'a'"),
    ([{"_id": "a", "text": 5}], TypeError, "Document.text must be a str"),
    ([None], TypeError, "document 0 is a NoneType"),
])
def test_bad_corpus(corpus, exc, msg):
    with pytest.raises(exc, match=msg):
        BM25Retriever.from_documents(corpus)


@pytest.mark.parametrize("kwargs, msg", [
    ({"method": "bm26"}, "unknown method 'bm26'"),
    ({"k1": -1}, "k1 must be >= 0"),
    ({"b": 1.5}, "b must be <= 1"),
    ({"backend": "elastic"}, "unknown backend 'elastic'"),
])
def test_bad_parameters(toy_docs, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        BM25Retriever.from_documents(toy_docs, **kwargs)


def test_documents_with_no_terms_are_indexed():
    bm25 = BM25Retriever.from_documents(["", "the of", "real words"])
    assert bm25.retrieve("words", k=1)[0].id == "2"
    assert len(BM25Retriever.from_documents([""]).retrieve("x", k=5)) == 1


# ----------------------------------------------------------------------------- persistence


def test_save_load_round_trip(scifact_sample, tmp_path):
    docs, queries = scifact_sample
    bm25 = BM25Retriever.from_documents(docs, method="bm25l", k1=1.1, b=0.6)
    bm25.save(tmp_path / "idx")
    loaded = BM25Retriever.load(tmp_path / "idx")
    assert loaded.retrieve_many(queries, k=10) == bm25.retrieve_many(queries, k=10)
    assert (loaded.method, loaded.k1, loaded.b) == ("bm25l", 1.1, 0.6)
    # files are plain: no pickle anywhere
    data = [p for p in (tmp_path / "idx").rglob("*") if p.is_file()]
    assert {p.suffix for p in data} <= {".json", ".jsonl", ".npy"}


def test_save_replaces_previous_index_and_cleans_up(toy_docs, tmp_path):
    BM25Retriever.from_documents(toy_docs[:2]).save(tmp_path / "idx")
    BM25Retriever.from_documents(toy_docs).save(tmp_path / "idx")
    assert len(BM25Retriever.load(tmp_path / "idx")) == len(toy_docs)
    assert len([p for p in (tmp_path / "idx").iterdir() if p.is_dir()]) == 1


def test_save_never_touches_other_files(toy_docs, tmp_path):
    user = tmp_path / "mine"
    (user / "v-important").mkdir(parents=True)
    (user / ".tmp-notes").mkdir()
    with pytest.raises(IndexFormatError, match="not empty and holds no ragprune index"):
        BM25Retriever.from_documents(toy_docs).save(user)
    assert sorted(p.name for p in user.iterdir()) == [".tmp-notes", "v-important"]
    with pytest.raises(ValueError, match="path is empty"):
        BM25Retriever.from_documents(toy_docs).save("")
    (tmp_path / "killed" / f".tmp-{'0' * 32}").mkdir(parents=True)  # only a killed first save's leftovers
    BM25Retriever.from_documents(toy_docs).save(tmp_path / "killed")
    assert len(BM25Retriever.load(tmp_path / "killed")) == len(toy_docs)


def test_failed_save_keeps_the_previous_index(toy_docs, tmp_path, monkeypatch):
    good = BM25Retriever.from_documents(toy_docs)
    good.save(tmp_path / "idx")
    other = BM25Retriever.from_documents(toy_docs[:2])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("ragprune.retrieve.bm25.write_documents", boom)
    with pytest.raises(OSError, match="disk full"):
        other.save(tmp_path / "idx")
    monkeypatch.undo()
    assert BM25Retriever.load(tmp_path / "idx").retrieve("scurvy", k=5) == good.retrieve("scurvy", k=5)
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.startswith(".tmp-")]


def test_kill_during_save_keeps_the_previous_index(scifact_sample, tmp_path):
    """SIGKILL a process in the middle of save(): the old index must still load intact."""
    docs, queries = scifact_sample
    idx = tmp_path / "idx"
    old = BM25Retriever.from_documents(docs[:50])
    old.save(idx)
    expected = old.retrieve_many(queries[:5], k=5)
    script = textwrap.dedent(f"""
        import json, os, sys, time
        import ragprune.retrieve.bm25 as m
        from ragprune import BM25Retriever
        docs = [json.loads(l) for l in open({str(tmp_path / 'docs.jsonl')!r})]
        r = BM25Retriever.from_documents(docs)
        real = m.write_documents
        def slow(path, d):
            real(path, d)
            print("writing", flush=True)
            time.sleep(30)
        m.write_documents = slow
        r.save({str(idx)!r})
    """)
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert BM25Retriever.load(idx).retrieve_many(queries[:5], k=5) == expected
    BM25Retriever.from_documents(docs).save(idx)  # the next save cleans the leftovers
    assert len([p for p in idx.iterdir() if p.is_dir()]) == 1


def test_load_errors(toy_docs, tmp_path):
    with pytest.raises(FileNotFoundError, match="no index folder"):
        BM25Retriever.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        BM25Retriever.load(tmp_path / "empty")

    BM25Retriever.from_documents(toy_docs).save(tmp_path / "idx")
    manifest = tmp_path / "idx" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        BM25Retriever.load(tmp_path / "idx")
    manifest.write_text(json.dumps({**m, "kind": "dense"}))
    with pytest.raises(IndexFormatError, match="holds a 'dense' index"):
        BM25Retriever.load(tmp_path / "idx")
    manifest.write_text(json.dumps({**m, "data": "../../etc"}))
    with pytest.raises(IndexFormatError):
        BM25Retriever.load(tmp_path / "idx")
    manifest.write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupt"):
        BM25Retriever.load(tmp_path / "idx")


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("victim", ["scores.npy", "indices.npy", "indptr.npy", "tf.npy", "doclen.npy", "nonocc.npy",
                                    "documents.offsets.npy", "vocab.json", "documents.jsonl", "params.json"])
def test_truncated_files_fail_clearly(toy_docs, tmp_path, victim, mmap):
    BM25Retriever.from_documents(toy_docs).save(tmp_path / "idx")
    data = next(p for p in (tmp_path / "idx").iterdir() if p.is_dir())
    f = data / victim
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(IndexFormatError, match="rebuild the index"):
        BM25Retriever.load(tmp_path / "idx", mmap=mmap)


def test_reference_backend_cannot_be_saved(toy_docs, tmp_path):
    pytest.importorskip("rank_bm25")
    r = BM25Retriever.from_documents(toy_docs, method="okapi", backend="rank_bm25")
    with pytest.raises(ValueError, match="cannot be saved"):
        r.save(tmp_path / "x")
    with pytest.raises(ValueError, match="supports methods"):
        BM25Retriever.from_documents(toy_docs, method="lucene", backend="rank_bm25")


# ----------------------------------------------------------------------------- threads


def test_concurrent_queries_match_single_threaded(scifact_sample):
    docs, queries = scifact_sample
    bm25 = BM25Retriever.from_documents(docs)
    expected = [bm25.retrieve(q, k=10) for q in queries]
    results: dict[int, list] = {}
    errors = []

    def work(i):
        try:
            for _ in range(5):
                results[i] = [bm25.retrieve(q, k=10) for q in queries]
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == expected for r in results.values())
