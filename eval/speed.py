"""Speed benchmarks, measured side by side in one process on the same data.

    python -m eval.speed bm25 --data ../shared/data/beir_scifact --json eval/results/speed_bm25.json
    python -m eval.speed dense --data ../shared/data/beir_scifact --docs 500 --json eval/results/speed_dense.json

``bm25``: ragprune's BM25 vs bm25s vs rank-bm25, every library given the same analysed tokens
(ragprune's analyzer: lowercase, Lucene stopwords, Snowball stemming) and the same BM25
variant/parameters where the library has it. Reported: index seconds, and top-10 queries per
second on one thread (median of ``--repeats`` runs). ragprune's query timing starts from raw
query *strings* (analysis included); the others get pre-analysed token lists. rank-bm25 runs
on the first ``--rank-bm25-queries`` queries only (it scores every document per query term).

``dense``: corpus encoding with ragprune's DenseRetriever vs raw sentence-transformers
``encode`` (same model, batch size and normalisation) on the first ``--docs`` documents.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.common import (
    DEFAULT_SHARED,
    add_data_arg,
    add_limit_arg,
    add_output_args,
    outputs_refused,
    save_results,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_bm25(args: argparse.Namespace) -> dict[str, Any]:
    import bm25s
    import rank_bm25

    from ragprune.datasets import load_beir
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.text import Analyzer

    ds = load_beir(args.data, "test")
    import json as _json

    with open(Path(args.data) / "queries.jsonl", encoding="utf-8") as f:
        queries = [_json.loads(line)["text"] for line in f if line.strip()]
    texts = [d.full_text for d in ds.corpus]
    analyzer = Analyzer()
    t = time.perf_counter()
    corpus_tokens = [analyzer(x) for x in texts]
    t_analyse = time.perf_counter() - t
    query_tokens = [analyzer(q) for q in queries]
    k, rows = 10, []

    # ragprune: index from raw text (analysis included), query from raw strings.
    t_idx, ours = _median_time(lambda: BM25Retriever.from_documents(ds.corpus, method=args.method, k1=args.k1, b=args.b), args.repeats)
    t_q, ours_hits = _median_time(lambda: ours.retrieve_many(queries, k=k), args.repeats)
    rows.append({"library": "ragprune", "version": _version("ragprune"), "index_s": t_idx,
                 "index_note": "raw text in (analysis included)", "queries": len(queries),
                 "qps": len(queries) / t_q, "query_note": "raw strings in"})

    # bm25s: same tokens, same variant and parameters, one thread.
    def build_bm25s():
        r = bm25s.BM25(method=args.method, k1=args.k1, b=args.b)
        r.index(corpus_tokens, show_progress=False)
        return r

    t_idx_s, r_s = _median_time(build_bm25s, args.repeats)
    t_q_s, (docs_s, _) = _median_time(
        lambda: r_s.retrieve(query_tokens, k=k, show_progress=False, n_threads=1), args.repeats)
    rows.append({"library": "bm25s", "version": bm25s.__version__, "index_s": t_idx_s + t_analyse,
                 "index_note": "tokens in; our analysis time added", "queries": len(queries),
                 "qps": len(queries) / t_q_s, "query_note": "pre-analysed tokens in",
                 "backend": getattr(r_s, "backend", "numpy")})

    # rank-bm25: reference implementation (Okapi), subset of queries.
    t_idx_r, r_r = _median_time(lambda: rank_bm25.BM25Okapi(corpus_tokens, k1=args.k1, b=args.b), 1)
    sub = query_tokens[: args.rank_bm25_queries]

    def rank_query():
        import numpy as np

        return [np.argsort(-r_r.get_scores(q))[:k] for q in sub]

    t_q_r, _ = _median_time(rank_query, 1)
    rows.append({"library": "rank-bm25", "version": _version("rank-bm25"), "index_s": t_idx_r + t_analyse,
                 "index_note": "tokens in; our analysis time added (BM25Okapi)", "queries": len(sub),
                 "qps": len(sub) / t_q_r, "query_note": "pre-analysed tokens in"})

    # Agreement of top-10 lists between ragprune and bm25s (same variant): a parity check.
    ours_ids = [[h.document.id for h in hits] for hits in ours_hits]
    s_ids = [[ds.corpus[int(i)].id for i in row] for row in docs_s]
    overlap = statistics.mean(len(set(a) & set(b)) / k for a, b in zip(ours_ids, s_ids))
    return {"benchmark": "bm25", "dataset": ds.name, "docs": len(texts), "k": k, "method": args.method,
            "k1": args.k1, "b": args.b, "threads": 1, "repeats": args.repeats, "rows": rows,
            "ratios": {"qps_vs_bm25s": rows[0]["qps"] / rows[1]["qps"],
                       "qps_vs_rank_bm25": rows[0]["qps"] / rows[2]["qps"]},
            "top10_overlap_with_bm25s": overlap}


def bench_dense(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ragprune.datasets import load_beir
    from ragprune.retrieve.dense import DenseRetriever, load_sentence_transformer

    torch.set_num_threads(args.threads)
    ds = load_beir(args.data, "test")
    docs = ds.corpus[: args.docs]
    model = load_sentence_transformer(args.model)
    texts = [d.full_text for d in docs]
    model.encode(texts[:16], batch_size=16)  # warm-up
    t_raw, _ = _median_time(lambda: model.encode(texts, batch_size=64, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False), args.repeats)
    t_ours, _ = _median_time(lambda: DenseRetriever.from_documents(docs, model, batch_size=64, show_progress=False),
                             args.repeats)
    rows = [{"library": "sentence-transformers (raw encode)", "seconds": t_raw, "docs_per_s": len(docs) / t_raw},
            {"library": "ragprune DenseRetriever.from_documents (encode + FAISS)", "seconds": t_ours,
             "docs_per_s": len(docs) / t_ours}]
    return {"benchmark": "dense", "dataset": ds.name, "docs": len(docs), "model": args.model,
            "threads": args.threads, "repeats": args.repeats, "rows": rows,
            "ratios": {"ours_over_raw_seconds": t_ours / t_raw}}


def bench_rerank(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of reranking the BM25 top-100 of one query, fp32 vs int8, ``--threads`` threads."""
    import torch

    from ragprune.datasets import load_beir
    from ragprune.rerank.cross_encoder import CrossEncoderReranker
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.text import count_tokens

    torch.set_num_threads(args.threads)
    ds = load_beir(args.data, "test")
    bm25 = BM25Retriever.from_documents(ds.corpus)
    queries = list(ds.queries.values())[: args.limit]
    cands = bm25.retrieve_many(queries, k=100)
    mean_tokens = statistics.mean(count_tokens(h.document.full_text) for c in cands for h in c)
    rows = []
    for quant in (None, "int8"):
        ce = CrossEncoderReranker(args.model, max_length=args.max_length, quantize=quant)
        ce.rerank(queries[0], cands[0][:8])  # warm-up
        per_query = []
        for q, c in zip(queries, cands):
            t = time.perf_counter()
            ce.rerank(q, c)
            per_query.append(time.perf_counter() - t)
        rows.append({"model": f"{ce.path.name} ({quant or 'fp32'})", "max_length": args.max_length,
                     "passages": 100, "seconds_per_query": statistics.median(per_query),
                     "pairs_per_s": 100 / statistics.median(per_query)})
    return {"benchmark": "rerank", "dataset": ds.name, "docs": len(ds.corpus), "queries": len(queries),
            "threads": args.threads, "mean_passage_tokens": mean_tokens, "rows": rows,
            "ratios": {"int8_speedup": rows[0]["seconds_per_query"] / rows[1]["seconds_per_query"]}}


