"""End-to-end demo on SciFact: ``make demo`` / ``python -m ragprune.demo --data DIR``.

Builds a BM25 index of the SciFact corpus (saved and reloaded, as a user would), then runs a
handful of real SciFact test claims through retrieve -> rerank (the shipped cross-encoder)
-> prune (the shipped Provence-style pruner) -> one token budget, and prints every final
context with its compression and per-stage timings. A stage whose shipped model is missing
is skipped with a note, so the demo always runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _optional(name: str, make):
    try:
        return make()
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"  ({name} skipped: {e})")
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ragprune.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/beir_scifact"), help="SciFact in BEIR layout")
    p.add_argument("--queries", type=int, default=5, help="how many test claims to run")
    p.add_argument("--candidates", type=int, default=50, help="BM25 candidates reranked per claim")
    p.add_argument("--top-k", type=int, default=5, help="documents pruned per claim")
    p.add_argument("--max-tokens", type=int, default=300, help="token budget of each final context")
    args = p.parse_args(argv)

    import torch

    from ragprune import BM25Retriever, CrossEncoderReranker, Pipeline, ProvencePruner
    from ragprune.datasets import load_beir

    torch.set_num_threads(2)
    try:
        ds = load_beir(args.data, "test")
    except (FileNotFoundError, ValueError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    bm25 = BM25Retriever.from_documents(ds.corpus)
    t_index = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        bm25.save(Path(tmp) / "scifact-bm25")
        bm25 = BM25Retriever.load(Path(tmp) / "scifact-bm25")
    print(f"indexed {len(ds.corpus)} SciFact abstracts in {t_index:.2f}s: {bm25!r}")
    t = time.perf_counter()
    reranker = _optional("reranker", lambda: CrossEncoderReranker(first_stage_weight="recommended"))
    pruner = _optional("pruner", lambda: ProvencePruner(threshold=0.1))
    print(f"loaded models in {time.perf_counter() - t:.2f}s: {reranker!r}, {pruner!r}\n")
    pipe = Pipeline(bm25, reranker, pruner, max_tokens=args.max_tokens, candidates=args.candidates, top_k=args.top_k)

    for qid in list(ds.queries)[: args.queries]:
        ctx = pipe.run(ds.queries[qid])
        s = ctx.stats
        gold = [d.id for d in ctx.documents if ds.qrels[qid].get(d.id, 0) > 0]
        print(f"claim {qid}: {ctx.query}")
        print(f"  retrieve {1000 * s['seconds_retrieve']:.0f} ms | rerank {1000 * s['seconds_rerank']:.0f} ms | "
              f"prune {1000 * s['seconds_prune']:.0f} ms | budget {1000 * s['seconds_budget']:.1f} ms")
        print(f"  {int(s['tokens_candidates'])} tokens in the top {args.top_k} documents -> {int(s['tokens_final'])} "
              f"in the context ({s['compression']:.0%} removed); judged-relevant documents kept: {gold or 'none'}")
        for line in ctx.text.splitlines():
            print(f"    {line}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
