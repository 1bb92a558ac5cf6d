"""Evaluate retrieval and reranking on any dataset in BEIR layout.

    python -m eval.beir --data ../shared/data/beir_scifact --split test --retriever bm25 \
        --top-k 100 --json eval/results/scifact_bm25.json
    python -m eval.beir --data ../shared/data/beir_scifact --retriever bm25 --reranker cross-encoder
    python -m eval.beir --data ../shared/data/beir_scifact --retriever bm25 --top-k 20 --limit 50 \
        --reranker prp --llm qwen2.5-1.5b --method sliding --llm-cache runs/prp/replies.jsonl

Works on any folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv. Metrics come from
pytrec_eval: nDCG@10, Recall@100, MRR@10 (averaged over every judged query). As in BEIR, a hit
whose id equals the query id is ignored (``--keep-identical-ids`` turns that off).
Dense indexes are cached under ``--cache-dir`` (keyed by dataset folder and model), so a second
run does not re-embed the corpus. ``--llm-cache`` keeps every PRP reply (CachedLLM): rerunning an
interrupted PRP run replays the replies it has and asks only the rest (``--prp-cache``, the older
name, still works). Shared options (``--limit``, the LLM options, ``--json``/``--force``): eval/common.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.common import (
    add_limit_arg,
    add_llm_args,
    add_output_args,
    llm_from_args,
    rounded,
    run_cli,
)
from ragprune.datasets import BeirDataset, load_beir
from ragprune.metrics import evaluate_run, run_from_hits
from ragprune.rerank.pairwise import PROMPTS
from ragprune.retrieve.base import Retriever

log = logging.getLogger("eval.beir")

RETRIEVERS = ("bm25", "dense", "hybrid")


def _cache_key(ds_path: Path, model: str) -> str:
    h = hashlib.sha256(f"{ds_path.resolve()}|{model}".encode()).hexdigest()[:12]
    return f"{ds_path.name}-dense-{Path(model).name}-{h}"


def build_dense(ds: BeirDataset, ds_path: Path, model: str, cache_dir: Path | None) -> Retriever:
    from ragprune.retrieve.dense import DenseRetriever

    if cache_dir is not None:
        path = cache_dir / _cache_key(ds_path, model)
        if (path / "manifest.json").is_file():
            try:
                r = DenseRetriever.load(path, model=model)
                if [d.id for d in r.documents] == [d.id for d in ds.corpus]:
                    log.info("dense index loaded from cache %s", path)
                    return r
            except Exception as e:  # stale cache: rebuild
                log.warning("ignoring dense cache %s (%s)", path, e)
    r = DenseRetriever.from_documents(ds.corpus, model, show_progress=True)
    if cache_dir is not None:
        r.save(path)
    return r


def build_retriever(args: argparse.Namespace, ds: BeirDataset, ds_path: Path) -> tuple[Retriever, str]:
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.retrieve.hybrid import HybridRetriever

    if args.retriever == "bm25":
        r = BM25Retriever.from_documents(ds.corpus, method=args.bm25_method, k1=args.k1, b=args.b, show_progress=True)
        return r, f"bm25({args.bm25_method},k1={args.k1},b={args.b})"
    dense = build_dense(ds, ds_path, args.model, args.cache_dir)
    if args.retriever == "dense":
        return dense, f"dense({Path(args.model).name})"
    bm25 = BM25Retriever.from_documents(ds.corpus, method=args.bm25_method, k1=args.k1, b=args.b)
    hybrid = HybridRetriever([bm25, dense], fusion=args.fusion, weights=[1 - args.dense_weight, args.dense_weight])
    return hybrid, f"hybrid(bm25+dense({Path(args.model).name}),{args.fusion},w_dense={args.dense_weight})"


def read_run(path: Path, ds: BeirDataset, qids: list[str], k: int) -> list[list[Any]]:
    """First-stage candidates from a TREC run file (``qid Q0 docid rank score tag``)."""
    from ragprune.types import ScoredDocument

    by_id = {d.id: d for d in ds.corpus}
    runs: dict[str, list[tuple[float, int, str]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise ValueError(f"{path}:{n} is not a TREC run line (qid Q0 docid rank score tag).")
        runs.setdefault(parts[0], []).append((-float(parts[4]), int(parts[3]), parts[2]))
    out = []
    for q in qids:
        ranked = sorted(runs.get(q, []))[:k]
        out.append([ScoredDocument(by_id[d], -s) for s, _, d in ranked if d in by_id])
    return out


def build_reranker(args: argparse.Namespace) -> Any:
    from ragprune.rerank.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(args.reranker_model, max_length=args.rerank_max_length, quantize=args.quantize,
                                first_stage_weight=0.0)


def _fuse(first: list[list[Any]], raw: list[list[Any]], weight: float) -> list[list[Any]]:
    """Rerank each list by reranker scores interpolated with its first-stage scores."""
    from ragprune.rerank.base import fuse_scores
    from ragprune.types import ScoredDocument

    if weight <= 0:
        return raw
    out = []
    for f, r in zip(first, raw):
        model = {h.document.id: h.score for h in r}
        s = fuse_scores([model[h.document.id] for h in f], [h.score for h in f], weight)
        order = sorted(range(len(f)), key=lambda i: (-s[i], i))
        out.append([ScoredDocument(f[i].document, s[i]) for i in order])
    return out


def _cross_encoder_stage(args: argparse.Namespace, qids: list[str], texts: list[str], hits: list[list[Any]],
                         qrels: dict[str, dict[str, int]]) -> tuple[list[list[Any]], str, dict[str, Any]]:
    """Cross-encoder scores once, then the recommended (or given) and extra fusion weights."""
    from ragprune.rerank.cross_encoder import _recommended

    reranker = build_reranker(args)  # raw cross-encoder scores; fusion is applied below
    weight = args.first_stage_weight
    if weight is None:
        weight = float(_recommended(reranker.path).get("first_stage_weight", 0.0))
    name = f"{reranker!r}" + (f" fused with first stage (weight {weight})" if weight else "")
    raw = [reranker.rerank(q, h) for q, h in zip(tqdm(texts, desc="rerank", unit="query"), hits)]
    fused = {}
    for w in sorted({0.0, *args.fusion_weights} - {weight}):  # same scores, other interpolation weights
        m = evaluate_run(qrels, run_from_hits(qids, _fuse(hits, raw, w), ignore_identical_ids=not args.keep_identical_ids))
        fused[str(w)] = rounded(m)
    return _fuse(hits, raw, weight), name, ({"fused_with_first_stage": fused} if fused else {})


def _prp_stage(args: argparse.Namespace, qids: list[str], texts: list[str], hits: list[list[Any]],
               qrels: dict[str, dict[str, int]]) -> tuple[list[list[Any]], str, dict[str, Any]]:
    """Pairwise LLM reranking, one query at a time.

    With ``--llm-cache`` every LLM reply is kept in a :class:`~ragprune.rerank.llm.CachedLLM`
    file, so an interrupted run resumes by replaying the replies it already has (the reranking
    is deterministic given the replies); a line cut by a kill is skipped.
    """
    from ragprune.rerank.pairwise import PairwiseReranker

    llm = llm_from_args(args)
    reranker = PairwiseReranker(llm, method=args.method, k=args.prp_k, both_orders=not args.one_order,
                                decision=args.decision, min_margin=args.min_margin,
                                max_passage_words=args.max_passage_words, prompt=PROMPTS[args.prompt])
    out, rows = [], []
    for q, h in zip(tqdm(texts, desc="prp", unit="query"), hits):
        res = reranker.rerank(q, h)
        out.append(list(res))
        rows.append(dataclasses.asdict(res.stats))
    n = max(1, len(rows))
    comparisons = sum(r["comparisons"] for r in rows)
    summary = {
        "llm_calls_per_query": round(sum(r["llm_calls"] for r in rows) / n, 1),
        "seconds_per_query": round(sum(r["seconds"] for r in rows) / n, 2),
        "prompt_tokens_per_query": round(sum(r["prompt_tokens"] for r in rows) / n, 1),
        "order_disagreement_rate": round(sum(r["disagreements"] for r in rows) / max(1, comparisons), 4),
        "failure_rate": round(sum(r["failures"] for r in rows) / max(1, sum(r["llm_calls"] for r in rows)), 4),
        "gated_rate": round(sum(r.get("gated", 0) for r in rows) / max(1, comparisons), 4),
    }
    if hasattr(llm, "seconds_saved"):  # --llm-cache: the seconds above exclude replayed replies
        summary.update(llm_cache_hits=llm.hits, llm_cache_misses=llm.misses,
                       seconds_per_query_uncached=round((sum(r["seconds"] for r in rows) + llm.seconds_saved) / n, 2))
    return out, repr(reranker), {"prp": summary}


def add_retriever_args(g: Any) -> None:
    """Options of :func:`build_retriever` (also used by eval.bright)."""
    g.add_argument("--model", default="minilm", help="dense model: local folder or 'minilm'/'mpnet'")
    g.add_argument("--fusion", choices=("rrf", "convex"), default="rrf", help="hybrid fusion (default rrf)")
    g.add_argument("--dense-weight", type=float, default=0.5, help="hybrid weight of the dense list")
    g.add_argument("--bm25-method", default="lucene")
    g.add_argument("--k1", type=float, default=0.9)
    g.add_argument("--b", type=float, default=0.4)
    g.add_argument("--cache-dir", type=Path, default=Path(".cache/eval"), help="dense index cache ('' to disable)")


def add_cross_encoder_args(g: Any) -> None:
    """Options of :func:`build_reranker` (also used by eval.bright)."""
    g.add_argument("--reranker-model", default="ragprune-reranker", help="cross-encoder checkpoint folder")
    g.add_argument("--rerank-max-length", type=int, default=256, help="tokens per (query, passage) pair")
    g.add_argument("--quantize", choices=["int8"], default=None, help="int8 dynamic quantization (CPU)")
    g.add_argument("--first-stage-weight", type=float, default=None,
                   help="interpolate reranker and first-stage scores (default: the checkpoint's recommendation)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.beir", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--retriever", choices=RETRIEVERS, default="bm25")
    p.add_argument("--run", type=Path, default=None,
                   help="use this TREC run file as the first stage instead of --retriever (standard for reranking)")
    p.add_argument("--reranker", default=None, choices=[None, "cross-encoder", "prp"],
                   help="rerank the top-k: 'cross-encoder' (default model: the shipped ragprune reranker) or "
                        "'prp' (pairwise LLM prompting, see --llm)")
    add_cross_encoder_args(p)
    p.add_argument("--fusion-weights", type=float, nargs="*", default=[],
                   help="also report these interpolation weights (the pure reranker, 0, is always reported)")
    g = p.add_argument_group("prp (pairwise LLM reranking)")
    add_llm_args(g, default="qwen2.5-1.5b")
    g.add_argument("--prp-cache", type=Path, default=None, help=argparse.SUPPRESS)  # older name of --llm-cache
    g.add_argument("--method", default="sliding", choices=("sliding", "heapsort", "allpair"))
    g.add_argument("--prompt", default="paper", choices=sorted(PROMPTS),
                   help="PRP prompt variant (ragprune.rerank.pairwise.PROMPTS)")
    g.add_argument("--prp-k", type=int, default=10, help="top positions sorted by sliding/heapsort")
    g.add_argument("--one-order", action="store_true", help="ask each comparison in one order only")
    g.add_argument("--decision", default="labels", choices=("labels", "margin"),
                   help="both-order rule: the paper's label agreement, or the debiased logprob margin")
    g.add_argument("--min-margin", type=float, default=0.0,
                   help="confidence gate: a comparison with |debiased margin| <= this (nats) is a tie "
                        "(keeps the first-stage order); tune it with eval.prp_pairs --split train")
    g.add_argument("--max-passage-words", type=int, default=128, help="passage length in the prompt")
    p.add_argument("--top-k", type=int, default=100, help="candidates retrieved per query (default 100)")
    add_limit_arg(p, "--max-queries", help="evaluate only the first N judged queries")
    add_retriever_args(p)
    p.add_argument("--keep-identical-ids", action="store_true", help="do not drop hits whose id equals the query id")
    add_output_args(p)
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error("--top-k must be >= 1")
    if not args.min_margin >= 0:
        p.error("--min-margin must be >= 0")
    if str(args.cache_dir) in ("", "."):
        args.cache_dir = None
    if args.prp_cache is not None:  # resuming a PRP run = replaying its LLM replies
        if args.llm_cache is None:
            args.llm_cache = args.prp_cache
        else:
            log.warning("--prp-cache is the older name of --llm-cache; using --llm-cache %s only", args.llm_cache)
    del args.prp_cache
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_beir(args.data, args.split)
    qids = list(ds.queries)[: args.limit] if args.limit else list(ds.queries)
    qrels = {q: ds.qrels[q] for q in qids}
    t0 = time.perf_counter()
    texts = [ds.queries[q] for q in qids]
    if args.run is not None:
        hits, pipeline = read_run(args.run, ds, qids, args.top_k), f"run({args.run.name})"
        t_index = t_search = 0.0
    else:
        retriever, pipeline = build_retriever(args, ds, args.data)
        t_index = time.perf_counter() - t0
        t1 = time.perf_counter()
        hits = retriever.retrieve_many(texts, k=args.top_k)
        t_search = time.perf_counter() - t1
    ignore = not args.keep_identical_ids
    t_rerank = 0.0
    extra: dict[str, Any] = {}
    if args.reranker:
        extra["first_stage_metrics"] = rounded(evaluate_run(qrels, run_from_hits(qids, hits, ignore_identical_ids=ignore)))
        stage = _cross_encoder_stage if args.reranker == "cross-encoder" else _prp_stage
        t2 = time.perf_counter()
        hits, name, more = stage(args, qids, texts, hits, qrels)
        t_rerank = time.perf_counter() - t2
        pipeline += f" >> {name}"
        extra.update(more)
    metrics = evaluate_run(qrels, run_from_hits(qids, hits, ignore_identical_ids=ignore))
    return {
        "dataset": ds.name,
        "split": args.split,
        "pipeline": pipeline,
        "num_queries": len(qids),
        "top_k": args.top_k,
        "metrics": rounded(metrics),
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_index": round(t_index, 2),
        "seconds_search": round(t_search, 3),
        "seconds_rerank_per_query": round(t_rerank / max(1, len(qids)), 3),
        **extra,
    }


def print_table(result: dict[str, Any]) -> None:
    m = result["metrics"]
    print("| dataset | split | pipeline | queries | nDCG@10 | Recall@100 | MRR@10 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {result['dataset']} | {result['split']} | {result['pipeline']} | {result['num_queries']} | "
          f"{m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} | {result['seconds']} |")
    if "first_stage_metrics" in result:
        fm = result["first_stage_metrics"]
        print(f"| {result['dataset']} | {result['split']} | ... first stage alone (same queries) | "
              f"{result['num_queries']} | {fm['ndcg@10']:.4f} | {fm['recall@100']:.4f} | {fm['mrr@10']:.4f} | |")
    for w, fm in result.get("fused_with_first_stage", {}).items():
        print(f"| {result['dataset']} | {result['split']} | ... first-stage weight {w} instead | "
              f"{result['num_queries']} | {fm['ndcg@10']:.4f} | {fm['recall@100']:.4f} | {fm['mrr@10']:.4f} | |")


def _print_all(result: dict[str, Any]) -> None:
    print_table(result)
    if "prp" in result:
        print(" ".join(f"{k}={v}" for k, v in result["prp"].items()))


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.beir", argv, parse_args, run, _print_all)


if __name__ == "__main__":
    sys.exit(main())
