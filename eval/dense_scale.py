"""Dense retrieval at scale: FAISS flat vs HNSW vs IVF vs IVF-PQ on real embeddings.

    python -m eval.dense_scale --json eval/results/dense_scale.json

Corpus: the SciFact abstracts (``--data``, BEIR layout) split into sentences with
``ragprune.text.split_sentences`` (44,545 texts; ``--unit passage`` keeps whole abstracts,
``--limit N`` the first N units), embedded once by ``DenseRetriever.from_documents(...,
shard_dir=...)`` with all-MiniLM-L6-v2 into resumable shards under ``--cache-dir`` (default
``runs/dense_scale``, git-ignored): a killed or repeated run re-encodes nothing it already has.
Queries: the SciFact claims (``queries.jsonl``), encoded once and cached beside the shards.

Each index type is built once from the cached embeddings through ``DenseRetriever.from_documents``
(build seconds: read the shards, train, add) and saved; the table reports per search setting:

- recall@10: the share of the exact (flat) top-10 the index returns, averaged over the queries;
- ms/query: FAISS search latency, one query at a time, p50 and mean over every query after a
  warm-up, on ``--threads`` threads (query encoding excluded: the same for every index);
- disk: size of the saved ``index.faiss``;
- RSS: growth of the resident memory of a fresh process after reading the index file the way
  ``DenseRetriever.load`` does (``mmap=False`` / ``mmap=True``, i.e. ``faiss.IO_FLAG_MMAP_IFC``),
  and after it searched every query (index only: the model and the documents are left out, they
  are the same for every index type).

Latency, results and RSS come from one fresh subprocess per index and load mode; the mmap
process must return the same top-10 lists as the normal one (checked, recorded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eval.common import (
    DEFAULT_SHARED,
    add_limit_arg,
    add_output_args,
    rss_mb,
    run_cli,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

K = 10


def load_units(data: str | Path, unit: str = "sentence", limit: int | None = None) -> list[Any]:
    """The corpus as ragprune Documents: one per sentence (id ``<doc id>#<n>``) or per abstract."""
    from ragprune.text import split_sentences
    from ragprune.types import Document

    out: list[Any] = []
    with open(Path(data) / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if unit == "passage":
                out.append(Document(id=str(row["_id"]), text=row["text"], title=row.get("title", "")))
            else:
                out.extend(Document(id=f"{row['_id']}#{j}", text=s)
                           for j, s in enumerate(split_sentences(row["text"])) if s.strip())
            if limit is not None and len(out) >= limit:
                return out[:limit]
    return out


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: read the index (mmap or not), search every query one at a time under
    each search setting; report RSS growth, latencies and the top-10 ids (saved to ``spec['ids']``)."""
    import faiss
    import numpy as np

    from ragprune.retrieve.dense import _read_faiss_index

    faiss.omp_set_num_threads(spec["threads"])
    queries = np.load(spec["queries"])
    base = rss_mb()
    t = time.perf_counter()
    idx = _read_faiss_index(faiss, Path(spec["index"]), spec["mmap"])
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    out: dict[str, Any] = {"load_s": load_s, "rss_load_mb": after_load - base, "settings": []}
    ids_all = []
    for setting in spec["settings"]:
        if "nprobe" in setting:
            idx.nprobe = setting["nprobe"]
        if "ef_search" in setting:
            idx.hnsw.efSearch = setting["ef_search"]
        for i in range(min(spec["warmup"], len(queries))):
            idx.search(queries[i:i + 1], K)
        best = np.full(len(queries), np.inf)
        ids = np.empty((len(queries), K), dtype=np.int64)
        clock = time.perf_counter
        for _ in range(spec["repeats"]):
            for i in range(len(queries)):
                t = clock()
                _, row = idx.search(queries[i:i + 1], K)
                best[i] = min(best[i], clock() - t)
                ids[i] = row[0]
        times = best.tolist()
        ids_all.append(ids)
        out["settings"].append({"p50_ms": statistics.median(times) * 1e3, "mean_ms": statistics.mean(times) * 1e3})
    out["rss_queries_mb"] = rss_mb() - base
    np.save(spec["ids"], np.stack(ids_all))
    return out


def _run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    code = "import json,sys; from eval.dense_scale import worker; print(json.dumps(worker(json.loads(sys.argv[1]))))"
    p = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], check=False)
    if p.returncode != 0:
        raise RuntimeError(f"eval.dense_scale: worker failed on {spec['index']}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _configs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], list[dict[str, int]]]]:
    """(index type, build options, search settings)."""
    return [
        ("flat", {}, [{}]),
        ("hnsw", {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction},
         [{"ef_search": e} for e in args.ef_search]),
        ("ivf", {"nlist": args.nlist}, [{"nprobe": p} for p in args.nprobe]),
    ] + [("ivfpq", {"nlist": args.nlist, "pq_m": m, "pq_bits": args.pq_bits}, [{"nprobe": p} for p in args.nprobe_pq])
         for m in args.pq_m]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import numpy as np
    import torch

    from ragprune.retrieve.dense import DenseRetriever, load_sentence_transformer

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.encode_threads)
    cache = Path(args.cache_dir)
    shard_dir = cache / f"shards-{args.unit}"
    docs = load_units(args.data, args.unit, args.limit)
    with open(Path(args.data) / "queries.jsonl", encoding="utf-8") as f:
        query_texts = [json.loads(line)["text"] for line in f if line.strip()]
    if args.query_limit is not None:
        query_texts = query_texts[: args.query_limit]
    model = load_sentence_transformer(args.model, device="cpu")

    before = {f.name: f.stat().st_mtime_ns for f in shard_dir.glob("shard-*.json")} if shard_dir.is_dir() else {}
    rows: list[dict[str, Any]] = []
    exact: Any = None
    queries_file: Path | None = None
    encode: dict[str, Any] = {}
    for kind, build_kw, settings in _configs(args):
        t = time.perf_counter()
        r = DenseRetriever.from_documents(docs, model, index=kind, shard_dir=shard_dir, shard_size=args.shard_size,
                                          show_progress=kind == "flat", **{k: v for k, v in build_kw.items() if v is not None})
        build_s = time.perf_counter() - t
        if queries_file is None:  # first build: it encoded whatever the cache lacked
            after = {f.name: f.stat().st_mtime_ns for f in shard_dir.glob("shard-*.json")}
            fresh = sum(1 for name in after if before.get(name) != after[name])
            encode = {"shards": -(-len(docs) // args.shard_size), "shard_size": args.shard_size,
                      "shards_encoded_this_run": fresh, "seconds_this_run": build_s if fresh else 0.0}
            key = hashlib.sha256(json.dumps([args.model, query_texts]).encode("utf-8")).hexdigest()[:16]
            queries_file = cache / f"queries-{key}.npy"
            if not queries_file.exists():
                tmp = cache / f".queries-{key}.tmp.npy"
                np.save(tmp, r.encode_queries(query_texts))
                os.replace(tmp, queries_file)
        name = kind + (f"-m{build_kw['pq_m']}" if kind == "ivfpq" and build_kw.get("pq_m") else "")
        path = cache / f"index-{args.unit}-{name}"
        r.save(path)
        data_dir = path / json.loads((path / "manifest.json").read_text(encoding="utf-8"))["data"]
        index_file = data_dir / "index.faiss"
        disk_mb = index_file.stat().st_size / 2**20
        built = {k: v for k, v in (("nlist", r.nlist), ("pq_m", r.pq_m), ("pq_bits", r.pq_bits)) if v is not None}
        del r
        results = {}
        for mmap in (False, True):
            spec = {"index": str(index_file), "mmap": mmap, "queries": str(queries_file), "settings": settings,
                    "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats, "ids": str(cache / f"ids-{name}-{int(mmap)}.npy")}
            results[mmap] = _run_worker(spec)
            results[mmap]["ids"] = np.load(spec["ids"])
        same = bool((results[False]["ids"] == results[True]["ids"]).all())
        if exact is None:
            exact = results[False]["ids"][0]
        for j, setting in enumerate(settings):
            ids = results[False]["ids"][j]
            recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, exact)]))
            rows.append({"index": kind, **{k: v for k, v in build_kw.items() if v is not None}, **built, **setting, "recall@10": recall,
                         "p50_ms": results[False]["settings"][j]["p50_ms"],
                         "mean_ms": results[False]["settings"][j]["mean_ms"],
                         "mmap_p50_ms": results[True]["settings"][j]["p50_ms"],
                         "build_s": build_s, "disk_mb": disk_mb,
                         "load_s": results[False]["load_s"], "mmap_load_s": results[True]["load_s"],
                         "rss_load_mb": results[False]["rss_load_mb"], "mmap_rss_load_mb": results[True]["rss_load_mb"],
                         "rss_queries_mb": results[False]["rss_queries_mb"],
                         "mmap_rss_queries_mb": results[True]["rss_queries_mb"], "mmap_same_results": same})
    dim = int(np.load(queries_file, mmap_mode="r").shape[1]) if queries_file else None
    return {"benchmark": "dense_scale", "dataset": f"{Path(args.data).name} ({args.unit}s)", "vectors": len(docs),
            "dim": dim, "queries": len(query_texts), "k": K, "model": args.model, "faiss": faiss.__version__,
            "threads": args.threads, "cpu_count": os.cpu_count(), "encode": encode, "rows": rows}


def _fmt(v: Any, digits: int = 2) -> str:
    return f"{v:,.{digits}f}" if isinstance(v, float) else str(v)


def print_table(result: dict[str, Any]) -> None:
    print(f"## dense indexes on {result['dataset']}: {result['vectors']:,} x {result['dim']}-d vectors, "
          f"{result['queries']:,} queries, top-{result['k']}, faiss {result['faiss']}, {result['threads']} thread(s)")
    print("| index | settings | recall@10 | p50 ms/query (mmap) | mean ms/query | build s | disk MB | "
          "RSS after load MB (mmap) | RSS after all queries MB (mmap) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        settings = ", ".join(f"{k}={r[k]}" for k in ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe",
                                                      "pq_m", "pq_bits") if k in r)
        print(f"| {r['index']} | {settings} | {r['recall@10']:.4f} | {_fmt(r['p50_ms'], 3)} ({_fmt(r['mmap_p50_ms'], 3)}) | "
              f"{_fmt(r['mean_ms'], 3)} | {_fmt(r['build_s'], 1)} | {_fmt(r['disk_mb'], 1)} | "
              f"{_fmt(r['rss_load_mb'], 1)} ({_fmt(r['mmap_rss_load_mb'], 1)}) | "
              f"{_fmt(r['rss_queries_mb'], 1)} ({_fmt(r['mmap_rss_queries_mb'], 1)}) |")
    if not all(r["mmap_same_results"] for r in result["rows"]):
        print("WARNING: a memory-mapped index returned other results than the same index read normally")


def _int_list(v: str) -> list[int]:
    return [int(x) for x in v.split(",") if x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.dense_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_SHARED / "beir_scifact", help="a BEIR folder")
    p.add_argument("--unit", choices=("sentence", "passage"), default="sentence", help="what one vector embeds")
    add_limit_arg(p, help="corpus units (first N)")
    p.add_argument("--query-limit", type=int, default=None, metavar="N", help="first N queries (default: all)")
    p.add_argument("--model", default="minilm")
    p.add_argument("--shard-size", type=int, default=5000)
    p.add_argument("--cache-dir", type=Path, default=Path("runs/dense_scale"),
                   help="embedding shards, query embeddings and the built indexes")
    p.add_argument("--threads", type=int, default=1, help="FAISS threads (build and search)")
    p.add_argument("--encode-threads", type=int, default=2, help="torch threads while encoding")
    p.add_argument("--warmup", type=int, default=50, help="queries searched before timing each setting")
    p.add_argument("--repeats", type=int, default=3,
                   help="passes over the queries per setting; a query's time is its fastest pass")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=_int_list, default=[16, 64, 128], help="comma-separated")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: ragprune's default_nlist)")
    p.add_argument("--nprobe", type=_int_list, default=[1, 4, 16, 64], help="IVF, comma-separated")
    p.add_argument("--nprobe-pq", type=_int_list, default=[16, 64], help="IVF-PQ, comma-separated")
    p.add_argument("--pq-m", type=_int_list, default=[48, 96],
                   help="IVF-PQ sub-quantizers, comma-separated, each a divisor of the dimension (48 = "
                        "ragprune's default for 384-d: 48 bytes per vector; 96: 96 bytes)")
    p.add_argument("--pq-bits", type=int, default=8)
    add_output_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.dense_scale", argv, parse_args, run, print_table, keep=("threads",))  # threads change timings


if __name__ == "__main__":
    sys.exit(main())
