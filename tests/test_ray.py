"""Ray Data integration: the same results as the in-process library, on a real local Ray.

The parity tests run the shipped models on 4 SciFact queries x 4 candidates, all three stages in
one execution per pool size: 1 actor per stage (numpy batches, the dataset functions chained) and
2 actors (pandas batches, ``ds.map_batches`` with the three classes applied in each actor).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ragprune import Document, ScoredDocument
from ragprune.prune.baselines import LeadPruner
from ragprune.rerank.base import PointwiseReranker
from ragprune.types import as_documents

TOP_N, TOP_K, MAX_TOKENS = 3, 3, 160


def test_import_has_no_side_effects():
    code = ("import sys, ragprune, ragprune.integrations; assert 'ray' not in sys.modules\n"
            "try:\n    import ragprune.integrations.ray\nexcept ImportError:\n    pass\n"
            "assert 'ray' not in sys.modules, 'importing the integration imported ray'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what find_spec reports for an absent package
    monkeypatch.delitem(sys.modules, "ragprune.integrations.ray", raising=False)
    with pytest.raises(ImportError, match=re.escape("pip install 'ragprune[ray]'")):
        importlib.import_module("ragprune.integrations.ray")
    monkeypatch.delitem(sys.modules, "ragprune.integrations.ray", raising=False)


# ------------------------------------------------------------------------------------------
# In-process: batch formats and bad input (no models, no Ray cluster)


@pytest.fixture(scope="module")
def rray():
    pytest.importorskip("ray")
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    return importlib.import_module("ragprune.integrations.ray")


ROWS = [{"query": "capital of France", "documents": [
            {"id": "p", "title": "Paris", "text": "Paris is in France. It is the capital."},
            {"id": "c", "title": None, "text": "Cats purr. They sleep."}]},
        {"query": "cats", "documents": ["Cats purr. They sleep.", "Dogs bark. Loudly."]}]


def _numpy_batch(rows):
    docs = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        docs[i] = np.array(r["documents"], dtype=object)  # how Ray hands over a list column
    return {"query": np.array([r["query"] for r in rows], dtype=object), "documents": docs}


def test_batch_formats_give_the_same_columns(rray):
    import pandas as pd
    import pyarrow as pa

    pruner = rray.BatchPruner(LeadPruner, options={"k": 1})
    expected = LeadPruner(k=1).prune_many([r["query"] for r in ROWS], [r["documents"] for r in ROWS])
    outs = {"numpy": pruner(_numpy_batch(ROWS)), "pandas": pruner(pd.DataFrame(ROWS)),
            "pyarrow": pruner(pa.Table.from_pylist([ROWS[1]]))}
    assert isinstance(outs["numpy"], dict) and isinstance(outs["pandas"], pd.DataFrame)
    assert isinstance(outs["pyarrow"], pa.Table)
    for fmt in ("numpy", "pandas"):
        out = outs[fmt]
        assert [list(x) for x in out["pruned_texts"]] == [[p.text for p in ps] for ps in expected], fmt
        assert [[list(k) for k in x] for x in out["kept_sentences"]] == [[list(p.kept) for p in ps] for ps in expected]
        assert [list(x) for x in out["pruned_ids"]] == [["p", "c"], ["0", "1"]]
    assert outs["pyarrow"].column("pruned_texts").to_pylist() == [[p.text for p in expected[1]]]
    assert list(outs["pandas"].columns[:2]) == ["query", "documents"]  # input columns untouched


def test_numpy_passthrough_stays_arrow_lists(rray):
    out = rray.BatchPruner(LeadPruner)(_numpy_batch(ROWS))
    assert all(isinstance(d, list) for d in out["documents"])  # Ray pickles object arrays of arrays
    assert out["documents"][0][1] == {"id": "c", "title": None, "text": "Cats purr. They sleep."}


def test_scores_in_rows_become_first_stage_scores(rray):
    class Fused(PointwiseReranker):
        first_stage_weight = 1.0  # ranks by the first-stage score alone

        def _score(self, queries, docs):
            return [float(len(d.text)) for d in docs]

    rows = {"query": np.array(["q"], dtype=object),
            "documents": np.array([[{"id": "a", "text": "long text here", "score": 1.0},
                                    {"id": "b", "text": "short", "score": 2.0}]], dtype=object)}
    out = rray.BatchReranker(Fused)(rows)
    assert list(out["reranked_ids"][0]) == ["b", "a"]
    assert list(out["rerank_model_scores"][0]) == [5.0, 14.0]
    assert out["reranked_documents"][0][0] == {"id": "b", "text": "short", "title": "", "score": 1.0}
    with pytest.raises(ValueError, match="first_stage_weight=1 fuses"):  # no scores: the library's error
        rray.BatchReranker(Fused)(_numpy_batch(ROWS))
    builder = rray.BatchContextBuilder(Fused, None, max_tokens=50)
    with pytest.raises(ValueError, match=r"BatchContextBuilder \(row 0 .*carry no 'score'"):
        builder(_numpy_batch(ROWS))


def test_bad_input_is_named(rray):
    pruner = rray.BatchPruner(LeadPruner)
    with pytest.raises(ValueError, match=r"BatchPruner: the batch has no column 'documents' \(columns: 'query'\); "
                                         r"pass documents_column="):
        pruner({"query": np.array(["q"], dtype=object)})
    with pytest.raises(ValueError, match=r"BatchPruner \(row 1 of the batch, column 'query'\): query is empty"):
        pruner({"query": np.array(["q", "  "], dtype=object), "documents": np.array([["a"], ["b"]], dtype=object)})
    with pytest.raises(TypeError, match=r"row 0 .*got a single str; wrap it in a list"):
        pruner({"query": np.array(["q"], dtype=object), "documents": np.array(["just a string"], dtype=object)})
    with pytest.raises(TypeError, match="expected a batch as a dict of numpy arrays"):
        pruner([("q", ["a"])])
    with pytest.raises(TypeError, match="is a built LeadPruner; pass its model name or path"):
        rray.BatchPruner(LeadPruner(k=1))
    with pytest.raises(ValueError, match="unknown kind 'colbert'"):
        rray.BatchReranker(kind="colbert")
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        rray.BatchReranker(top_n=0)
    with pytest.raises(ValueError, match="one_pass=True ranks with the pruner itself"):
        rray.BatchContextBuilder(one_pass=True)
    with pytest.raises(TypeError, match="factory returned a str, which has no prune_many"):
        rray.BatchPruner(lambda: "not a pruner")


def test_empty_candidates_and_empty_batch(rray):
    builder = rray.BatchContextBuilder(None, LeadPruner, max_tokens=30)
    out = builder({"query": np.array(["q", "cats"], dtype=object),
                   "documents": np.array([[], ["Cats purr. They sleep."]], dtype=object)})
    assert list(out["context"]) == ["", "[0]\nCats purr. They sleep."]
    assert [list(x) for x in out["context_ids"]] == [[], ["0"]]
    empty = builder({"query": np.array([], dtype=object), "documents": np.array([], dtype=object)})
    assert len(empty["context"]) == 0


# ------------------------------------------------------------------------------------------
# A real local Ray (slow: starting Ray and its actors takes seconds each)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    yield ray
    ctx.enable_progress_bars = bars
    ray.shutdown()


@pytest.mark.slow
def test_dataset_functions_check_their_arguments(local_ray, rray):
    ds = local_ray.data.from_items(ROWS[:1])
    with pytest.raises(ValueError, match=r"rerank_dataset: the dataset has no column 'q' .*pass query_column="):
        rray.rerank_dataset(ds, query_column="q")
    with pytest.raises(TypeError, match="ds must be a ray.data.Dataset"):
        rray.prune_dataset(ROWS)
    with pytest.raises(ValueError, match="unknown batch_format 'arrow'"):
        rray.prune_dataset(ds, LeadPruner, batch_format="arrow")
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        rray.build_contexts(ds, concurrency=0)


@pytest.mark.slow
def test_empty_query_fails_the_dataset_with_a_clear_message(local_ray, rray):
    ds = local_ray.data.from_items([ROWS[1], {**ROWS[1], "query": " "}])
    with pytest.raises(Exception, match=r"BatchPruner \(row 1 of the batch, column 'query'\): query is empty"):
        rray.prune_dataset(ds, LeadPruner, batch_size=2, num_cpus=0.5).materialize()


@pytest.fixture(scope="module")
def rows(scifact_sample):
    """4 SciFact claims x 4 candidates (word overlap; abstracts cut to ~600 characters). Rows 0-1 carry
    first-stage scores, row 2 dicts without, row 3 text alone (ids become positions)."""
    docs, queries = scifact_sample
    out = []
    for qid, q in enumerate(queries[:4]):
        words = set(q.lower().split())
        scored = sorted(((len(words & set((d["title"] + " " + d["text"]).lower().split())), i)
                         for i, d in enumerate(docs)), reverse=True)[:4]
        cands = [{"id": docs[i]["_id"], "title": docs[i]["title"], "text": docs[i]["text"][:600],
                  **({"score": float(s)} if qid < 2 else {})} for s, i in scored]
        if qid == 3:
            cands = [{"text": c["text"]} for c in cands]
        out.append({"qid": qid, "query": q, "documents": cands})
    return out


def _library_candidates(row):
    """What a library user passes for a row: ScoredDocuments where scores exist, else the raw items."""
    docs = row["documents"]
    if isinstance(docs[0], dict) and "score" in docs[0]:
        return [ScoredDocument(Document(d["id"], d["text"], d["title"]), d["score"]) for d in docs]
    return docs


class _Fixed:
    """A retriever returning each query's row candidates (the reference Pipeline's first stage)."""

    def __init__(self, rows):
        self.by_query = {r["query"]: r for r in rows}

    def retrieve_many(self, queries, k=10):
        out = []
        for q in queries:
            cands = _library_candidates(self.by_query[q])
            if not isinstance(cands[0], ScoredDocument):  # no scores: ranked in the order given
                cands = [ScoredDocument(d, -float(i)) for i, d in enumerate(as_documents(cands))]
            out.append(cands[:k])
        return out


@pytest.fixture(scope="module")
def reference(rows):
    """The in-process library on the same rows: reranked, pruned and the Pipeline's contexts."""
    pytest.importorskip("transformers")
    from ragprune import CrossEncoderReranker, Pipeline, ProvencePruner

    reranker, pruner = CrossEncoderReranker(), ProvencePruner()
    queries, cands = [r["query"] for r in rows], [_library_candidates(r) for r in rows]
    pipe = Pipeline(_Fixed(rows), reranker, pruner, max_tokens=MAX_TOKENS, candidates=4, top_k=TOP_K)
    return {"rerank": reranker.rerank_many(queries, cands, k=TOP_N), "prune": pruner.prune_many(queries, cands),
            "context": pipe.run_many(queries)}


