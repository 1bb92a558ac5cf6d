"""eval/qa.py: metrics, answer extraction, and small end-to-end runs with a fake reader (no LLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import qa
from ragprune.prune.baselines import BM25SentencePruner

# ------------------------------------------------------------------ a reader that reads the context
GOLD: dict[str, str] = {}  # question -> the answer the fake reader knows
CALLS = {"n": 0}


def fake_reader(prompt: str) -> str:
    """Answers with the gold answer when it is in the context, else 'unknown' (blank for 'silent' questions)."""
    CALLS["n"] += 1
    context = prompt.split("Context:\n", 1)[1].rsplit("\n\nQuestion: ", 1)[0]
    question = prompt.rsplit("Question: ", 1)[1].split("\nAnswer:", 1)[0]
    if "silent" in question:
        return "  \n"
    gold = GOLD.get(question, "")
    return f"Answer: {gold}." if gold and gold.lower() in context.lower() else "unknown"


READER = ["--reader", f"callable:{__name__}:fake_reader"]


# ------------------------------------------------------------------ metrics
def test_squad_metrics_known_values():
    assert qa.normalize_answer("The  Cat, sat!") == "cat sat"
    assert qa.normalize_answer("An apple a day") == "apple day"
    assert qa.f1("the cat sat", ["cat sat down"]) == pytest.approx(0.8)  # P = 1, R = 2/3
    assert qa.f1_score("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # multiset overlap
    assert qa.f1("dog", ["cat sat down"]) == 0.0
    assert qa.f1("down", ["cat sat down", "down"]) == 1.0  # max over gold answers
    assert qa.exact_match("The Cat.", ["cat"]) == 1.0
    assert qa.exact_match("cat sat", ["cat", "a dog"]) == 0.0
    assert qa.exact_match("", ["the"]) == 0.0 and qa.f1("  ", ["the"]) == 0.0  # empty never scores
    assert qa.exact_match("1,000 people", ["1000 people"]) == 1.0


def test_answer_in_context():
    assert qa.answer_in_context("The Eiffel Tower is in Paris.", ["paris"])
    assert not qa.answer_in_context("He concatenated strings.", ["cat"])  # word boundaries
    assert qa.answer_in_context("Denver Broncos won", ["the Denver Broncos"])  # articles dropped
    assert qa.answer_in_context("Italy | 3\nFrance | 2", ["Italy", "France"], require_all=True)
    assert not qa.answer_in_context("Italy | 3", ["Italy", "France"], require_all=True)
    assert not qa.answer_in_context("anything", ["the"])  # answer empty after normalization
    # punctuation glued to a word (possessive, en dash, citation marks) does not hide the answer
    assert qa.answer_in_context("Some documents such as Wang Zhen's Nong Shu", ["Wang Zhen"])
    assert qa.answer_in_context("Wei Yilin (1277\u20131347) invented", ["1347"])
    assert qa.answer_in_context('a "change of appearance".[citation needed]', ["change of appearance"])
    assert not qa.answer_in_context("in 1500 men", ["5"])


@pytest.mark.parametrize("reply, expected", [
    ("Paris", "Paris"),
    ("Answer: Paris.", "Paris"),
    ('"Paris"', "Paris"),
    ("**Paris**.", "Paris"),
    ("answer - Paris", "Paris"),
    ("Final answer: \"1066\".", "1066"),
    ("\n\nParis\nbecause the context says so.", "Paris"),
    ("Answer:\n Paris", "Paris"),
    ("U.S.", "U.S"),
    ("", ""),
    ("   \n \n", ""),
    ("Answer:", ""),
    ("The correct answer is: Paris", "Paris"),
    ("The answer is:\n\nThe answer is:", ""),  # only labels: empty
    ("Answering machines", "Answering machines"),
    (None, ""),
])
def test_extract_answer(reply, expected):
    assert qa.extract_answer(reply) == expected


def test_truncate_tokens_and_match_threshold():
    from ragprune.text import count_tokens

    text = "Paris is big. It is in France, Europe."
    for n in range(1, count_tokens(text) + 2):
        cut = qa.truncate_tokens(text, n)
        assert count_tokens(cut) == min(n, count_tokens(text)) and text.startswith(cut)
    assert qa.truncate_tokens(text, 0) == ""
    scores = [[np.array([0.9, 0.1]), np.array([0.5])]]
    tokens = [[np.array([10.0, 10.0]), np.array([20.0])]]
    assert qa.compression_at(scores, tokens, 0.5) == pytest.approx(0.25)  # keeps 10 + 20 of 40 tokens
    assert qa.match_threshold(scores, tokens, 0.7) == (0.9, pytest.approx(0.75))
    assert qa.match_threshold(scores, tokens, 0.3) == (0.5, pytest.approx(0.25))
    assert qa.match_threshold(scores, tokens, 0.0) == (0.1, pytest.approx(0.0))


# ------------------------------------------------------------------ end to end on a synthetic set
FILLER = ("This long opening sentence about the old harbour town says a great deal about boats, gulls, "
          "fishermen, nets and weather while saying nothing about the question at all.")


def _fixture(path):
    rows = [
        {"id": "q1", "question": "Which river flows through the harbour town?", "answers": ["the Lumen River"],
         "passages": [
             {"title": "Hills", "text": "The hills are green. Sheep graze there in summer."},
             {"title": "Harbour town", "sentences": [FILLER, "The market opens at dawn.",
                                                     "The Lumen River flows through the harbour town."],
              "labels": [0, 0, 1]}]},
        {"id": "q2", "question": "Who founded the harbour town library?", "answers": ["Mara Quell"],
         "passages": [
             {"title": "Library", "sentences": [FILLER, "Its reading room is large.",
                                                "Mara Quell founded the harbour town library."],
              "labels": [0, 0, 1]},
             {"title": "Weather", "text": "It rains a lot. Winters are mild."}]},
        {"id": "q3", "question": "What is the silent bell made of?", "answers": ["bronze"],
         "passages": [{"title": "Bell", "sentences": ["The silent bell is made of bronze."], "labels": [1]}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for r in rows:
        GOLD[r["question"]] = r["answers"][0]


@pytest.fixture()
def fake_provence(monkeypatch):
    """Stand-in for the Provence model (sentence scores + prune_many), so no model loads."""
    def factories(args):
        from ragprune.prune.baselines import LeadPruner, RandomPruner

        return {"provence": lambda: BM25SentencePruner(threshold=0.0), "lead": LeadPruner,
                "random": lambda: RandomPruner(seed=args.seed), "bm25": BM25SentencePruner}
    monkeypatch.setattr(qa, "method_factories", factories)


def _run(tmp_path, *extra):
    out = tmp_path / "out.json"
    rc = qa.main(["--dataset", "custom", "--qa-file", str(tmp_path / "qa.jsonl"), *READER, "--json", str(out),
                  "--cache", str(tmp_path / "cache.jsonl"), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_end_to_end_custom(tmp_path, capsys, fake_provence):
    _fixture(tmp_path / "qa.jsonl")
    strategies = ["--strategies", "full", "oracle", "lead", "bm25", "provence", "pipeline", "first-n",
                  "--baseline-compression", "natural", "--budgets", "12", "1000", "--thresholds", "0.1"]
    before = CALLS["n"]
    res = _run(tmp_path, *strategies, "--plot", str(tmp_path / "qa.png"))
    first_calls = CALLS["n"] - before
    rows = res["custom"]
    assert set(rows) == {"full", "oracle", "lead", "bm25", "provence@0.1", "pipeline@12", "pipeline@1000",
                         "first-n@12", "first-n@1000"}
    full = rows["full"]
    # q3's reply is blank: scored zero and counted as empty; the other two are answered
    assert full["em"] == pytest.approx(2 / 3) and full["f1"] == pytest.approx(2 / 3)
    assert full["answer_in_context"] == 1.0 and full["empty_answers"] == 1 and full["compression"] == 0.0
    assert rows["oracle"]["em"] == pytest.approx(2 / 3) and rows["oracle"]["compression"] > 0.5
    # lead-2 drops the answer sentence (third) of q1 and q2: containment and EM fall together
    assert rows["lead"]["answer_in_context"] == pytest.approx(1 / 3) and rows["lead"]["em"] == 0.0
    # 12 tokens keep only the start of the first retrieved passage
    assert rows["first-n@12"]["context_tokens"] <= 12 and rows["first-n@12"]["em"] == 0.0
    assert rows["first-n@1000"]["em"] == full["em"] and rows["pipeline@1000"]["em"] == full["em"]
    assert rows["pipeline@12"]["context_tokens"] <= 12
    for r in rows.values():
        assert r["empty_answers"] == 1 and 0 <= r["compression"] <= 1 and r["reader_errors"] == 0
        assert r["em"] <= r["answer_in_context"] + 1e-9  # this reader can only answer from the context
    assert res["reader"].startswith("callable:") and res["questions"] == 200 and res["seed"] == 0
    assert res["datasets"]["custom"]["questions"] == 3
    assert (tmp_path / "qa.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "| strategy | EM | F1 |" in out and "| full | 0.667 |" in out
    # identical prompts from two strategies are read once (full == first-n@1000 == pipeline@1000 here)
    assert first_calls < 3 * len(rows)
    lines = [json.loads(x) for x in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert {"reader", "strategy", "qid", "context_hash", "raw", "answer", "seconds"} <= set(lines[0])

    # second run: everything from the cache, same numbers
    before = CALLS["n"]
    again = _run(tmp_path, *strategies)
    assert CALLS["n"] == before
    assert again["cached_answers"] == 3 * len(rows) and again["reader_calls"] == 0
    for s, r in rows.items():
        assert {k: v for k, v in again["custom"][s].items() if k != "prune_seconds"} == \
               {k: v for k, v in r.items() if k != "prune_seconds"}


def test_pipeline_backfill_modes(tmp_path, fake_provence):
    _fixture(tmp_path / "qa.jsonl")
    res = _run(tmp_path, "--strategies", "pipeline", "--budgets", "1000", "--pipeline-threshold", "1.0",
               "--pipeline-backfill", "all", "kept-documents", "none")
    rows = res["custom"]
    assert set(rows) == {"pipeline@1000", "pipeline-kept@1000", "pipeline-strict@1000"}
    assert rows["pipeline@1000"]["family"] == "pipeline" and rows["pipeline-kept@1000"]["family"] == "pipeline-kept"
    # less is backfilled from documents without a kept sentence: never more context than "all"
    assert rows["pipeline-kept@1000"]["context_tokens"] < rows["pipeline@1000"]["context_tokens"]
    assert rows["pipeline-strict@1000"]["context_tokens"] < rows["pipeline-kept@1000"]["context_tokens"]


def test_matched_compression_uses_provence_reference(tmp_path, fake_provence):
    _fixture(tmp_path / "qa.jsonl")
    res = _run(tmp_path, "--strategies", "random", "--baseline-compression", "0.5")
    r = res["custom"]["random"]
    assert abs(r["compression_sentences"] - 0.5) < 0.3 and res["datasets"]["custom"]["reference_compression"] == 0.5


def test_errors_exit_2(tmp_path, capsys):
    assert qa.main(["--dataset", "squad", "--shared", str(tmp_path / "nope"), *READER]) == 2
    assert "dev-v1.1.json" in capsys.readouterr().err
    assert qa.main(["--dataset", "squad", "--shared", str(tmp_path), "--reader", str(tmp_path / "missing.gguf")]) == 2
    assert "missing.gguf" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    assert qa.main(["--dataset", "custom", "--qa-file", str(tmp_path / "bad.jsonl"), *READER]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


# ------------------------------------------------------------------ real data, tiny
def test_real_squad_three_questions(tmp_path, shared_data):
    args = qa.parse_args(["--dataset", "squad", "--questions", "3", "--shared", str(shared_data)])
    items = qa.load_set("squad", args).items
    assert len(items) == 3 and all(len(it.pq.passages) == 5 for it in items)
    for it in items:
        GOLD[it.question] = it.answers[0]
        assert [p.document.id for p in it.pq.passages] == ["1", "2", "3", "4", "5"]
    res = qa.main(["--dataset", "squad", "--questions", "3", "--shared", str(shared_data), *READER,
                   "--strategies", "full", "lead", "first-n", "--budgets", "8", "--baseline-compression", "natural",
                   "--provence", "none", "--json", str(tmp_path / "s.json")])
    assert res == 0
    rows = json.loads((tmp_path / "s.json").read_text())["squad"]
    assert rows["full"]["answer_in_context"] == 1.0 and rows["full"]["em"] == 1.0
    assert rows["first-n@8"]["context_tokens"] <= 8 and rows["first-n@8"]["em"] < 1.0
    assert rows["lead"]["em"] == rows["lead"]["answer_in_context"]


def test_real_wtq_two_questions(tmp_path, shared_data):
    args = qa.parse_args(["--dataset", "wtq", "--questions", "2", "--shared", str(shared_data)])
    s = qa.load_set("wtq", args)
    assert len(s.items) == 2
    for it in s.items:
        GOLD[it.question] = ", ".join(it.answers)
    assert qa.main(["--dataset", "wtq", "--questions", "2", "--shared", str(shared_data), *READER,
                    "--strategies", "full", "html-bm25", "first-n", "--budgets", "64",
                    "--json", str(tmp_path / "w.json")]) == 0
    rows = json.loads((tmp_path / "w.json").read_text())["wtq"]
    assert set(rows) == {"full", "html-bm25@64", "first-n@64"}
    assert rows["full"]["answer_in_context"] == 1.0
    assert rows["html-bm25@64"]["context_tokens"] <= 64 and rows["first-n@64"]["context_tokens"] <= 64


# ------------------------------------------------------------------ results files are not replaced by another run
# The settings eval/results/qa.json records (written by the README's second eval.qa command, with
# the option names of that time: --questions, --reader, --cache)
QA_JSON_SETTINGS = {
    "dataset": ["squad", "hotpotqa"], "qa_file": None, "shared": "../shared/data", "questions": 100,
    "hotpot_split": "heldout", "reader": "qwen2.5-0.5b", "reader_backend": "auto", "reader_ctx": 4096,
    "max_context_tokens": 3276, "answer_tokens": 32,
    "strategies": ["full", "oracle", "bm25", "provence", "pipeline", "first-n"], "thresholds": [0.01, 0.1],
    "budgets": [256, 512], "pipeline_threshold": 0.1, "pipeline_backfill": ["all", "kept-documents", "none"],
    "rerank": "none", "baseline_compression": "provence", "provence": "ragprune-provence", "threads": 2,
    "cache": "eval/results/qa_cache.jsonl", "seed": 0, "json": "eval/results/qa.json", "plot": "eval/results/qa.png"}


def _readme_commands(results, cache):
    first = ["--dataset", "all", "--questions", "100", "--reader", "qwen2.5-1.5b",
             "--cache", str(cache), "--json", str(results), "--plot", str(results.with_suffix(".png"))]
    second = ["--dataset", "squad", "hotpotqa", "--questions", "100", "--reader", "qwen2.5-0.5b", "--threads", "2",
              "--strategies", "full", "oracle", "bm25", "provence", "pipeline", "first-n",
              "--thresholds", "0.01", "0.1", "--budgets", "256", "512",
              "--pipeline-backfill", "all", "kept-documents", "none",
              "--cache", str(cache), "--json", str(results), "--plot", str(results.with_suffix(".png"))]
    return first, second


def test_readme_first_command_does_not_overwrite_the_results_of_the_tables(tmp_path, capsys):
    from eval.common import check_outputs

    results = tmp_path / "qa.json"
    results.write_text(json.dumps({"squad": {"full": {"f1": 0.5}}, "settings": QA_JSON_SETTINGS}))
    before = results.read_bytes()
    first, second = _readme_commands(results, tmp_path / "cache.jsonl")
    # the README's first command: another run (all datasets, another reader): refused before any work
    assert qa.main(first) == 2
    err = capsys.readouterr().err
    assert "holds the results of a different run" in err and "--force" in err
    assert "dataset:" in err and "llm:" in err and "strategies:" in err
    assert results.read_bytes() == before and not (tmp_path / "cache.jsonl").exists()
    assert not results.with_suffix(".png").exists()
    # the command that wrote the file may rewrite it (new option names and the old ones alike)
    check_outputs(qa.parse_args(second))
    renamed = [{"--questions": "--limit", "--reader": "--llm", "--cache": "--llm-cache"}.get(a, a) for a in second]
    check_outputs(qa.parse_args(renamed))
    # a smaller run of the same command is refused too; --force (or --overwrite) replaces the file
    smaller = [("10" if a == "100" else a) for a in second]
    with pytest.raises(ValueError, match=r"limit: 100 -> 10"):
        check_outputs(qa.parse_args(smaller))
    check_outputs(qa.parse_args([*smaller, "--force"]))
    check_outputs(qa.parse_args([*smaller, "--overwrite"]))


def test_results_file_guard_end_to_end(tmp_path, capsys, fake_provence):
    _fixture(tmp_path / "qa.jsonl")
    out = tmp_path / "out.json"
    res = _run(tmp_path, "--strategies", "full", "oracle")
    assert res["settings"]["strategies"] == ["full", "oracle"] and res["settings"]["limit"] == 200
    assert "json" not in res["settings"] and "llm_cache" not in res["settings"]
    base = ["--dataset", "custom", "--qa-file", str(tmp_path / "qa.jsonl"), *READER, "--json", str(out)]
    calls = CALLS["n"]
    assert qa.main([*base, "--strategies", "full"]) == 2  # another run: nothing asked, nothing written
    assert CALLS["n"] == calls and json.loads(out.read_text()) == res
    assert "strategies:" in capsys.readouterr().err
    assert qa.main([*base, "--strategies", "full", "--force"]) == 0
    assert set(json.loads(out.read_text())["custom"]) == {"full"}
    # a file that records no settings (written before they were recorded) is replaced with a note
    out.write_text(json.dumps({"custom": {}}))
    assert qa.main([*base, "--strategies", "oracle"]) == 0
    assert "records no settings" in capsys.readouterr().err
    # a plot without --json: an existing picture is not replaced without --force
    png = tmp_path / "p.png"
    png.write_bytes(b"old")
    assert qa.main([*base[:-2], "--strategies", "full", "--plot", str(png)]) == 2
    assert png.read_bytes() == b"old"


def test_answer_cache_survives_a_line_cut_mid_character(tmp_path):
    cache = tmp_path / "c.jsonl"
    good = {"reader": "r", "strategy": "full", "qid": "q1", "context_hash": "h", "raw": "Zürich"}
    cut = json.dumps({**good, "qid": "q2"}, ensure_ascii=False).encode()
    cache.write_bytes(json.dumps(good, ensure_ascii=False).encode() + b"\n" + cut[: cut.index("ü".encode()) + 1])
    c = qa.AnswerCache(cache)
    assert c.get("r", "full", "q1", "h")["raw"] == "Zürich" and c.get("r", "full", "q2", "h") is None
