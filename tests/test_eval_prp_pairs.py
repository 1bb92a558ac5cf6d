"""eval/prp_pairs.py: pair sampling and the accuracy bookkeeping, with fake LLMs."""

import json

import pytest

from eval import prp_pairs as pp
from ragprune.rerank.llm import CallableLLM, LLMReply, LLMUnavailableError


@pytest.fixture()
def beir_folder(tmp_path):
    docs = {"g1": "Scurvy is caused by a lack of vitamin C in the diet.",
            "g2": "Vitamin C deficiency leads to scurvy in sailors.",
            "n1": "Paris is the capital of France.", "n2": "Cats purr when they are content.",
            "n3": "The Rhine flows through Germany."}
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": v})
                                                     for k, v in docs.items()))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what causes scurvy"}) + "\n"
                                            + json.dumps({"_id": "q2", "text": "vitamin c deficiency scurvy"}))
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tg1\t1\nq1\tn1\t0\nq2\tg2\t1\nq2\tg1\t1\n")
    return tmp_path


class Oracle(CallableLLM):
    """Knows which passage mentions scurvy; ``biased`` always answers A."""

    def __init__(self, biased=False):
        super().__init__(lambda p: "", name="oracle")
        self.biased = biased

    def choose(self, prompt, labels, *, answer_prefix=""):
        a = prompt.split('Passage A: "')[1].split('"')[0]
        pick = "A" if self.biased or "scurvy" in a.lower() else "B"
        other = "B" if pick == "A" else "A"
        return LLMReply(text=f"Passage {pick}", label_logprobs={pick: -0.1, other: -2.5})


@pytest.mark.parametrize("biased, expected", [(False, (1.0, 0.0, 0.0, 1.0)), (True, (0.0, 1.0, 1.0, None))])
def test_accuracy_ties_bias_and_margin(beir_folder, monkeypatch, biased, expected):
    monkeypatch.setattr("ragprune.rerank.llm.load_llm", lambda spec, **kw: Oracle(biased))
    res = pp.run(pp.parse_args(["--data", str(beir_folder), "--llm", "fake", "--pairs", "5", "--top-k", "5"]))
    assert res["pairs"] == 5  # q1: g1 vs the judged non-relevant n1 only; q2: g1 or g2 vs unjudged ones
    acc, ties, bias, margin = expected
    assert (res["label_accuracy"], res["label_ties"], res["position_bias"]) == (acc, ties, bias)
    if margin is not None:
        assert res["margin_accuracy"] == margin
    else:  # a constant margin in both orders cancels out: never "right"
        assert res["margin_accuracy"] == 0.0


def test_sample_pairs_spreads_over_queries(beir_folder):
    from ragprune.datasets import load_beir

    ds = load_beir(beir_folder, "test")
    hits = {"q1": ["g1", "n1", "n2"], "q2": ["g2", "n1", "n2", "n3"]}
    pairs = pp.sample_pairs(ds, hits, 2, seed=0)
    assert sorted(q for q, _, _ in pairs) == ["q1", "q2"]
    assert ("q1", "g1", "n1") in pairs  # judged non-relevant passages are preferred
    assert len(pp.sample_pairs(ds, hits, 50, seed=0)) == 1 + 3


def test_errors_exit_2(beir_folder, monkeypatch, capsys):
    def down(prompt):
        raise LLMUnavailableError("server at http://localhost:9 is down")

    monkeypatch.setattr("ragprune.rerank.llm.load_llm", lambda spec, **kw: CallableLLM(down))
    assert pp.main(["--data", str(beir_folder), "--llm", "http://localhost:9/v1"]) == 2
    assert "localhost:9 is down" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pp.parse_args(["--data", str(beir_folder), "--llm", "x", "--pairs", "0"])


def test_gate_table_and_reply_cache(beir_folder, monkeypatch, tmp_path):
    calls = []

    class Counting(Oracle):
        def choose(self, prompt, labels, *, answer_prefix=""):
            calls.append(prompt)
            return super().choose(prompt, labels, answer_prefix=answer_prefix)

    monkeypatch.setattr("ragprune.rerank.llm.load_llm", lambda spec, **kw: Counting())
    argv = ["--data", str(beir_folder), "--llm", "fake", "--pairs", "5", "--top-k", "5",
            "--gates", "0", "4", "5", "--llm-cache", str(tmp_path / "replies.jsonl")]
    res = pp.run(pp.parse_args(argv))
    # the oracle's debiased margin is (-0.1 + 2.5) * 2 = 4.8 on every pair, always for the relevant one
    assert {p["margin"] for p in res["per_pair"]} == {4.8}
    assert [(g["min_margin"], g["coverage"], g["margin_accuracy"], g["labels_right"]) for g in res["gates"]] == [
        (0.0, 1.0, 1.0, 5), (4.0, 1.0, 1.0, 5), (5.0, 0.0, None, 0)]
    asked = len(calls)
    assert asked == 10 and (tmp_path / "replies.jsonl").is_file()
    again = pp.run(pp.parse_args(argv))  # every reply comes from the cache
    assert len(calls) == asked and again["gates"] == res["gates"]
