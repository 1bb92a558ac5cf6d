"""Choose the reranker's recommended first-stage weight on the SciFact dev split (never test).

    python -m models.recipes.tune_fusion --model models/ragprune_models/ragprune-reranker-minilm-l6 --candidates 30

Reranks the BM25 top-``candidates`` of the 100 dev claims (the last 100 of claims_train),
sweeps the interpolation weight 0.0-0.9 and writes the best to ``<model>/ragprune.json``
together with the whole sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.recipes.tune_fusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/ragprune_models/ragprune-reranker-minilm-l6"))
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--candidates", type=int, default=30)
    args = p.parse_args(argv)

    from eval.beir import _fuse
    from models.recipes.reranker import RECIPE_BM25, scifact
    from ragprune import BM25Retriever, CrossEncoderReranker
    from ragprune.metrics import evaluate_run, run_from_hits

    sf = scifact(args.shared)
    bm25 = BM25Retriever.from_documents(sf["corpus"], **RECIPE_BM25)
    dev = sf["dev"]
    queries = [sf["queries"][q] for q in dev]
    qrels = {q: sf["qrels"][q] for q in dev}
    first = bm25.retrieve_many(queries, k=args.candidates)
    raw = CrossEncoderReranker(args.model, first_stage_weight=0.0).rerank_many(queries, first)
    sweep = {}
    for w in [round(0.1 * i, 1) for i in range(10)]:
        sweep[str(w)] = round(evaluate_run(qrels, run_from_hits(dev, _fuse(first, raw, w)))["ndcg@10"], 4)
    sweep["bm25"] = round(evaluate_run(qrels, run_from_hits(dev, first))["ndcg@10"], 4)
    best = max((w for w in sweep if w != "bm25"), key=lambda w: sweep[w])
    meta = {"first_stage_weight": float(best),
            "tuned_on": f"SciFact dev (last 100 claims_train), BM25 top-{args.candidates}, nDCG@10",
            "sweep_ndcg@10": sweep}
    (args.model / "ragprune.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
