import json

import numpy as np
import pytest

from eval.pruning_data import load_pruning_set


def test_pruning_sets_have_consistent_labels(shared_data):
    for ds, split in [("scifact", "heldout"), ("hotpotqa", "heldout"), ("squad", "heldout")]:
        qs = load_pruning_set(shared_data, ds, split, limit=20)
        assert qs and all(q.passages for q in qs)
        for q in qs:
            assert any(p.relevant for p in q.passages)
            for p in q.passages:
                assert len(p.spans) == len(p.labels)
                assert all(0 <= a < b <= len(p.document.text) for a, b in p.spans)


def test_scifact_heldout_matches_the_release(shared_data):
    qs = load_pruning_set(shared_data, "scifact", "heldout")
    assert len(qs) == 188  # claims_dev with evidence
    assert sum(sum(p.labels) for q in qs for p in q.passages) == 366


def test_squad_answers_lie_in_labelled_sentences(shared_data):
    for q in load_pruning_set(shared_data, "squad", "heldout", limit=50):
        gold = q.passages[0]
        kept = " ".join(gold.document.text[a:b] for (a, b), y in zip(gold.spans, gold.labels) if y)
        assert any(a in kept for a in q.answers)


def test_splits_do_not_overlap(shared_data):
    train = {q.id for q in load_pruning_set(shared_data, "hotpotqa", "train")}
    held = {q.id for q in load_pruning_set(shared_data, "hotpotqa", "heldout")}
    assert train and held and not train & held
    with pytest.raises(ValueError, match="unknown split 'dev' for squad"):
        load_pruning_set(shared_data, "squad", "dev")


def test_eval_pruning_script(shared_data, tmp_path):
    from eval.pruning import main

    out = tmp_path / "p.json"
    assert main(["--shared", str(shared_data), "--datasets", "hotpotqa", "--provence", "none",
                 "--json", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    res = json.loads(out.read_text())["results"][0]
    s = res["summary"]
    assert s["oracle"]["recall@ref"] == 1.0 and s["keep-all"]["compression"] == 0.0
    assert s["bm25"]["recall@50%"] > s["random"]["recall@50%"]
    for pts in res["curves"].values():
        assert all(0 <= p["recall"] <= 1 and 0 <= p["compression"] <= 1 for p in pts)
    assert np.isclose(s["oracle"]["f2@ref"], 1.0)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_lexical_sweep_script(shared_data, tmp_path):
    pytest.importorskip("torch")
    from eval.lexical_sweep import main

    out = tmp_path / "s.json"
    assert main(["--shared", str(shared_data), "--dataset", "scifact", "--split", "dev", "--limit", "4",
                 "--weights", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["lexical_weight"] for r in res["rows"]] == [0.0, 1.0]  # 0 (the reference) is always read
    assert all(0 <= r["f2@ref"] <= 1 and 0 <= r["recall@50%"] <= 1 for r in res["rows"])
    with pytest.raises(SystemExit):
        main(["--dataset", "scifact", "--split", "heldout"])  # never on held-out data


def test_pruning_misses_script(shared_data, tmp_path):
    pytest.importorskip("torch")
    from eval.pruning_misses import main

    out = tmp_path / "m.json"
    assert main(["--shared", str(shared_data), "--dataset", "hotpotqa", "--limit", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rows, s = res["rows"], res["summary"]
    assert len(rows) == s["evidence"] >= 4  # every HotpotQA question has at least two supporting facts
    assert s["missed_1hop"] == sum(r["score_1hop"] < s["threshold_1hop"] for r in rows)
    assert all(r["score_hops"] >= r["score_1hop"] - 1e-9 for r in rows)  # a second reading only adds
    with pytest.raises(SystemExit):
        main(["--compression", "1.5"])


def test_threshold_at_removes_the_asked_token_share():
    from eval.pruning_data import LabelledPassage, PruningQuestion
    from eval.pruning_misses import threshold_at
    from ragprune import Document

    text = "one two. three four. five six. seven eight."
    spans = ((0, 8), (9, 20), (21, 30), (31, 43))
    q = PruningQuestion("q", (LabelledPassage(Document(id="d", text=text), spans, (1, 0, 0, 0)),))
    scores = [[np.array([0.9, 0.1, 0.5, 0.2])]]
    assert threshold_at([q], scores, 0.5) == 0.5  # the two best sentences hold half the tokens
    assert threshold_at([q], scores, 0.75) == 0.9
