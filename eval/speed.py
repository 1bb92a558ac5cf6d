"""Speed benchmarks, measured side by side in one process on the same data.

    python -m eval.speed bm25 --data ../shared/data/beir_scifact --json eval/results/speed_bm25.json
    python -m eval.speed dense --data ../shared/data/beir_scifact --docs 500 --json eval/results/speed_dense.json

``bm25``: ragprune's BM25 vs bm25s vs rank-bm25. Rows: ragprune (its defaults unless
``--method/--k1/--b``); bm25s given ragprune's analysed tokens (lowercase, Lucene stopwords,
Snowball stemming) and the same variant/parameters; bm25s as its README uses it (its own
``bm25s.tokenize`` with English stopwords and PyStemmer, its defaults lucene/1.5/0.75); rank-bm25
(BM25Okapi, same tokens). Reported: index seconds; batched top-10 queries per second on one
thread (median of ``--repeats`` runs; ragprune from raw strings, the same-token peers from
pre-analysed tokens); the per-query latency of top-10 retrieval one query at a time, raw string
in, tokenization included (p50 and mean over every query x ``--repeats``, the libraries taking
turns); and nDCG@10 on the test split with each library's defaults. rank-bm25 runs on the first
``--rank-bm25-queries`` queries only (it scores every document per query term).

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


def _bm25_per_query(fns: dict[str, Callable[[str], Any]], queries: list[str], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each ``fns[name](query)``, one query at a time.

    The libraries take turns on every query (in a rotating order), so a burst of load from
    other processes on the machine falls on all of them alike.
    """
    for fn in fns.values():  # warm-up: caches, lazy imports
        for q in queries[:20]:
            fn(q)
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for rep in range(repeats):
        for i, q in enumerate(queries):
            for j in range(len(names)):
                name = names[(i + j + rep) % len(names)]
                fn = fns[name]
                t = clock()
                fn(q)
                times[name].append(clock() - t)
    return times


