"""Sentence pruning quality on held-out splits: evidence recall vs token compression.

    python -m eval.pruning --json eval/results/pruning.json --plot eval/results/pruning.png

Datasets (eval.pruning_data, held-out splits): SciFact claims_dev with evidence
(188 claims, 5 passages each: evidence abstracts + BM25 negatives), SQuAD v1.1 dev articles
32-39 (gold paragraph + 4 BM25-nearest paragraphs of the same article; ``--limit`` questions,
fixed seed), HotpotQA distractor questions 58-72 (their 10 paragraphs). Sentences are the gold
segmentation (SciFact/HotpotQA) or blingfire's (SQuAD); every method scores the same
sentences.

Methods: keep-all, random, lead-k, BM25 sentence scores, MiniLM cosine, the Provence pruner
(``--provence``, default the shipped model; skipped if absent) and the oracle (gold labels).
Provence is reported in several readings of one model pass: ``provence`` (the defaults:
passage weighting ``--passage-weighting`` and lexical fusion ``--lexical-weight``), and the
ablations ``provence-no-lexical`` (passage-weighted token head, lexical weight 0),
``provence-tokens-only`` (the token head alone) and ``provence-lexical-only`` (passage-weighted
BM25 sentence scores, lexical weight 1); with ``--hops 2`` also ``provence-2hop`` (the
multi-hop reading, ``ProvencePruner(hops=2)``: a second model pass).
Each method's sentence scores are swept over thresholds (quantiles of its scores; Provence
also its fixed thresholds 0.005-0.9); every point reports micro-averaged
evidence recall and precision, F2, token compression over all passages, and (SQuAD, HotpotQA)
answer containment: the share of questions whose gold answer string is still in the kept text.
The summary compares methods at the Provence operating point (threshold 0.1) by interpolating
each baseline's curve at the same compression.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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
from ragprune.prune.provence import PASSAGE_WEIGHTINGS
from ragprune.text import count_tokens

PROVENCE_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
KEEP_FRACTIONS = tuple(round(x, 2) for x in np.arange(0.05, 1.0001, 0.05))

Scores = list[list[np.ndarray]]  # per question, per passage, per sentence


def score_with(method: Any, questions: list[PruningQuestion]) -> Scores:
    """Every method's ``score_sentences`` over each question's passages (Provence: one batched pass)."""
    return [method.score_sentences(q.query, [p.document for p in q.passages], [list(p.spans) for p in q.passages])
            for q in questions]


def provence_variants(pruner: Any, questions: list[PruningQuestion], hops: Sequence[int] = (1,)
                      ) -> dict[str, Scores]:
    """One model pass, several readings: the pruner's defaults and the ablations (module docstring)."""
    from ragprune.prune.provence import passage_weights

    out: dict[str, Scores] = {"provence": [], "provence-no-lexical": [], "provence-tokens-only": [],
                              "provence-lexical-only": []}
    for h in sorted(set(hops) - {1}):
        out[f"provence-{h}hop"] = []
    for q in questions:
        docs, spans = [p.document for p in q.passages], [list(p.spans) for p in q.passages]
        raw = pruner.infer([q.query] * len(docs), docs, spans)
        lex = pruner.lexical_scores(q.query, docs, spans)
        w = passage_weights([r for r, _ in raw], pruner.passage_weighting)
        out["provence"].append(pruner.group_scores(q.query, docs, spans, raw, hops=1, lexical=lex))
        out["provence-no-lexical"].append(pruner.weighted(raw))
        out["provence-tokens-only"].append([s for _, s in raw])
        out["provence-lexical-only"].append([x * wi for x, wi in zip(lex, w)])
        for h in sorted(set(hops) - {1}):
            out[f"provence-{h}hop"].append(pruner.group_scores(q.query, docs, spans, raw, hops=h, lexical=lex))
    if pruner.lexical_weight == 0:  # the default reading is the no-lexical one
        del out["provence-no-lexical"]
    return out


