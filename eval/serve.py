"""Load test of ``ragprune serve``: throughput and latency at 1, 4 and 16 concurrent clients,
dynamic batching on vs off, and side by side with infinity-emb serving the same checkpoint.

    python -m eval.serve --data ../shared/data/beir_scifact --json eval/results/serve.json
    python -m eval.serve --data ../shared/data/beir_scifact --infinity /tmp/infvenv/bin/infinity_emb

Each request is a Cohere rerank body (``POST /v2/rerank``; infinity's ``POST /rerank`` takes the
same fields): one SciFact test claim and its BM25 top ``--docs`` passages. Every server runs in
its own process with ``--threads`` torch threads, on the shipped reranker checkpoint folder
(infinity loads the same folder with its torch engine). Clients are httpx threads sending
``--limit`` requests per concurrency level after ``--warmup`` requests; throughput is documents
scored per second of wall time, latency the client-side seconds per request (p50, p99).
Batching off is ``--max-batch-size 1`` (a request is never split, so each runs alone). Both
servers truncate a (query, passage) pair at ``--max-length`` tokens: by default the checkpoint
tokenizer's ``model_max_length`` (512), which is what infinity uses; ragprune's own default is 256.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eval.common import DEFAULT_SHARED, add_data_arg, add_limit_arg, add_output_args, run_cli

ROOT = Path(__file__).resolve().parents[1]


def reranker() -> Any:
    """``ragprune serve --reranker eval.serve:reranker``: the shipped cross-encoder truncating at
    ``$RAGPRUNE_EVAL_MAX_LENGTH`` tokens (the length infinity uses, for a like-for-like run)."""
    from ragprune.rerank.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(max_length=int(os.environ.get("RAGPRUNE_EVAL_MAX_LENGTH", "256")),
                                backend=os.environ.get("RAGPRUNE_EVAL_BACKEND", "torch"),  # type: ignore[arg-type]
                                quantize=os.environ.get("RAGPRUNE_EVAL_QUANTIZE") or None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"eval.serve: the server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"eval.serve: no answer from {url} after {timeout:.0f} s")


def _payloads(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ragprune.datasets import load_beir
    from ragprune.retrieve.bm25 import BM25Retriever

    ds = load_beir(args.data, "test")
    queries = list(ds.queries.values())[: args.limit + args.warmup]
    bm25 = BM25Retriever.from_documents(ds.corpus, show_progress=False)
    hits = bm25.retrieve_many(queries, k=args.docs)
    return [{"model": "ragprune-reranker", "query": q, "documents": [h.document.full_text for h in hs]}
            for q, hs in zip(queries, hits)]


def _load(url: str, payloads: list[dict[str, Any]], clients: int) -> dict[str, float]:
    import httpx

    def one(body: dict[str, Any]) -> float:
        t = time.perf_counter()
        r = client.post(url, json=body, timeout=300)
        r.raise_for_status()
        return time.perf_counter() - t

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        latencies = sorted(pool.map(one, payloads))
        wall = time.perf_counter() - start
    docs = sum(len(p["documents"]) for p in payloads)
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return {"clients": clients, "requests": len(payloads), "docs_per_s": round(docs / wall, 1),
            "p50_s": round(statistics.median(latencies), 4), "p99_s": round(p99, 4)}


def _serve(name: str, cmd: list[str], health: str, rerank: str, payloads: list[dict[str, Any]],
           args: argparse.Namespace, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**os.environ, "RAGPRUNE_EVAL_MAX_LENGTH": str(args.max_length), "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1", **(extra_env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(health, proc)
        warm, timed = payloads[: args.warmup], payloads[args.warmup :]
        _load(rerank, warm, 1)
        rows = [_load(rerank, timed, c) for c in args.clients]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for r in rows:
        r["server"] = name
    print(f"  {name}: " + ", ".join(f"{r['clients']} clients {r['docs_per_s']} docs/s" for r in rows), flush=True)
    return {"server": name, "rows": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragprune.models import resolve_model

    model = resolve_model("ragprune-reranker")
    payloads = _payloads(args)
    runs = []
    servers = [("ragprune, batching on", args.max_batch_size, {}), ("ragprune, batching off", 1, {})]
    if args.onnx_int8:
        servers.append(("ragprune ONNX int8, batching on", args.max_batch_size,
                        {"RAGPRUNE_EVAL_BACKEND": "onnx", "RAGPRUNE_EVAL_QUANTIZE": "int8"}))
    for name, batch, extra_env in servers:
        port = _free_port()
        cmd = [sys.executable, "-m", "ragprune", "serve", "--port", str(port), "--reranker", "eval.serve:reranker",
               "--max-batch-size", str(batch), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning",
               "--max-documents", str(max(1000, args.docs))]
        runs.append(_serve(name, cmd, f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/v2/rerank",
                           payloads, args, extra_env))
    infinity = args.infinity or shutil.which("infinity_emb")
    if infinity:
        port = _free_port()
        cmd = [infinity, "v2", "--model-id", str(model), "--host", "127.0.0.1", "--port", str(port), "--engine", "torch",
               "--device", "cpu",
               "--batch-size", str(args.infinity_batch_size), "--no-bettertransformer", "--no-compile",
               "--dtype", "float32"]
        runs.append(_serve("infinity-emb", cmd, f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/rerank",
                           payloads, args))
    else:
        print("  infinity-emb: not installed (pass --infinity PATH to its infinity_emb command); skipped")
    return {"dataset": Path(args.data).name, "requests_per_level": args.limit, "docs_per_request": args.docs,
            "threads": args.threads, "max_length": args.max_length, "model": model.name, "runs": runs}


def print_table(result: dict[str, Any]) -> None:
    print(f"\nrerank load test: {result['requests_per_level']} requests x {result['docs_per_request']} "
          f"{result['dataset']} passages per level, {result['threads']} torch threads per server, pairs cut at "
          f"{result['max_length']} tokens")
    print(f"{'server':<24} {'clients':>7} {'docs/s':>9} {'p50 s':>8} {'p99 s':>8}")
    for run in result["runs"]:
        for r in run["rows"]:
            print(f"{run['server']:<24} {r['clients']:>7} {r['docs_per_s']:>9.1f} {r['p50_s']:>8.3f} {r['p99_s']:>8.3f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.serve", description=__doc__.split("\n\n")[0])
    add_data_arg(p, "BEIR folder (test split): claims and BM25 candidates", default=DEFAULT_SHARED / "beir_scifact")
    add_limit_arg(p, "--requests", default=16, help="timed requests per concurrency level")
    p.add_argument("--warmup", type=int, default=4, help="untimed requests before the first level")
    p.add_argument("--docs", type=int, default=8, help="passages per request (BM25 top N)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    p.add_argument("--threads", type=int, default=2, help="torch threads per server process")
    p.add_argument("--max-length", type=int, default=512,
                   help="tokens per (query, passage) pair in ragprune (infinity: the tokenizer's 512)")
    p.add_argument("--max-batch-size", type=int, default=128, help="ragprune's batch size with batching on (pairs)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="ragprune's batching wait")
    p.add_argument("--no-onnx-int8", dest="onnx_int8", action="store_false",
                   help="skip the ragprune server on the ONNX int8 backend (--backend onnx --quantize int8)")
    p.add_argument("--infinity", default=None, metavar="PATH",
                   help="the infinity_emb command (e.g. from a separate virtualenv); default: on PATH, else skip")
    p.add_argument("--infinity-batch-size", type=int, default=32, help="infinity's --batch-size")
    add_output_args(p)
    args = p.parse_args(argv)
    for name in ("warmup", "docs", "threads", "max_batch_size", "max_length"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.clients) < 1:
        p.error("--clients must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.serve", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
