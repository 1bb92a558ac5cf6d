import json

import pytest

from ragprune.datasets import load_beir, read_qrels
from ragprune.metrics import evaluate_run, run_from_hits

pytest.importorskip("pytrec_eval")


def _write_beir(root, corpus, queries, qrels):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))


@pytest.fixture()
def tiny_beir(tmp_path, toy_docs):
    queries = [{"_id": "q1", "text": "what causes scurvy"}, {"_id": "q2", "text": "capital of Germany"},
               {"_id": "q3", "text": "unjudged query"}]
    _write_beir(tmp_path / "tiny", toy_docs, queries, [("q1", "scurvy", 1), ("q2", "berlin", 2), ("q2", "paris", 0)])
    return tmp_path / "tiny"


def test_load_beir(tiny_beir):
    ds = load_beir(tiny_beir, "test")
    assert ds.name == "tiny" and len(ds.corpus) == 5
    assert list(ds.queries) == ["q1", "q2"]  # only judged queries
    assert ds.qrels["q2"] == {"berlin": 2, "paris": 0}


def test_load_beir_errors(tmp_path, tiny_beir):
    with pytest.raises(FileNotFoundError, match="qrels/dev.tsv not found"):
        load_beir(tiny_beir, "dev")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_beir(tmp_path / "nope")
    (tiny_beir / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{broken\n')
    with pytest.raises(ValueError, match="corpus.jsonl:2 is not valid JSON"):
        load_beir(tiny_beir)


def test_metrics_known_values():
    from ragprune import Document, ScoredDocument

    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    hits = {
        "q1": ["x", "a"],        # relevant at rank 2: RR = 0.5, nDCG = 1/log2(3)
        "q2": ["b", "y", "c"],   # ranks 1 and 3
    }
    run = run_from_hits(list(hits), [[ScoredDocument(Document(id=d, text=""), 0.0) for d in v] for v in hits.values()])
    m = evaluate_run(qrels, run)
    import math
    ndcg1 = 1 / math.log2(3)
    ndcg2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert m["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["recall@100"] == pytest.approx(1.0)
    # a judged query with no results counts as zero
    assert evaluate_run({**qrels, "q3": {"z": 1}}, run)["mrr@10"] == pytest.approx(1.5 / 3)


def test_identical_ids_are_ignored_like_beir():
    from ragprune import Document, ScoredDocument

    hits = [[ScoredDocument(Document(id=d, text=""), 1.0) for d in ["q1", "a"]]]
    assert list(run_from_hits(["q1"], hits)["q1"]) == ["a"]
    assert list(run_from_hits(["q1"], hits, ignore_identical_ids=False)["q1"]) == ["q1", "a"]


def test_eval_beir_script_on_any_beir_folder(tiny_beir, tmp_path, capsys):
    from eval.beir import main

    out = tmp_path / "res.json"
    assert main(["--data", str(tiny_beir), "--retriever", "bm25", "--top-k", "3", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) >= {"dataset", "split", "pipeline", "num_queries", "metrics", "seconds"}
    assert res["dataset"] == "tiny" and res["num_queries"] == 2
    assert res["metrics"]["ndcg@10"] == pytest.approx(1.0)
    assert set(res["metrics"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert "| tiny | test | bm25" in capsys.readouterr().out


def test_eval_beir_script_bad_folder(tmp_path, capsys):
    from eval.beir import main

    assert main(["--data", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_read_qrels_rejects_short_rows(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(ValueError, match="needs 3 tab-separated columns"):
        read_qrels(p)


def test_eval_beir_with_reranker_reports_pure_and_fused(tiny_beir, tmp_path):
    pytest.importorskip("torch")
    from eval.beir import main
    from tests.test_cross_encoder import make_tiny_cross_encoder

    ce = make_tiny_cross_encoder(tmp_path / "ce")
    out = tmp_path / "r.json"
    assert main(["--data", str(tiny_beir), "--retriever", "bm25", "--reranker", "cross-encoder",
                 "--reranker-model", str(ce), "--first-stage-weight", "1.0", "--fusion-weights", "0.5",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["metrics"]["ndcg@10"] == pytest.approx(1.0)  # weight 1.0 = BM25 order, perfect here
    assert set(res["fused_with_first_stage"]) == {"0.0", "0.5"}
    assert "CrossEncoderReranker" in res["pipeline"]


def _prp_oracle(calls):
    """A fake LLM for PRP that prefers the passage mentioning scurvy or Berlin and counts its calls."""
    from ragprune.rerank.llm import CallableLLM, LLMReply

    class Oracle(CallableLLM):
        def __init__(self):
            super().__init__(lambda p: "", name="oracle")

        def choose(self, prompt, labels, *, answer_prefix=""):
            calls.append(prompt)
            a = prompt.split('Passage A: "')[1].split('"')[0].lower()
            pick = "A" if ("scurvy" in a or "berlin" in a) else "B"
            other = "B" if pick == "A" else "A"
            return LLMReply(text=f"Passage {pick}", label_logprobs={pick: -0.1, other: -2.5})

    return Oracle()


@pytest.mark.parametrize("flag", ["--llm-cache", "--prp-cache"])  # --prp-cache: the older name
def test_prp_resumes_from_a_reply_cache_with_a_half_written_last_line(tiny_beir, tmp_path, monkeypatch, flag):
    """A run killed mid-write leaves a cut last line (even a cut UTF-8 character): the rerun skips
    that line, replays every complete reply and asks only for what is missing."""
    from eval.beir import main

    calls: list[str] = []
    monkeypatch.setattr("ragprune.rerank.llm.load_llm", lambda spec, **kw: _prp_oracle(calls))
    cache, out = tmp_path / "replies.jsonl", tmp_path / "prp.json"
    argv = ["--data", str(tiny_beir), "--retriever", "bm25", "--top-k", "3", "--reranker", "prp", "--llm", "fake",
            flag, str(cache), "--json", str(out)]
    assert main(argv) == 0
    first = json.loads(out.read_text())
    asked = len(calls)
    assert asked > 1 and first["prp"]["llm_cache_misses"] == asked
    lines = cache.read_bytes().splitlines(keepends=True)
    assert len(lines) == asked
    # the kill: the last reply lost, the one before it cut in half, after a multi-byte character
    cut = lines[-2][: len(lines[-2]) // 2] + "\u00e9".encode()[:1]
    cache.write_bytes(b"".join(lines[:-2]) + cut)
    assert main(argv) == 0
    again = json.loads(out.read_text())
    assert len(calls) == asked + 2  # only the two damaged replies are asked again
    assert again["prp"]["llm_cache_hits"] == asked - 2
    assert again["metrics"] == first["metrics"] and again["pipeline"] == first["pipeline"]