def metrics_at(questions: list[PruningQuestion], scores: Scores, threshold: float,
               sent_tokens: list[list[np.ndarray]]) -> dict[str, float]:
    kept_gold = gold = kept = kept_tok = total_tok = 0
    contained = with_answer = 0
    for q, qs, qt in zip(questions, scores, sent_tokens):
        texts = []
        for p, s, t in zip(q.passages, qs, qt):
            keep = s >= threshold
            lab = np.asarray(p.labels, dtype=bool)
            kept_gold += int((keep & lab).sum())
            gold += int(lab.sum())
            kept += int(keep.sum())
            kept_tok += int(t[keep].sum())
            total_tok += int(t.sum())
            texts.extend(p.document.text[a:b] for (a, b), k in zip(p.spans, keep) if k)
        if q.answers:
            with_answer += 1
            joined = " ".join(texts).lower()
            contained += any(a.lower() in joined for a in q.answers)
    r = kept_gold / gold if gold else 0.0
    pr = kept_gold / kept if kept else 0.0
    f2 = 5 * pr * r / (4 * pr + r) if pr + r else 0.0
    out = {"threshold": float(threshold), "recall": r, "precision": pr, "f2": f2,
           "compression": 1 - kept_tok / total_tok if total_tok else 0.0}
    if with_answer:
        out["containment"] = contained / with_answer
    return out


def curve(questions: list[PruningQuestion], scores: Scores, thresholds: list[float],
          sent_tokens: list[list[np.ndarray]]) -> list[dict[str, float]]:
    return [metrics_at(questions, scores, t, sent_tokens) for t in thresholds]


def quantile_thresholds(scores: Scores) -> list[float]:
    flat = np.concatenate([s for qs in scores for s in qs if len(s)])
    return sorted({float(np.quantile(flat, 1 - f, method="higher")) for f in KEEP_FRACTIONS})


def interpolate(points: list[dict[str, float]], compression: float, key: str) -> float:
    pts = sorted(points, key=lambda p: p["compression"])
    xs = np.array([p["compression"] for p in pts])
    ys = np.array([p.get(key, np.nan) for p in pts])
    return float(np.interp(compression, xs, ys))


def compression_at_recall(points: list[dict[str, float]], recall: float) -> float:
    ok = [p["compression"] for p in points if p["recall"] >= recall]
    return max(ok) if ok else 0.0


