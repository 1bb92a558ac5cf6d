"""Reranking throughput: the in-process library vs Ray Data with 1 and 2 actors, same rows.

    python -m eval.scale_ray --json eval/results/scale_ray.json

The rows are ``--limit`` SciFact test claims, each with its BM25 top ``--candidates`` abstracts
(title + text, as a retriever would hand them over, with their BM25 scores). Every variant
reranks all of them with the shipped cross-encoder (``--model``, torch fp32, ``--max-length``):

- in-process: one :class:`~ragprune.CrossEncoderReranker` calling ``rerank_many`` batch by batch
  (``--batch-size`` rows per call, as an actor would), torch on 1 thread, then on ``--threads``
  threads (the reference the other rows are compared with is the first run);
- Ray Data: :func:`ragprune.integrations.ray.rerank_dataset` on a local Ray (``ray.init`` with
  ``--threads`` CPUs) with a fixed pool of 1, then 2 actors (``--actors``), one CPU and one torch
  thread each, ``--batch-size`` rows per batch. Its seconds run from building the dataset to the
  last row: actor start-up (importing torch, loading the model once per actor) included; Ray's
  own start (``ray.init``) is reported apart.

Reported per variant: seconds, documents (query-document pairs) per second, and how far the
results are from the in-process ones (max |score difference|, rows whose reranked ids differ).
Absolute speed depends on the machine and its load (2 shared cores here); the rows of one run
are comparable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from eval.common import (
    DEFAULT_SHARED,
    add_data_arg,
    add_limit_arg,
    add_output_args,
    run_cli,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the Ray workers: one torch thread per actor
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ragprune.datasets import load_beir
    from ragprune.retrieve.bm25 import BM25Retriever

    ds = load_beir(args.data, "test")
    qids = list(ds.queries)[: args.limit]
    hits = BM25Retriever.from_documents(ds.corpus).retrieve_many([ds.queries[q] for q in qids], k=args.candidates)
    return [{"query_id": q, "query": ds.queries[q],
             "documents": [{"id": h.id, "title": h.document.title, "text": h.document.text, "score": float(h.score)}
                           for h in hs]} for q, hs in zip(qids, hits)]


def _compare(ref: dict[str, list[tuple[str, float]]], got: dict[str, list[tuple[str, float]]]) -> dict[str, Any]:
    diff = max((abs(a[1] - b[1]) for q in ref for a, b in zip(ref[q], got[q])), default=0.0)
    return {"max_abs_score_diff": diff, "rows_with_other_ids": sum([i for i, _ in ref[q]] != [i for i, _ in got[q]]
                                                                   for q in ref),
            "rows_missing": len(set(ref) - set(got))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ragprune.rerank.cross_encoder import CrossEncoderReranker
    from ragprune.types import Document, ScoredDocument

    load_before = os.getloadavg()[0]
    rows = _rows(args)
    pairs = sum(len(r["documents"]) for r in rows)
    options = {"max_length": args.max_length}
    print(f"{len(rows)} queries x {args.candidates} candidates = {pairs} pairs", file=sys.stderr)

    t = time.perf_counter()
    reranker = CrossEncoderReranker(args.model, **options)
    load_s = time.perf_counter() - t
    ref: dict[str, list[tuple[str, float]]] = {}
    out_rows = []
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        got: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, len(rows), args.batch_size):
            batch = rows[start : start + args.batch_size]
            cands = [[ScoredDocument(Document(d["id"], d["text"], d["title"]), d["score"]) for d in r["documents"]]
                     for r in batch]
            for r, hits in zip(batch, reranker.rerank_many([r["query"] for r in batch], cands)):
                got[r["query_id"]] = [(h.id, h.score) for h in hits]
        seconds = time.perf_counter() - t
        ref = ref or got  # the first in-process run is the reference
        out_rows.append({"variant": f"in-process, {threads} torch thread{'s' if threads > 1 else ''}", "actors": 0,
                         "threads": threads, "seconds": seconds, "docs_per_s": pairs / seconds, **_compare(ref, got)})
        print(f"  in-process {threads} thread(s): {seconds:.1f} s", file=sys.stderr)
    del reranker

    import ray

    from ragprune.integrations.ray import rerank_dataset

    t = time.perf_counter()
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init_s = time.perf_counter() - t
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        for actors in args.actors:
            t = time.perf_counter()
            ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // args.batch_size))  # a block per batch
            out = rerank_dataset(ds, args.model, options=options, concurrency=actors, batch_size=args.batch_size,
                                 num_cpus=1)
            got = {r["query_id"]: list(zip(r["reranked_ids"], r["rerank_scores"]))
                   for r in out.select_columns(["query_id", "reranked_ids", "rerank_scores"]).take_all()}
            seconds = time.perf_counter() - t
            out_rows.append({"variant": f"Ray Data, {actors} actor{'s' if actors > 1 else ''} x 1 thread",
                             "actors": actors, "threads": actors, "seconds": seconds, "docs_per_s": pairs / seconds,
                             **_compare(ref, got)})
            print(f"  Ray Data {actors} actor(s): {seconds:.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    from importlib.metadata import version

    return {"benchmark": "scale_ray", "dataset": "scifact", "queries": len(rows), "candidates": args.candidates,
            "pairs": pairs, "threads": args.threads, "model": args.model, "max_length": args.max_length,
            "batch_size_rows": args.batch_size, "model_load_s": load_s, "ray_init_s": init_s,
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
            "versions": {"ray": version("ray"), "torch": torch.__version__},
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "rows": out_rows}


def print_table(result: dict[str, Any]) -> None:
    print(f"## rerank {result['queries']} SciFact queries x {result['candidates']} BM25 candidates "
          f"({result['pairs']} pairs, {result['model']}, max_length {result['max_length']})")
    print(f"| variant | seconds | docs/s | vs in-process ({result['threads']} threads) | max abs score diff | "
          "rows with other ids |")
    print("|---|---|---|---|---|---|")
    base = next(r["seconds"] for r in result["rows"] if r["actors"] == 0 and r["threads"] == result["threads"])
    for r in result["rows"]:
        print(f"| {r['variant']} | {r['seconds']:.1f} | {r['docs_per_s']:.1f} | {base / r['seconds']:.2f}x | "
              f"{r['max_abs_score_diff']:.1e} | {r['rows_with_other_ids']} |")
    print(f"ray.init: {result['ray_init_s']:.1f} s (not counted); in-process model load: "
          f"{result['model_load_s']:.1f} s (not counted; counted in the Ray rows, once per actor); "
          f"1-min load average {result['load_average_1min']['start']:.1f} at the start, "
          f"{result['load_average_1min']['end']:.1f} at the end ({result['machine']['cpus']} CPUs)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.scale_ray", description=__doc__.split("\n\n")[0])
    add_data_arg(p, "BEIR SciFact folder", default=DEFAULT_SHARED / "beir_scifact")
    add_limit_arg(p, default=20, help="SciFact test queries (rows)")
    p.add_argument("--candidates", type=int, default=30, help="BM25 candidates reranked per query")
    p.add_argument("--model", default="ragprune-reranker")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=2, help="rows per batch (in-process call and Ray batch)")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="Ray actor pool sizes")
    p.add_argument("--threads", type=int, default=2, help="torch threads in-process, and the CPUs given to Ray")
    add_output_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.scale_ray", argv, parse_args, run, print_table, keep=("threads",))  # threads change timings


if __name__ == "__main__":
    sys.exit(main())