def bench_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Provence prune + rerank of 100 passages of ~``--passage-tokens`` tokens, fp32 vs int8."""
    import torch

    from ragprune.datasets import load_beir
    from ragprune.prune.provence import ProvencePruner
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.text import count_tokens
    from ragprune.types import Document

    torch.set_num_threads(args.threads)
    ds = load_beir(args.data, "test")
    bm25 = BM25Retriever.from_documents(ds.corpus)
    queries = list(ds.queries.values())[: args.limit]

    tokenizer = ProvencePruner(args.model).tokenizer

    def cut(doc: Document) -> Document:  # title + text cut to ~N model (wordpiece) tokens
        enc = tokenizer(doc.full_text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"][: args.passage_tokens]
        end = max(0, offsets[-1][1] - len(doc.title) - 1) if offsets and doc.title else (offsets[-1][1] if offsets else 0)
        return Document(id=doc.id, title=doc.title, text=doc.text[:end])

    cands = [[cut(h.document) for h in c] for c in bm25.retrieve_many(queries, k=100)]
    mean_tokens = statistics.mean(count_tokens(d.full_text) for c in cands for d in c)
    mean_wordpieces = statistics.mean(len(tokenizer(d.full_text, add_special_tokens=False)["input_ids"])
                                      for c in cands for d in c)
    rows = []
    for quant in (None, "int8"):
        pruner = ProvencePruner(args.model, quantize=quant)
        pruner.prune(queries[0], cands[0][:8])  # warm-up
        per_query = []
        for q, c in zip(queries, cands):
            t = time.perf_counter()
            pruner.prune(q, c)  # one pass: ranking score and kept sentences for every passage
            per_query.append(time.perf_counter() - t)
        rows.append({"model": f"{pruner.path.name} ({quant or 'fp32'})", "passages": 100,
                     "seconds_per_query": statistics.median(per_query),
                     "passages_per_s": 100 / statistics.median(per_query)})
    return {"benchmark": "prune", "dataset": ds.name, "docs": len(ds.corpus), "queries": len(queries),
            "threads": args.threads, "mean_passage_tokens": mean_tokens,
            "mean_passage_model_tokens": mean_wordpieces, "rows": rows,
            "ratios": {"int8_speedup": rows[0]["seconds_per_query"] / rows[1]["seconds_per_query"]}}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    keys = [k for k in rows[0] if k not in ("index_note", "query_note")]
    print(f"## {result['benchmark']} on {result['dataset']} ({result['docs']} docs)")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r.get(k):.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")
    for k, v in result["ratios"].items():
        print(f"{k}: {v:.2f}")
    if "top10_overlap_with_bm25s" in result:
        print(f"top-10 overlap with bm25s: {result['top10_overlap_with_bm25s']:.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.speed", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)
    pb = sub.add_parser("bm25", help="ragprune vs bm25s vs rank-bm25")
    pb.add_argument("--method", default="lucene")
    pb.add_argument("--k1", type=float, default=0.9)
    pb.add_argument("--b", type=float, default=0.4)
    pb.add_argument("--rank-bm25-queries", type=int, default=100)
    pd = sub.add_parser("dense", help="DenseRetriever vs raw sentence-transformers encoding")
    pd.add_argument("--model", default="minilm")
    pd.add_argument("--docs", type=int, default=500)
    pd.add_argument("--threads", type=int, default=2)
    pr = sub.add_parser("rerank", help="cross-encoder latency for 100 passages, fp32 vs int8")
    pr.add_argument("--model", default="ragprune-reranker")
    pr.add_argument("--max-length", type=int, default=256)
    add_limit_arg(pr, "--queries", default=5, help="queries timed")
    pr.add_argument("--threads", type=int, default=2)
    pp = sub.add_parser("prune", help="Provence prune + rerank latency for 100 passages, fp32 vs int8")
    pp.add_argument("--model", default="ragprune-provence")
    pp.add_argument("--passage-tokens", type=int, default=200, help="passage length in model (wordpiece) tokens")
    add_limit_arg(pp, "--queries", default=5, help="queries timed")
    pp.add_argument("--threads", type=int, default=2)
    for sp_ in (pb, pd, pr, pp):
        add_data_arg(sp_, "BEIR folder", default=DEFAULT_SHARED / "beir_scifact")
        sp_.add_argument("--repeats", type=int, default=3)
        add_output_args(sp_)
    args = p.parse_args(argv)
    if outputs_refused(args, "eval.speed", keep=("threads",)):  # thread counts change timings
        return 2

    result = {"bm25": bench_bm25, "dense": bench_dense, "rerank": bench_rerank, "prune": bench_prune}[args.bench](args)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print_table(result)
    save_results(args, result, keep=("threads",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