def _chained_with_functions(rray, ds):
    """1 actor per stage, numpy batches, through the dataset functions."""
    opts = {"concurrency": 1, "batch_size": 2, "num_cpus": 0.3, "batch_format": "numpy"}
    out = rray.rerank_dataset(ds, top_n=TOP_N, **opts)
    out = rray.prune_dataset(out, **opts)
    return rray.build_contexts(out, max_tokens=MAX_TOKENS, top_k=TOP_K, **opts)


class _AllStages:
    """The three classes applied one after the other in one actor: one torch import per actor for
    the three stages, which keeps this file's run short on 2 cores (the functions above start one
    pool per stage)."""

    def __init__(self):
        from ragprune.integrations.ray import BatchContextBuilder, BatchPruner, BatchReranker

        self.stages = [BatchReranker(top_n=TOP_N), BatchPruner(),
                       BatchContextBuilder(max_tokens=MAX_TOKENS, top_k=TOP_K)]

    def __call__(self, batch):
        for stage in self.stages:
            batch = stage(batch)
        batch["actor_pid"] = os.getpid()
        return batch


def _chained_with_map_batches(ray, ds):
    """2 actors, pandas batches, through ds.map_batches."""
    return ds.map_batches(_AllStages, compute=ray.data.ActorPoolStrategy(size=2), batch_size=2, num_cpus=0.5,
                          batch_format="pandas")


