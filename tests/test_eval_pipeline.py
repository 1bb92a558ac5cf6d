"""eval/pipeline.py: evidence accounting, replay of recorded stages, and a small real run."""

import json

import pytest

from eval import pipeline as ev
from ragprune import BM25Retriever, Document
from ragprune.pipeline import Pipeline
from ragprune.prune.baselines import LeadPruner


def _ctx(docs):
    return Pipeline(BM25Retriever.from_documents(docs), max_tokens=1000).run("tea")


def test_evidence_stats_counts_sentences_and_complete_rationales():
    doc = Document(id="d1", text="Tea is green.  Tea grows in India. Coffee is black.")
    ctx = _ctx([doc])
    golds = [("d1", [["Tea is green.", "Tea grows in India."], ["Coffee is black."]])]
    assert ev.evidence_stats(ctx, golds, {"d1"}) == {"evidence_recall": 1.0, "evidence_recall_retrieved": 1.0,
                                                     "evidence_kept": 1.0}
    # a gold document that never reached the pruner counts in recall, not in the retrieved stats
    missing = [("d1", [["Tea is green."]]), ("d9", [["Absent sentence."]])]
    assert ev.evidence_stats(ctx, missing, {"d1"}) == {"evidence_recall": 0.5, "evidence_recall_retrieved": 1.0,
                                                       "evidence_kept": 1.0}
    assert ev.evidence_stats(ctx, [("d9", [["Absent sentence."]])], set()) == {"evidence_recall": 0.0}


def test_evidence_kept_needs_every_sentence_of_one_rationale():
    docs = [Document(id="d1", text="Tea is green. Lions hunt at night. Tea grows in India.")]
    pipe = Pipeline(BM25Retriever.from_documents(docs), pruner=LeadPruner(k=1), max_tokens=1000, backfill=False)
    ctx = pipe.run("tea")
    assert [d.text for d in ctx.documents] == ["Tea is green."]
    out = ev.evidence_stats(ctx, [("d1", [["Tea is green.", "Tea grows in India."]])], {"d1"})
    assert out == {"evidence_recall": 0.5, "evidence_recall_retrieved": 0.5, "evidence_kept": 0.0}


def test_recorder_and_replay_return_the_same_lists():
    docs = [Document(id=str(i), text=t) for i, t in enumerate(["Tea is green.", "Coffee is black. Tea too."])]
    bm25 = BM25Retriever.from_documents(docs)
    pruner = ev.Recorder(LeadPruner(k=1))
    live = Pipeline(bm25, pruner=pruner, max_tokens=100).run("tea")
    replay = Pipeline(bm25, pruner=ev.Replay(pruner.lists), max_tokens=100).run("tea")
    assert live.text == replay.text and repr(pruner) == repr(pruner.stage)


def test_load_rationales_maps_indices_to_sentence_texts(tmp_path):
    (tmp_path / "scifact_rationales").mkdir()
    rows = [{"doc_id": 7, "abstract": ["S0.", "S1.", "S2."]}]
    (tmp_path / "scifact_rationales" / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    meta = {"q1": {"7": [{"sentences": [0, 2], "label": "SUPPORT"}, {"sentences": [9]}], "8": [{"sentences": [0]}]},
            "q2": {}}
    assert ev.load_rationales(tmp_path, ["q1", "q2"], meta) == {"q1": [("7", [["S0.", "S2."]])]}
    with pytest.raises(FileNotFoundError, match="scifact_rationales"):
        ev.load_rationales(tmp_path / "nope", ["q1"], meta)


def test_small_real_run_with_the_shipped_models(shared_data, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "p.json"
    assert ev.main(["--shared", str(shared_data), "--max-queries", "2", "--candidates", "5", "--top-k", "3",
                    "--budget", "400", "100", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_queries"] == 2 and result["budgets"] == [400, 100]
    assert [(c["budget"], c["config"].split(",")[0]) for c in result["contexts"]] == [
        (400, "rerank + prune + budget (default"), (400, "rerank + prune"), (400, "rerank + budget"),
        (100, "rerank + prune + budget (default"), (100, "rerank + prune"), (100, "rerank + budget")]
    for c in result["contexts"]:
        assert c["tokens_final"] <= c["budget"]
        assert 0.0 <= c["evidence_recall"] <= 1.0
    assert "nDCG@10 BM25" in capsys.readouterr().out
    assert ev.main(["--shared", str(tmp_path / "missing")]) == 2