def bench_bm25(args: argparse.Namespace) -> dict[str, Any]:
    import bm25s
    import numpy as np
    import rank_bm25
    import Stemmer

    from ragprune.datasets import load_beir
    from ragprune.metrics import evaluate_run, run_from_hits
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.text import Analyzer
    from ragprune.types import ScoredDocument

    ds = load_beir(args.data, "test")
    import json as _json

    with open(Path(args.data) / "queries.jsonl", encoding="utf-8") as f:
        queries = [_json.loads(line)["text"] for line in f if line.strip()]
    texts = [d.full_text for d in ds.corpus]
    defaults = BM25Retriever.from_documents(["x"])  # ragprune's defaults
    method = args.method or defaults.method
    k1 = defaults.k1 if args.k1 is None else args.k1
    b = defaults.b if args.b is None else args.b
    analyzer = Analyzer()
    t = time.perf_counter()
    corpus_tokens = [analyzer(x) for x in texts]
    t_analyse = time.perf_counter() - t
    query_tokens = [analyzer(q) for q in queries]
    k, rows = 10, []
    test_qids = list(ds.queries)

    def ndcg(hits: list[list[Any]]) -> float:
        return round(evaluate_run(ds.qrels, run_from_hits(test_qids, hits))["ndcg@10"], 4)

    # ragprune: index from raw text (analysis included), query from raw strings.
    t_idx, ours = _median_time(lambda: BM25Retriever.from_documents(ds.corpus, method=method, k1=k1, b=b), args.repeats)
    t_q, ours_hits = _median_time(lambda: ours.retrieve_many(queries, k=k), args.repeats)
    rows.append({"library": "ragprune", "version": _version("ragprune"), "tokens": "ragprune Analyzer",
                 "index_s": t_idx, "index_note": "raw text in (analysis included)", "queries": len(queries),
                 "qps": len(queries) / t_q, "query_note": "raw strings in"})

    # bm25s: same tokens, same variant and parameters, one thread.
    def build_bm25s():
        r = bm25s.BM25(method=method, k1=k1, b=b)
        r.index(corpus_tokens, show_progress=False)
        return r

    t_idx_s, r_s = _median_time(build_bm25s, args.repeats)
    t_q_s, (docs_s, _) = _median_time(
        lambda: r_s.retrieve(query_tokens, k=k, show_progress=False, n_threads=1), args.repeats)
    rows.append({"library": "bm25s", "version": bm25s.__version__, "tokens": "ragprune Analyzer",
                 "index_s": t_idx_s + t_analyse, "index_note": "tokens in; our analysis time added",
                 "queries": len(queries), "qps": len(queries) / t_q_s, "query_note": "pre-analysed tokens in",
                 "backend": getattr(r_s, "backend", "numpy")})

    # bm25s as its README uses it: its own tokenizer (English stopwords, PyStemmer English),
    # its default parameters (lucene, k1=1.5, b=0.75); batched qps include query tokenization.
    stemmer = Stemmer.Stemmer("english")

    def build_bm25s_own():
        r = bm25s.BM25()
        r.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
        return r

    t_idx_o, r_o = _median_time(build_bm25s_own, args.repeats)
    t_q_o, _ = _median_time(lambda: r_o.retrieve(
        bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False),
        k=k, show_progress=False, n_threads=1), args.repeats)
    rows.append({"library": "bm25s", "version": bm25s.__version__, "tokens": "bm25s tokenize (en stopwords, stemmer)",
                 "index_s": t_idx_o, "index_note": "raw text in (tokenization included)", "queries": len(queries),
                 "qps": len(queries) / t_q_o, "query_note": "raw strings in (tokenization included)",
                 "params": {"method": r_o.method, "k1": r_o.k1, "b": r_o.b}})

    # One query at a time, as a RAG app asks: raw string in, top-10 out, tokenization included.
    per_query = _bm25_per_query({
        "ragprune": lambda q: ours.retrieve(q, k=k),
        "bm25s same tokens": lambda q: r_s.retrieve([analyzer(q)], k=k, show_progress=False, n_threads=1),
        "bm25s own tokenizer": lambda q: r_o.retrieve(
            bm25s.tokenize(q, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False),
            k=k, show_progress=False, n_threads=1),
    }, queries[: args.latency_queries], args.repeats)
    for row, name in zip(rows, per_query):
        row["p50_ms"] = statistics.median(per_query[name]) * 1e3
        row["mean_ms"] = statistics.mean(per_query[name]) * 1e3

    # nDCG@10 on the test split with each library's defaults (top-100 lists, as eval.beir).
    test_texts = [ds.queries[q] for q in test_qids]
    mine = BM25Retriever.from_documents(ds.corpus)
    rows[0]["ndcg@10"] = ndcg(mine.retrieve_many(test_texts, k=100))
    d_s, s_s = r_s.retrieve([analyzer(q) for q in test_texts], k=100, show_progress=False, n_threads=1)
    d_o, s_o = r_o.retrieve(bm25s.tokenize(test_texts, stopwords="en", stemmer=stemmer, show_progress=False,
                                           return_ids=False), k=100, show_progress=False, n_threads=1)
    for row, (d, sc) in zip(rows[1:], ((d_s, s_s), (d_o, s_o))):
        row["ndcg@10"] = ndcg([[ScoredDocument(ds.corpus[int(i)], float(x)) for i, x in zip(r, s)]
                               for r, s in zip(d, sc)])
    rows[1]["ndcg_note"] = f"bm25s with ({method}, k1={k1}, b={b}) on ragprune's tokens"

    # rank-bm25: reference implementation (Okapi), subset of queries.
    t_idx_r, r_r = _median_time(lambda: rank_bm25.BM25Okapi(corpus_tokens, k1=k1, b=b), 1)
    sub = query_tokens[: args.rank_bm25_queries]

    def rank_query():
        return [np.argsort(-r_r.get_scores(q))[:k] for q in sub]

    t_q_r, _ = _median_time(rank_query, 1)
    rows.append({"library": "rank-bm25", "version": _version("rank-bm25"), "tokens": "ragprune Analyzer",
                 "index_s": t_idx_r + t_analyse, "index_note": "tokens in; our analysis time added (BM25Okapi)",
                 "queries": len(sub), "qps": len(sub) / t_q_r, "query_note": "pre-analysed tokens in"})

    # Agreement of top-10 lists between ragprune and bm25s (same variant): a parity check.
    ours_ids = [[h.document.id for h in hits] for hits in ours_hits]
    s_ids = [[ds.corpus[int(i)].id for i in row] for row in docs_s]
    overlap = statistics.mean(len(set(a) & set(b)) / k for a, b in zip(ours_ids, s_ids))
    return {"benchmark": "bm25", "dataset": ds.name, "docs": len(texts), "k": k, "method": method,
            "k1": k1, "b": b, "threads": 1, "repeats": args.repeats, "rows": rows,
            "latency_queries": len(queries[: args.latency_queries]),
            "ratios": {"qps_vs_bm25s": rows[0]["qps"] / rows[1]["qps"],
                       "qps_vs_rank_bm25": rows[0]["qps"] / rows[3]["qps"],
                       "p50_latency_vs_bm25s_own_tokenizer": rows[0]["p50_ms"] / rows[2]["p50_ms"],
                       "p50_latency_vs_bm25s_same_tokens": rows[0]["p50_ms"] / rows[1]["p50_ms"],
                       "mean_latency_vs_bm25s_own_tokenizer": rows[0]["mean_ms"] / rows[2]["mean_ms"],
                       "ndcg10_points_vs_bm25s_defaults": 100 * (rows[0]["ndcg@10"] - rows[2]["ndcg@10"])},
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


def _rerank_variants(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, model, CrossEncoderReranker options) of every variant timed, in table order."""
    out = []
    for model in [args.model, *args.student]:
        for backend, quant in (("torch", None), ("torch", "int8"), ("onnx", None), ("onnx", "int8")):
            if model != args.model and (backend, quant) == ("torch", "int8"):
                continue  # the student's table keeps the reference and the ONNX rows
            label = f"{Path(model).name} ragprune {backend} {quant or 'fp32'}"
            out.append((label, model, {"backend": backend, "quantize": quant}))
    return out


def _interleaved(timers: dict[str, Callable[[str, list[Any]], Any]], queries: list[str],
                 candidates: list[list[Any]]) -> dict[str, float]:
    """Median seconds per query of each callable, the callables taking turns on every query (in
    a rotating order), so other load on the machine falls on all of them alike."""
    names = list(timers)
    for name in names:
        timers[name](queries[0], candidates[0][:8])  # warm-up (and a one-time ONNX export)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, (q, c) in enumerate(zip(queries, candidates)):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            timers[name](q, c)
            times[name].append(time.perf_counter() - t)
    return {n: statistics.median(times[n]) for n in names}


def bench_rerank(args: argparse.Namespace) -> dict[str, Any]:
    """Rerank the BM25 top-100 of one query: sentence-transformers' CrossEncoder vs ragprune's backends.

    Every variant reranks the same candidates in the same process (median seconds per query
    over ``--queries`` queries, ``--threads`` threads). ``--quality-queries`` > 0 adds SciFact
    test nDCG@10 of each ragprune variant: BM25 top-``--quality-depth`` reranked, alone and
    fused with BM25 at the checkpoint's recommended weight.
    """
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder

    from eval.beir import _fuse
    from ragprune.datasets import load_beir
    from ragprune.metrics import evaluate_run, run_from_hits
    from ragprune.rerank.base import check_fusion_weight
    from ragprune.rerank.cross_encoder import CrossEncoderReranker, _recommended
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.text import count_tokens

    torch.set_num_threads(args.threads)
    ds = load_beir(args.data, "test")
    bm25 = BM25Retriever.from_documents(ds.corpus)
    queries = list(ds.queries.values())[: args.limit]
    cands = bm25.retrieve_many(queries, k=100)
    mean_tokens = statistics.mean(count_tokens(h.document.full_text) for c in cands for h in c)

    rerankers = {label: CrossEncoderReranker(model, max_length=args.max_length, **opts)
                 for label, model, opts in _rerank_variants(args)}
    ref = next(iter(rerankers.values()))  # args.model on torch fp32, the reference
    st = CrossEncoder(str(ref.path), max_length=args.max_length, device="cpu", model_kwargs={"dtype": torch.float32})
    st_scores = st.predict([(queries[0], h.document.full_text) for h in cands[0]], batch_size=32)
    st_diff = float(np.max(np.abs(np.asarray(st_scores)
                                  - np.asarray(ref.score([queries[0]] * len(cands[0]), [h.document for h in cands[0]])))))
    timers: dict[str, Callable[[str, list[Any]], Any]] = {
        "sentence-transformers CrossEncoder fp32 (same checkpoint)":
            lambda q, c: st.predict([(q, h.document.full_text) for h in c], batch_size=32)}
    timers.update({label: ce.rerank for label, ce in rerankers.items()})
    seconds = _interleaved(timers, queries, cands)
    rows = [{"variant": v, "max_length": args.max_length, "seconds_per_query": t, "pairs_per_s": 100 / t,
             "speedup_vs_st": seconds[next(iter(seconds))] / t} for v, t in seconds.items()]
    if args.quality_queries:
        qids = list(ds.queries)[: args.quality_queries]
        qrels = {q: ds.qrels[q] for q in qids}
        first = bm25.retrieve_many([ds.queries[q] for q in qids], k=args.quality_depth)
        for r in rows[1:]:
            if args.quality_of == "students" and not any(r["variant"].startswith(Path(m).name) for m in args.student):
                continue  # deterministic fp32 numbers of the main model are in the last full run
            ce = rerankers[r["variant"]]
            raw = ce.rerank_many([ds.queries[q] for q in qids], first)
            w = check_fusion_weight("recommended", "eval.speed", _recommended(ce.path))
            r["ndcg@10_alone"] = evaluate_run(qrels, run_from_hits(qids, raw))["ndcg@10"]
            r["ndcg@10_fused"] = evaluate_run(qrels, run_from_hits(qids, _fuse(first, raw, w)))["ndcg@10"]
            r["fusion_weight"] = w
            print(f"  {r['variant']}: nDCG@10 alone {r['ndcg@10_alone']:.4f}, fused {r['ndcg@10_fused']:.4f}",
                  file=sys.stderr)
    return {"benchmark": "rerank", "dataset": ds.name, "docs": len(ds.corpus), "queries": len(queries),
            "threads": args.threads, "mean_passage_tokens": mean_tokens, "passages": 100,
            "quality": {"queries": args.quality_queries, "depth": args.quality_depth, "split": "test",
                        "of": args.quality_of},
            "st_max_abs_score_diff_vs_torch": st_diff, "rows": rows,
            "ratios": {f"speedup_vs_st[{r['variant']}]": r["speedup_vs_st"] for r in rows[1:]}}


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
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("index_note", "query_note")]
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
    pb.add_argument("--method", default=None, help="BM25 variant of the ragprune and same-token bm25s rows "
                                                   "(default: BM25Retriever's)")
    pb.add_argument("--k1", type=float, default=None, help="default: BM25Retriever's")
    pb.add_argument("--b", type=float, default=None, help="default: BM25Retriever's")
    pb.add_argument("--rank-bm25-queries", type=int, default=100)
    pb.add_argument("--latency-queries", type=int, default=None,
                    help="queries timed one at a time (default: every query of the set)")
    pd = sub.add_parser("dense", help="DenseRetriever vs raw sentence-transformers encoding")
    pd.add_argument("--model", default="minilm")
    pd.add_argument("--docs", type=int, default=500)
    pd.add_argument("--threads", type=int, default=2)
    pr = sub.add_parser("rerank", help="rerank 100 passages: sentence-transformers vs torch/ONNX, fp32/int8")
    pr.add_argument("--model", default="ragprune-reranker")
    pr.add_argument("--student", nargs="*", default=[], help="more checkpoints timed the same way (e.g. the 2-layer)")
    pr.add_argument("--max-length", type=int, default=256)
    pr.add_argument("--quality-queries", type=int, default=0, help="SciFact test queries for nDCG@10 (0: skip)")
    pr.add_argument("--quality-depth", type=int, default=30, help="BM25 candidates reranked for nDCG@10")
    pr.add_argument("--quality-of", choices=["all", "students"], default="all",
                    help="which variants get the nDCG@10 pass (students: only the --student checkpoints)")
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
