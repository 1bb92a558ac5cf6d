"""Which evidence sentences does the Provence pruner miss, and why? One line per gold sentence.

    python -m eval.pruning_misses --dataset hotpotqa --json eval/results/pruning_misses_hotpotqa.json

For every evidence sentence of a split (default HotpotQA held-out) it prints the parts of the
pruner's score: the passage's ranking logit and weight (:func:`passage_weights`), the token
head's keep probability, the normalized BM25 sentence score, the fused one-hop score and the
``--hops`` reading's score. A sentence is *missed* by a reading when its score is below that
reading's threshold at ``--compression``: the global threshold that removes that share of tokens
over the whole split, sentences kept best first (``eval.pruning`` interpolates between its
thresholds instead, so the two can differ by a sentence). The summary counts the misses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from eval.common import (
    add_limit_arg,
    add_output_args,
    add_shared_arg,
    outputs_refused,
    save_results,
)
from eval.pruning_data import DATASETS, PruningQuestion, load_pruning_set
from ragprune.text import count_tokens


def threshold_at(questions: list[PruningQuestion], scores: list[list[np.ndarray]], compression: float) -> float:
    """The score threshold that removes ``compression`` of all tokens (sentences kept best first)."""
    flat = np.concatenate([s for qs in scores for s in qs])
    tokens = np.concatenate([[count_tokens(p.document.text[a:b]) for a, b in p.spans]
                             for q in questions for p in q.passages]).astype(float)
    order = np.argsort(-flat, kind="stable")
    kept = np.cumsum(tokens[order]) <= (1.0 - compression) * tokens.sum()
    return float(flat[order][kept].min()) if kept.any() else float("inf")


def readings(pruner: Any, questions: list[PruningQuestion], hops: int) -> list[dict[str, Any]]:
    """Per question: the model pass, the lexical scores and the one-hop and ``hops`` readings."""
    from ragprune.prune.provence import passage_weights

    out = []
    for q in questions:
        docs, spans = [p.document for p in q.passages], [list(p.spans) for p in q.passages]
        raw = pruner.infer([q.query] * len(docs), docs, spans)
        lex = pruner.lexical_scores(q.query, docs, spans)
        out.append({"raw": raw, "lex": lex, "weights": passage_weights([r for r, _ in raw], pruner.passage_weighting),
                    "hop1": pruner.group_scores(q.query, docs, spans, raw, hops=1, lexical=lex),
                    "hopN": pruner.group_scores(q.query, docs, spans, raw, hops=hops, lexical=lex)})
    return out


def evidence_rows(questions: list[PruningQuestion], reads: list[dict[str, Any]], cut1: float, cutn: float
                  ) -> list[dict[str, Any]]:
    rows = []
    for q, r in zip(questions, reads):
        for i, p in enumerate(q.passages):
            for j, label in enumerate(p.labels):
                if not label:
                    continue
                a, b = p.spans[j]
                rows.append({"question": q.id, "query": q.query, "title": p.document.title,
                             "sentence": p.document.text[a:b], "rank_logit": float(r["raw"][i][0]),
                             "passage_weight": float(r["weights"][i]), "token_prob": float(r["raw"][i][1][j]),
                             "lexical": float(r["lex"][i][j]), "score_1hop": float(r["hop1"][i][j]),
                             "score_hops": float(r["hopN"][i][j]), "missed_1hop": bool(r["hop1"][i][j] < cut1),
                             "missed_hops": bool(r["hopN"][i][j] < cutn)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.pruning_misses", description=__doc__.split("\n\n")[0])
    add_shared_arg(p)
    p.add_argument("--dataset", choices=DATASETS, default="hotpotqa")
    p.add_argument("--split", default="heldout", choices=["train", "dev", "heldout"])
    add_limit_arg(p, help="questions sampled (seeded)")
    p.add_argument("--provence", default="ragprune-provence", help="Provence checkpoint")
    p.add_argument("--hops", type=int, default=2, help="the multi-hop reading compared with one hop")
    p.add_argument("--compression", type=float, default=0.5, help="token share removed by the threshold")
    add_output_args(p)
    args = p.parse_args(argv)
    if not 0 < args.compression < 1:
        p.error("--compression must be in (0, 1)")
    if args.hops < 1:
        p.error("--hops must be >= 1")
    if outputs_refused(args, "eval.pruning_misses"):
        return 2
    from ragprune.prune.provence import ProvencePruner

    questions = load_pruning_set(args.shared, args.dataset, args.split, limit=args.limit)
    reads = readings(ProvencePruner(args.provence), questions, args.hops)
    cut1 = threshold_at(questions, [r["hop1"] for r in reads], args.compression)
    cutn = threshold_at(questions, [r["hopN"] for r in reads], args.compression)
    rows = evidence_rows(questions, reads, cut1, cutn)
    print(f"{args.dataset} {args.split}: {len(questions)} questions, {len(rows)} evidence sentences; thresholds at "
          f"{args.compression:.0%} compression: 1 hop {cut1:.4f}, {args.hops} hops {cutn:.4f}")
    print("| missed (1 hop / hops) | rank logit | passage weight | token prob | lexical | score 1 hop | score hops "
          "| title: sentence |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        flag = f"{'x' if r['missed_1hop'] else '.'} / {'x' if r['missed_hops'] else '.'}"
        print(f"| {flag} | {r['rank_logit']:.2f} | {r['passage_weight']:.3f} | {r['token_prob']:.3f} | "
              f"{r['lexical']:.2f} | {r['score_1hop']:.4f} | {r['score_hops']:.4f} | "
              f"{r['title']}: {r['sentence'][:70]} |")
    summary = {"missed_1hop": sum(r["missed_1hop"] for r in rows), "missed_hops": sum(r["missed_hops"] for r in rows),
               "evidence": len(rows), "threshold_1hop": cut1, "threshold_hops": cutn}
    print(f"missed: 1 hop {summary['missed_1hop']}/{len(rows)}, {args.hops} hops {summary['missed_hops']}/{len(rows)}")
    save_results(args, {"dataset": args.dataset, "split": args.split, "provence": args.provence, "hops": args.hops,
                        "compression": args.compression, "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