def build_methods(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    from ragprune.prune import baselines as b

    methods: dict[str, Callable[[], Any]] = {
        "random": lambda: b.RandomPruner(seed=args.seed),
        "lead": lambda: b.LeadPruner(),
        "bm25": lambda: b.BM25SentencePruner(),
        "minilm-cosine": lambda: b.EmbeddingSentencePruner(model="minilm"),
    }
    if args.provence != "none":
        def provence():
            from ragprune.prune.provence import ProvencePruner

            return ProvencePruner(args.provence, max_length=512, quantize=getattr(args, "quantize", None),
                                  passage_weighting=getattr(args, "passage_weighting", "max"),
                                  lexical_weight=getattr(args, "lexical_weight", 0.7))

        methods["provence"] = provence
    return methods


def evaluate_dataset(name: str, args: argparse.Namespace, methods: dict[str, Callable[[], Any]],
                     cache: dict[str, Any]) -> dict[str, Any]:
    questions = load_pruning_set(args.shared, name, "heldout", limit=args.limit if name == "squad" else None,
                                 seed=args.seed)
    sent_tokens = [[np.array([count_tokens(p.document.text[a:b]) for a, b in p.spans]) for p in q.passages]
                   for q in questions]
    curves: dict[str, list[dict[str, float]]] = {
        "keep-all": curve(questions, [[np.ones(len(p.spans)) for p in q.passages] for q in questions], [0.5], sent_tokens),
        "oracle": curve(questions, [[np.asarray(p.labels, float) for p in q.passages] for q in questions], [0.5],
                        sent_tokens),
    }
    seconds: dict[str, float] = {}
    for m, make in methods.items():
        try:
            inst = cache.setdefault(m, make())
        except (FileNotFoundError, ValueError, ImportError) as e:
            print(f"eval.pruning: skipping {m}: {e}", file=sys.stderr)
            continue
        t = time.perf_counter()
        variants = (provence_variants(inst, questions, getattr(args, "hops", (1,))) if m == "provence"
                    else {m: score_with(inst, questions)})
        seconds[m] = (time.perf_counter() - t) / max(1, len(questions))
        for variant, scores in variants.items():
            # Provence: its fixed thresholds (0.1 = the reference) plus the same quantile grid as the baselines
            thresholds = quantile_thresholds(scores)
            if variant.startswith("provence"):
                thresholds = sorted(set(thresholds) | set(PROVENCE_THRESHOLDS))
            curves[variant] = curve(questions, scores, thresholds, sent_tokens)
    summary: dict[str, Any] = {}
    ref = next((p for p in curves.get("provence", []) if p["threshold"] == 0.1), None)
    at = ref["compression"] if ref else 0.5
    for m, pts in curves.items():
        row = {"recall@ref": interpolate(pts, at, "recall"), "f2@ref": interpolate(pts, at, "f2"),
               "recall@50%": interpolate(pts, 0.5, "recall"), "compression@recall0.95": compression_at_recall(pts, 0.95)}
        if "containment" in pts[0]:
            row["containment@ref"] = interpolate(pts, at, "containment")
        if len(pts) == 1:  # single operating point (keep-all, oracle): report it as is
            row = {"recall@ref": pts[0]["recall"], "f2@ref": pts[0]["f2"], "compression": pts[0]["compression"],
                   "compression@recall0.95": compression_at_recall(pts, 0.95)}
            if "containment" in pts[0]:
                row["containment@ref"] = pts[0]["containment"]
        if m in seconds:
            row["seconds_per_question"] = seconds[m]
        summary[m] = row
    return {"dataset": name, "split": "heldout", "questions": len(questions),
            "passages": sum(len(q.passages) for q in questions),
            "gold_sentences": sum(sum(p.labels) for q in questions for p in q.passages),
            "reference_compression": at, "reference": "provence threshold 0.1" if ref else "50% compression",
            "summary": summary, "curves": curves}


def print_tables(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"\n## {r['dataset']} ({r['questions']} questions, {r['passages']} passages, "
              f"{r['gold_sentences']} gold sentences); reference = {r['reference']} "
              f"(compression {r['reference_compression']:.3f})")
        print("| method | recall@ref | F2@ref | containment@ref | recall@50% compr. | max compr. with recall>=0.95 |")
        print("|---|---|---|---|---|---|")
        for m, row in r["summary"].items():
            c = row.get("containment@ref")
            r50 = row.get("recall@50%")
            print(f"| {m} | {row['recall@ref']:.3f} | {row['f2@ref']:.3f} | {'' if c is None else f'{c:.3f}'} | "
                  f"{'' if r50 is None else f'{r50:.3f}'} | {row['compression@recall0.95']:.3f} |")
        prov = [p for p in r["curves"].get("provence", []) if p["threshold"] in PROVENCE_THRESHOLDS]
        if prov:
            print("\nprovence threshold sweep:")
            print("| threshold | recall | precision | F2 | compression | containment |")
            print("|---|---|---|---|---|---|")
            for p in prov:
                c = p.get("containment")
                print(f"| {p['threshold']} | {p['recall']:.3f} | {p['precision']:.3f} | {p['f2']:.3f} | "
                      f"{p['compression']:.3f} | {'' if c is None else f'{c:.3f}'} |")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        for m, pts in r["curves"].items():
            pts = sorted(pts, key=lambda p: p["compression"])
            style = "o" if len(pts) == 1 else "-o"
            ax.plot([p["compression"] for p in pts], [p["recall"] for p in pts], style, ms=3, label=m)
        ax.axhline(0.95, color="grey", lw=0.5, ls="--")
        ax.axvline(0.5, color="grey", lw=0.5, ls="--")
        ax.set_title(f"{r['dataset']} held-out ({r['questions']} q)")
        ax.set_xlabel("token compression")
        ax.set_ylabel("evidence recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.pruning", description=__doc__.split("\n\n")[0])
    add_shared_arg(p)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    add_limit_arg(p, default=300, help="SQuAD questions sampled (seeded)")
    p.add_argument("--provence", default="ragprune-provence", help="Provence checkpoint, or 'none'")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 dynamic quantization of Provence")
    p.add_argument("--passage-weighting", choices=PASSAGE_WEIGHTINGS, default="max",
                   help="ProvencePruner passage_weighting (the token-head-only reading is always reported too)")
    p.add_argument("--lexical-weight", type=float, default=0.7, help="ProvencePruner lexical_weight (BM25 share)")
    p.add_argument("--hops", type=int, nargs="+", default=[1, 2],
                   help="also report these multi-hop readings (ProvencePruner(hops=N)); 1 is always reported")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, plot=True)
    args = p.parse_args(argv)
    if not 0 <= args.lexical_weight <= 1:
        p.error("--lexical-weight must be in [0, 1]")
    if min(args.hops) < 1:
        p.error("--hops values must be >= 1")
    if outputs_refused(args, "eval.pruning"):
        return 2
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    methods = build_methods(args)
    cache: dict[str, Any] = {}
    results = [evaluate_dataset(d, args, methods, cache) for d in args.datasets]
    print_tables(results)
    save_results(args, {"results": results, "seed": args.seed, "limit": args.limit, "provence": args.provence,
                        "passage_weighting": args.passage_weighting, "lexical_weight": args.lexical_weight,
                        "hops": args.hops})
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
