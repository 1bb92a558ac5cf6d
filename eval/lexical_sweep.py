"""Choose ProvencePruner's ``lexical_weight`` on development data (never the held-out splits).

    python -m eval.lexical_sweep --dataset scifact --split dev --json eval/results/lexical_sweep_scifact_dev.json
    python -m eval.lexical_sweep --dataset squad --split train --limit 200 --json eval/results/lexical_sweep_squad_train.json

One model pass per question, then every weight ``a`` of ``--weights`` is read from it
(``w_p * ((1 - a) * p + a * bm25 / bm25_max)``, see ragprune.prune.provence). F2 is compared at
one compression for all weights: the one threshold 0.1 gives with ``a = 0`` (the model alone),
interpolated on each weight's threshold sweep, as eval.pruning does for the baselines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from eval.common import add_limit_arg, add_output_args, add_shared_arg, run_cli
from eval.pruning import (
    PROVENCE_THRESHOLDS,
    compression_at_recall,
    curve,
    interpolate,
    quantile_thresholds,
)
from eval.pruning_data import DATASETS, load_pruning_set
from ragprune.text import count_tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.lexical_sweep", description=__doc__.split("\n\n")[0])
    add_shared_arg(p)
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--split", choices=("train", "dev"), required=True, help="never the held-out split")
    add_limit_arg(p, help="questions sampled (seeded)")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 0.85, 1.0])
    p.add_argument("--provence", default="ragprune-provence")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p)
    args = p.parse_args(argv)
    if any(not 0 <= w <= 1 for w in args.weights):
        p.error("--weights must be in [0, 1]")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ragprune.prune.provence import ProvencePruner

    torch.set_num_threads(2)
    qs = load_pruning_set(args.shared, args.dataset, args.split, limit=args.limit, seed=args.seed)
    tokens = [[np.array([count_tokens(p.document.text[a:b]) for a, b in p.spans]) for p in q.passages] for q in qs]
    pruner = ProvencePruner(args.provence, max_length=512, lexical_weight=0.0)
    reads = []
    for q in qs:
        docs, spans = [p.document for p in q.passages], [list(p.spans) for p in q.passages]
        reads.append((pruner.infer([q.query] * len(docs), docs, spans), pruner.lexical_scores(q.query, docs, spans)))
    rows, ref = [], None
    for a in sorted(set(args.weights) | {0.0}):
        pruner.lexical_weight = a
        scores = [pruner.weighted(raw, lex) for raw, lex in reads]
        pts = curve(qs, scores, sorted(set(quantile_thresholds(scores)) | set(PROVENCE_THRESHOLDS)), tokens)
        if ref is None:  # a = 0 comes first
            ref = next(p for p in pts if p["threshold"] == 0.1)["compression"]
        rows.append({"lexical_weight": a, "f2@ref": interpolate(pts, ref, "f2"),
                     "recall@50%": interpolate(pts, 0.5, "recall"),
                     "compression@recall0.95": compression_at_recall(pts, 0.95)})
    return {"dataset": args.dataset, "split": args.split, "questions": len(qs), "reference_compression": ref,
            "rows": rows}


def print_table(r: dict[str, Any]) -> None:
    print(f"## {r['dataset']} {r['split']} ({r['questions']} questions); F2 at compression "
          f"{r['reference_compression']:.3f} (threshold 0.1 with lexical_weight 0)")
    print("| lexical_weight | F2@ref | recall@50% | max compression with recall >= 0.95 |")
    print("|---|---|---|---|")
    for row in r["rows"]:
        print(f"| {row['lexical_weight']:g} | {row['f2@ref']:.3f} | {row['recall@50%']:.3f} | "
              f"{row['compression@recall0.95']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.lexical_sweep", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
