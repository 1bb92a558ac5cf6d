"""End to end on SciFact: retrieve -> rerank -> prune -> one token budget.

    python -m eval.pipeline --shared ../shared/data --budget 1000 500 --json eval/results/pipeline_scifact.json
    python -m eval.pipeline --shared ../shared/data --limit 20 --quantize int8

For each BEIR SciFact test claim (the 300 claims of the original SciFact dev split, held out
from both shipped models' training) the script runs the real :class:`ragprune.Pipeline`:
BM25 top ``--candidates`` -> the shipped cross-encoder -> the top ``--top-k`` documents -> the
shipped Provence pruner -> ``--budget`` tokens. It reports

- nDCG@10 / MRR@10 of the reranked list (BEIR qrels, pytrec_eval) and of BM25 alone;
- evidence recall of the final context: the share of the SciFact rationale sentences (from
  ``scifact_rationales/corpus.jsonl``) whose text appears in the context, over all gold
  documents, and over the gold documents that reached the pruner ("retrieved");
- evidence kept: for the claims whose gold document reached the pruner, the share whose
  context holds at least one complete rationale (every sentence of one evidence set);
- tokens, compression (share of the top documents' body tokens removed) and seconds per stage.

The same reranked and pruned lists are also budgeted with the pruner's threshold only
(``backfill=False``: no sentence below the threshold, even when the budget has room) and
without pruning (whole documents in rank order until the budget is full), the baseline a
pruner has to beat.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.common import (
    PUBLISHED_BM25,
    add_limit_arg,
    add_output_args,
    add_shared_arg,
    rounded,
    run_cli,
)
from ragprune.datasets import load_beir
from ragprune.metrics import evaluate_run, run_from_hits
from ragprune.prune.provence import PASSAGE_WEIGHTINGS

_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


class Recorder:
    """Wraps a reranker or pruner and remembers its full output per query, so the other
    configurations replay the same lists instead of running the models again."""

    def __init__(self, stage: Any) -> None:
        self.stage, self.lists = stage, {}

    def rerank_many(self, queries: Sequence[str], docs: Sequence[Sequence[Any]], k: int | None = None) -> list:
        out = self.stage.rerank_many(queries, docs)  # the whole list: nDCG@10 is measured on it
        self.lists.update(zip(queries, out))
        return [lst[:k] for lst in out]

    def prune_many(self, queries: Sequence[str], docs: Sequence[Sequence[Any]]) -> list:
        out = self.stage.prune_many(queries, docs)
        self.lists.update(zip(queries, out))
        return out

    def __repr__(self) -> str:
        return repr(self.stage)


class Replay:
    """A reranker and pruner that returns what a :class:`Recorder` saw (no model call)."""

    def __init__(self, lists: dict[str, list]) -> None:
        self.lists = lists

    def rerank_many(self, queries: Sequence[str], docs: Sequence[Sequence[Any]], k: int | None = None) -> list:
        return [self.lists[q][:k] for q in queries]

    def prune_many(self, queries: Sequence[str], docs: Sequence[Sequence[Any]]) -> list:
        return [self.lists[q] for q in queries]


def load_rationales(shared: Path, query_ids: Sequence[str], queries_meta: dict[str, dict]
                    ) -> dict[str, list[tuple[str, list[list[str]]]]]:
    """``{query id: [(doc id, [evidence set as sentence texts, ...]), ...]}`` for claims with evidence.

    Evidence comes from the BEIR query metadata (SciFact's own annotation); sentence texts from
    the rationale corpus, where the sentence indices point.
    """
    path = shared / "scifact_rationales" / "corpus.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"eval.pipeline: {path} is missing; the evidence sentences come from it.")
    abstracts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                abstracts[str(row["doc_id"])] = row["abstract"]
    out: dict[str, list[tuple[str, list[list[str]]]]] = {}
    for qid in query_ids:
        evidence = queries_meta.get(qid) or {}
        golds = []
        for doc_id, sets in evidence.items():
            if doc_id not in abstracts or not isinstance(sets, list):
                continue
            sents = abstracts[doc_id]
            groups = [[sents[i] for i in s.get("sentences", []) if 0 <= i < len(sents)] for s in sets]
            groups = [g for g in groups if g]
            if groups:
                golds.append((doc_id, groups))
        if golds:
            out[qid] = golds
    return out


def evidence_stats(ctx: Any, golds: list[tuple[str, list[list[str]]]], handed: set[str]) -> dict[str, float]:
    """Evidence recall of one context (see the module docstring)."""
    kept = {d.id: _norm(d.text) for d in ctx.documents}
    found = total = found_r = total_r = 0
    complete = False
    for doc_id, groups in golds:
        sents = {_norm(s) for g in groups for s in g}
        hit = {s for s in sents if doc_id in kept and s in kept[doc_id]}
        found, total = found + len(hit), total + len(sents)
        if doc_id in handed:
            found_r, total_r = found_r + len(hit), total_r + len(sents)
            complete = complete or any(all(_norm(s) in hit for s in g) for g in groups)
    out = {"evidence_recall": found / total}
    if total_r:
        out["evidence_recall_retrieved"] = found_r / total_r
        out["evidence_kept"] = float(complete)
    return out


def _mean(rows: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize(name: str, contexts: list[Any], evidence: dict[str, list], qids: list[str],
              handed: dict[str, set[str]]) -> dict[str, Any]:
    rows = [evidence_stats(c, evidence[q], handed[q]) for q, c in zip(qids, contexts) if q in evidence]
    out: dict[str, Any] = {"config": name}
    for key in ("evidence_recall", "evidence_recall_retrieved", "evidence_kept"):
        out[key] = _mean(rows, key)
    out["claims_with_evidence"] = len(rows)
    out["claims_evidence_retrieved"] = sum("evidence_kept" in r for r in rows)
    stats = [dict(c.stats) for c in contexts]
    for key in ("tokens_candidates", "tokens_final", "compression", "seconds_retrieve", "seconds_rerank",
                "seconds_prune", "seconds_budget"):
        out[key] = _mean(stats, key)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.pipeline", description=__doc__.split("\n\n")[0])
    add_shared_arg(p)
    p.add_argument("--budget", type=int, nargs="+", default=[1000],
                   help="max tokens of the final context; the first budget runs the models, the others "
                        "replay their outputs")
    p.add_argument("--candidates", type=int, default=100, help="BM25 candidates for the reranker")
    p.add_argument("--top-k", type=int, default=10, help="documents handed to the pruner")
    p.add_argument("--threshold", type=float, default=0.1, help="Provence keep threshold")
    p.add_argument("--reranker", default="ragprune-reranker",
                   help="cross-encoder checkpoint (name or folder), e.g. ragprune-reranker-l2 for the 2-layer student")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 reranker and pruner")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="inference backend of both models")
    p.add_argument("--one-pass", action="store_true",
                   help="also run the one-pass preset Pipeline(bm25, pruner, pruner) on the same queries: the "
                        "pruner ranks all candidates and prunes the best top-k (seconds and quality side by side)")
    p.add_argument("--passage-weighting", choices=PASSAGE_WEIGHTINGS, default="max",
                   help="ProvencePruner passage_weighting")
    add_limit_arg(p, "--max-queries", help="first N of the 300 test claims")
    add_output_args(p)
    args = p.parse_args(argv)
    for name in ("candidates", "top_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.budget) < 1:
        p.error("--budget must be >= 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragprune import (
        BM25Retriever,
        CrossEncoderReranker,
        Pipeline,
        ProvencePruner,
        ScoredDocument,
    )

    ds_path = args.shared / "beir_scifact"
    ds = load_beir(ds_path, "test")
    qids = [q for q in ds.queries if q in ds.qrels][: args.limit]
    meta = {}
    with open(ds_path / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                meta[str(row["_id"])] = row.get("metadata") or {}
    evidence = load_rationales(args.shared, qids, meta)
    texts = [ds.queries[q] for q in qids]

    bm25 = BM25Retriever.from_documents(ds.corpus, show_progress=False, **PUBLISHED_BM25)
    recorder = Recorder(CrossEncoderReranker(args.reranker, quantize=args.quantize, first_stage_weight="recommended",
                                             backend=args.backend))
    provence = ProvencePruner(threshold=args.threshold, quantize=args.quantize, passage_weighting=args.passage_weighting,
                              backend=args.backend)
    pruner = Recorder(provence)
    pipe = Pipeline(bm25, recorder, pruner, max_tokens=args.budget[0], candidates=args.candidates, top_k=args.top_k)
    t0 = time.perf_counter()
    contexts = [pipe.run(q) for q in tqdm(texts, desc="pipeline", unit="query")]
    seconds = time.perf_counter() - t0
    reranked = [recorder.lists[q] for q in texts]
    handed = {qid: {h.id for h in recorder.lists[q][: args.top_k]} for qid, q in zip(qids, texts)}
    rows = [summarize("rerank + prune + budget (default, backfill)", contexts, evidence, qids, handed)]
    for budget in args.budget:
        sizes = {"max_tokens": budget, "candidates": args.candidates, "top_k": args.top_k}
        rerank, prune = Replay(recorder.lists), Replay(pruner.lists)
        configs = {"rerank + prune, threshold only (backfill=False)": Pipeline(bm25, rerank, prune, backfill=False, **sizes),
                   "rerank + budget, no pruning": Pipeline(bm25, rerank, None, **sizes)}
        if budget != args.budget[0]:
            configs = {"rerank + prune + budget (default, backfill)": Pipeline(bm25, rerank, prune, **sizes), **configs}
        rows += [summarize(name, pipe_.run_many(texts), evidence, qids, handed) for name, pipe_ in configs.items()]
        for r in rows[-len(configs):]:
            r["budget"] = budget
    rows[0]["budget"] = args.budget[0]
    rows[0]["seconds_per_query"] = round(seconds / max(1, len(qids)), 3)
    qrels = {q: ds.qrels[q] for q in qids}
    first = bm25.retrieve_many(texts, k=args.candidates)
    ranking = {"bm25": rounded(evaluate_run(qrels, run_from_hits(qids, first))),
               "reranked": rounded(evaluate_run(qrels, run_from_hits(qids, reranked)))}
    if args.one_pass:  # the same queries through one model: it ranks every candidate and prunes the best
        one = Recorder(provence)
        one_pipe = Pipeline(bm25, one, one, max_tokens=args.budget[0], candidates=args.candidates, top_k=args.top_k)
        t0 = time.perf_counter()
        one_ctx = [one_pipe.run(q) for q in tqdm(texts, desc="one pass", unit="query")]
        one_seconds = time.perf_counter() - t0
        ranked = [sorted(one.lists[q], key=lambda d: -d.score) for q in texts]
        ranking["one_pass"] = rounded(evaluate_run(qrels, run_from_hits(
            qids, [[ScoredDocument(d.document, d.score) for d in r] for r in ranked])))
        one_handed = {qid: {d.id for d in r[: args.top_k]} for qid, r in zip(qids, ranked)}
        row = summarize("one pass: ProvencePruner ranks and prunes (Pipeline(bm25, p, p))", one_ctx, evidence, qids,
                        one_handed)
        rows.append({**row, "budget": args.budget[0], "seconds_per_query": round(one_seconds / max(1, len(qids)), 3)})
    return {
        "dataset": "beir_scifact", "split": "test", "num_queries": len(qids),
        "pipeline": repr(pipe),
        "budgets": args.budget, "candidates": args.candidates, "top_k": args.top_k, "threshold": args.threshold,
        "reranker": args.reranker, "quantize": args.quantize,
        "backend": args.backend, "ranking": ranking,
        "contexts": sorted(rows, key=lambda r: -r["budget"]),
        "seconds_per_query": round(seconds / max(1, len(qids)), 3),
    }


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def print_table(result: dict[str, Any]) -> None:
    r = result["ranking"]
    print(f"SciFact test, {result['num_queries']} claims: nDCG@10 BM25 {r['bm25']['ndcg@10']:.4f} -> reranked "
          f"{r['reranked']['ndcg@10']:.4f}" + (f", one pass {r['one_pass']['ndcg@10']:.4f}" if "one_pass" in r else "")
          + f"; {result['seconds_per_query']} s per query end to end")
    cols = ["budget", "evidence_recall", "evidence_recall_retrieved", "evidence_kept", "tokens_final", "compression",
            "seconds_rerank", "seconds_prune", "seconds_per_query"]
    print("| context | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for c in result["contexts"]:
        print(f"| {c['config']} | " + " | ".join(_fmt(c.get(k)) for k in cols) + " |")
    c = result["contexts"][0]
    print(f"claims with evidence: {c['claims_with_evidence']}, whose gold document reached the pruner: "
          f"{c['claims_evidence_retrieved']}")


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.pipeline", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