@pytest.mark.slow
@pytest.mark.parametrize("actors", [1, 2])
def test_ray_results_equal_in_process(local_ray, rray, rows, reference, actors):
    module, ctx = sys.modules[__name__], local_ray.data.DataContext.get_current()
    wait = ctx.wait_for_min_actors_s
    if actors == 2:  # no batch before both actors are up (else the first may take all); a dataset keeps
        ctx.wait_for_min_actors_s = 120  # the context it was created with
    local_ray.cloudpickle.register_pickle_by_value(module)  # _AllStages: the workers cannot import tests/
    try:
        ds = local_ray.data.from_items(rows, override_num_blocks=2)  # 2 blocks of 2 rows: one per actor
        out = _chained_with_functions(rray, ds) if actors == 1 else _chained_with_map_batches(local_ray, ds)
        got = sorted(out.take_all(), key=lambda r: r["qid"])  # several actors may reorder rows
    finally:
        local_ray.cloudpickle.unregister_pickle_by_value(module)
        ctx.wait_for_min_actors_s = wait
    assert [r["qid"] for r in got] == [0, 1, 2, 3]
    if actors == 1:
        assert "pickled" not in str(out.schema())  # the documents column stays an Arrow list of structs
    else:
        assert len({r["actor_pid"] for r in got}) == 2  # both actors did part of the work
    for row, hits, pruned, ctx in zip(got, reference["rerank"], reference["prune"], reference["context"]):
        assert list(row["reranked_ids"]) == [h.id for h in hits]
        assert list(row["rerank_scores"]) == pytest.approx([h.score for h in hits], abs=1e-5)
        assert list(row["pruned_ids"]) == [p.id for p in pruned]
        assert list(row["pruned_texts"]) == [p.text for p in pruned]
        assert [list(k) for k in row["kept_sentences"]] == [list(p.kept) for p in pruned]
        assert list(row["compressions"]) == pytest.approx([p.compression for p in pruned], abs=1e-9)
        assert list(row["prune_scores"]) == pytest.approx([p.score for p in pruned], abs=1e-5)
        assert row["context"] == ctx.text and ctx.text
        assert list(row["context_ids"]) == [d.id for d in ctx.documents]
        assert row["context_tokens"] == ctx.tokens <= MAX_TOKENS
