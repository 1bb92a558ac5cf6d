"""BM25 at scale: ragprune vs bm25s on synthetic corpora of growing size, side by side in one run.

    python -m eval.scale --data ../shared/data/beir_scifact --json eval/results/scale.json \\
        --plot eval/results/scale.png

Corpus: passages of about 60 words made of SciFact sentences drawn at random (seeded), written
once per size as JSON lines under ``--cache-dir`` (default ``runs/scale``). Every measurement
runs in a fresh Python process, so peak memory is that process's own (``VmHWM``, which
includes the interpreter and the imported libraries: the ``baseline`` column is the RSS of
the same process before it touched the index).

- build: ragprune ``BM25Retriever.build(corpus.jsonl, dir)`` (streams the file, bounded memory)
  vs bm25s as its README builds and saves an index with its corpus (``bm25s.tokenize`` with
  English stopwords and PyStemmer, ``BM25().index``, ``save(dir, corpus=corpus)``; bm25s
  tokenises a list of texts, so the corpus is read into memory first). Time, peak RSS, size
  on disk (index plus documents, both libraries).
- load and query: ``load(dir, mmap=True)`` (bm25s: ``BM25.load(dir, mmap=True,
  load_corpus=True)``) and the same without mmap: load time, RSS after load, per-query
  latency one query at a time (SciFact test claims, tokenisation and fetching the top-10
  documents included), RSS after the queries.
- quality: SciFact test nDCG@10 of the in-memory index and of the streamed-and-mmapped one.
- extrapolation: a straight line fitted through the sizes >= 300k of each curve, read at
  MS MARCO passage's 8.8M; it assumes memory grows linearly with passages at this passage
  length (true of postings; the vocabulary of SciFact sentences saturates, MS MARCO's would
  keep growing: its term dictionary is a few hundred MB more).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eval.common import add_data_arg, add_output_args, rss_mb, run_cli

log = logging.getLogger("eval.scale")

LIBRARIES = ("ragprune", "bm25s")
MSMARCO = 8_841_823
WORDS_PER_PASSAGE = 60


# ------------------------------------------------------------------------------------------ corpus


def _sentences(data: Path) -> list[str]:
    from ragprune.datasets import load_beir

    ds = load_beir(data, "test")
    out = []
    for d in ds.corpus:
        out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", d.text) if len(s.split()) >= 4)
    return out


def make_corpus(data: Path, n: int, path: Path, seed: int = 0) -> Path:
    """``n`` passages of about 60 words of random SciFact sentences, as JSON lines (cached)."""
    if path.is_file():
        return path
    sents = _sentences(data)
    lengths = [len(s.split()) for s in sents]
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n):
            words, parts = 0, []
            while words < WORDS_PER_PASSAGE:
                j = rng.randrange(len(sents))
                parts.append(sents[j])
                words += lengths[j]
            f.write(json.dumps({"_id": f"p{i}", "title": "", "text": " ".join(parts)}) + "\n")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------ children


def _child_build(lib: str, corpus: Path, out: Path) -> dict[str, Any]:
    if lib == "ragprune":
        from ragprune import BM25Retriever

        base = rss_mb()
        t = time.perf_counter()
        BM25Retriever.build(corpus, out, show_progress=False)
    else:
        import bm25s
        import Stemmer

        base = rss_mb()
        t = time.perf_counter()
        with open(corpus, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        tokens = bm25s.tokenize([r["text"] for r in rows], stopwords="en", stemmer=Stemmer.Stemmer("english"),
                                show_progress=False)
        r = bm25s.BM25()
        r.index(tokens, show_progress=False)
        r.save(out, corpus=rows, show_progress=False)
    return {"seconds": time.perf_counter() - t, "peak_rss_mb": rss_mb("VmHWM"), "baseline_mb": base}


def _child_query(lib: str, index: Path, queries: list[str], mmap: bool) -> dict[str, Any]:
    if lib == "ragprune":
        from ragprune import BM25Retriever

        base = rss_mb()
        t = time.perf_counter()
        r = BM25Retriever.load(index, mmap=mmap)

        def search(q: str) -> list[str]:
            return [h.document.text for h in r.retrieve(q, k=10)]
    else:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        base = rss_mb()
        t = time.perf_counter()
        r = bm25s.BM25.load(index, mmap=mmap, load_corpus=True, show_progress=False)

        def search(q: str) -> list[str]:
            toks = bm25s.tokenize(q, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)
            docs, _ = r.retrieve(toks, k=10, show_progress=False, n_threads=1)
            return [d["text"] for d in docs[0]]
    load_s = time.perf_counter() - t
    rss_load = rss_mb()
    for q in queries[:10]:  # warm-up
        search(q)
    times = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - t) * 1000)
    return {"load_s": load_s, "baseline_mb": base, "rss_after_load_mb": rss_load, "rss_after_queries_mb": rss_mb(),
            "p50_ms": statistics.median(times), "mean_ms": statistics.fmean(times)}


def _run_child(*argv: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "eval.scale", "--child", *argv], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(f"eval.scale: child {argv[:2]} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# ------------------------------------------------------------------------------------------ run


def _ndcg(data: Path) -> dict[str, float]:
    """SciFact test nDCG@10: in-memory index, streamed build loaded with mmap (same numbers), and
    float16 scores; plus the size on disk of the float32 and float16 indexes."""
    import tempfile

    from ragprune import BM25Retriever
    from ragprune.datasets import load_beir
    from ragprune.metrics import evaluate_run, run_from_hits

    ds = load_beir(data, "test")
    qids = list(ds.queries)
    qs = [ds.queries[q] for q in qids]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        mapped = BM25Retriever.build(ds.corpus, Path(tmp) / "idx", show_progress=False, mmap=True)
        half = BM25Retriever.build(ds.corpus, Path(tmp) / "idx16", show_progress=False, score_dtype="float16")
        for name, r in (("in-memory", BM25Retriever.from_documents(ds.corpus)), ("built, mmap", mapped),
                        ("float16 scores", half)):
            hits = r.retrieve_many(qs, k=100)
            out[name] = round(evaluate_run(ds.qrels, run_from_hits(qids, hits))["ndcg@10"], 4)
        for name in ("idx", "idx16"):  # the postings only: documents are the same in both
            size = sum(f.stat().st_size for f in (Path(tmp) / name).rglob("*.npy") if "offsets" not in f.name)
            out[f"{name} postings MB"] = round(size / 2**20, 2)
    return out


def _fit(rows: list[dict[str, Any]], lib: str, key: str) -> float | None:
    """A least-squares line through the sizes >= 300k, read at 8.8M passages."""
    pts = [(r["passages"], r[lib][key]) for r in rows if r["passages"] >= 300_000 and r[lib].get(key) is not None]
    if len(pts) < 2:
        return None
    xs, ys = zip(*pts)
    slope, intercept = statistics.linear_regression(xs, ys)
    return round(slope * MSMARCO + intercept, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragprune.datasets import load_beir

    work = args.cache_dir
    ds = load_beir(args.data, "test")
    queries = list(ds.queries.values())[: args.limit]
    qfile = work / "queries.json"
    work.mkdir(parents=True, exist_ok=True)
    qfile.write_text(json.dumps(queries), encoding="utf-8")
    rows = []
    for n in args.sizes:
        corpus = make_corpus(args.data, n, work / f"corpus_{n}.jsonl")
        row: dict[str, Any] = {"passages": n, "corpus_mb": round(corpus.stat().st_size / 2**20, 1)}
        for lib in LIBRARIES:
            idx = work / f"{lib}_{n}"
            shutil.rmtree(idx, ignore_errors=True)
            log.info("%s: building %d passages", lib, n)
            res = {"build": _run_child("build", lib, str(corpus), str(idx))}
            res["disk_mb"] = _disk_mb(idx)
            for mmap in (True, False):
                res["mmap" if mmap else "in_memory"] = _run_child("query", lib, str(idx), str(qfile), str(int(mmap)))
            flat = {"build_s": res["build"]["seconds"], "build_peak_mb": res["build"]["peak_rss_mb"],
                    "disk_mb": res["disk_mb"]}
            for mode in ("mmap", "in_memory"):
                m = res[mode]
                flat.update({f"{mode}_load_s": m["load_s"], f"{mode}_rss_mb": m["rss_after_load_mb"],
                             f"{mode}_rss_queried_mb": m["rss_after_queries_mb"], f"{mode}_p50_ms": m["p50_ms"],
                             f"{mode}_baseline_mb": m["baseline_mb"]})
            row[lib] = {k: round(v, 4 if k.endswith("_s") or k.endswith("_ms") else 1) for k, v in flat.items()}
            shutil.rmtree(idx, ignore_errors=True)
        rows.append(row)
        log.info("%s", json.dumps(row))
    keys = ("build_peak_mb", "disk_mb", "mmap_rss_queried_mb", "in_memory_rss_mb")
    extrapolation = {lib: {k: _fit(rows, lib, k) for k in keys} for lib in LIBRARIES}
    result = {"rows": rows, "extrapolated_to_8.8M": extrapolation, "scifact_ndcg@10": _ndcg(args.data),
              "queries": len(queries)}
    if args.plot:
        _plot(rows, args.plot)
    return result


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("build_peak_mb", "peak RSS while building (MB)"), ("disk_mb", "index + documents on disk (MB)"),
              ("mmap_rss_queried_mb", "RSS, mmap load + queries (MB)"), ("mmap_p50_ms", "query p50, mmap (ms)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    xs = [r["passages"] for r in rows]
    for ax, (key, title) in zip(axes, panels):
        for lib, style in zip(LIBRARIES, ("o-", "s--")):
            ax.plot(xs, [r[lib][key] for r in rows], style, label=lib)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("passages")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def print_table(result: dict[str, Any]) -> None:
    cols = ["build_s", "build_peak_mb", "disk_mb", "mmap_load_s", "mmap_rss_queried_mb", "mmap_p50_ms",
            "in_memory_load_s", "in_memory_rss_mb", "in_memory_p50_ms"]
    print("| passages | library | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for r in result["rows"]:
        for lib in LIBRARIES:
            print(f"| {r['passages']:,} | {lib} | " + " | ".join(str(r[lib][c]) for c in cols) + " |")
    print("extrapolated to 8.8M passages (MB):", json.dumps(result["extrapolated_to_8.8M"]))
    print("SciFact nDCG@10:", json.dumps(result["scifact_ndcg@10"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.scale", description=__doc__.split("\n\n")[0])
    add_data_arg(p, "BEIR SciFact folder (sentences for the corpus, test claims as queries)",
                 default=Path("../shared/data/beir_scifact"))
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000, 2_000_000])
    p.add_argument("--limit", type=int, default=300, help="queries timed per index")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/scale"), help="corpora and indexes (large)")
    add_output_args(p, plot=True)
    return p.parse_args(argv)


def _child_main(argv: list[str]) -> int:
    kind, lib, *rest = argv
    if kind == "build":
        out = _child_build(lib, Path(rest[0]), Path(rest[1]))
    else:
        queries = json.loads(Path(rest[1]).read_text(encoding="utf-8"))
        out = _child_query(lib, Path(rest[0]), queries, bool(int(rest[2])))
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child_main(argv[1:])
    return run_cli("eval.scale", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
