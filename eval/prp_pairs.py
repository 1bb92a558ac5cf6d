"""How well does an LLM compare two passages? Pair accuracy behind PRP, in both orders.

    python -m eval.prp_pairs --data ../shared/data/msmarco_trecdl_subset/dl19 \
        --run ../shared/data/msmarco_trecdl_subset/dl19/bm25_top100.run --llm qwen2.5-1.5b --limit 20

From the first-stage top ``--top-k`` of each judged query, pairs of one relevant and one
non-relevant passage (a seeded sample, at most one pair per query first) are shown to the LLM
with the PRP prompt in both orders. Reported:

- ``label_accuracy``: both orders name the relevant passage (the paper's rule; an answer that
  flips with the order is a tie, ``label_ties``; ties count as half right in ``label_score``);
- ``position_bias``: share of pairs where both orders chose the same *position*;
- ``margin_accuracy``: the debiased log-probability margin (``decision="margin"``) prefers the
  relevant passage;
- ``gates``: for each confidence gate ``tau`` (``PairwiseReranker(min_margin=tau)``), the share of
  pairs whose ``|margin|`` passes it (``coverage``) and, among those, the share the margin rule
  and the label rule get right. A PRP swap is worth making only where that accuracy is high, so
  run this on training queries (``--split train``) to choose ``--min-margin`` for eval.beir.

This isolates the comparison quality that decides whether PRP can beat its first stage.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.common import (
    add_data_arg,
    add_limit_arg,
    add_llm_args,
    add_output_args,
    llm_from_args,
    run_cli,
)
from ragprune.datasets import load_beir
from ragprune.rerank.pairwise import PROMPTS


def sample_pairs(ds: Any, hits: dict[str, list[str]], n: int, seed: int) -> list[tuple[str, str, str]]:
    """``(query id, relevant doc id, non-relevant doc id)``, spread over queries."""
    rng = random.Random(seed)
    per_query = []
    for qid, ids in hits.items():
        judged = ds.qrels.get(qid, {})
        rel = [d for d in ids if judged.get(d, 0) > 0]
        non = [d for d in ids if d in judged and judged[d] <= 0] or [d for d in ids if d not in judged]
        options = [(qid, r, x) for r in rel for x in non]
        rng.shuffle(options)
        if options:
            per_query.append(options)
    rng.shuffle(per_query)
    out: list[tuple[str, str, str]] = []
    while len(out) < n and any(per_query):
        for options in per_query:
            if options and len(out) < n:
                out.append(options.pop())
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.prp_pairs", description=__doc__.split("\n\n")[0])
    add_data_arg(p, "BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="test")
    p.add_argument("--run", type=Path, default=None, help="TREC run for the candidates (default: our BM25)")
    p.add_argument("--top-k", type=int, default=10)
    add_limit_arg(p, "--pairs", default=20, help="(relevant, non-relevant) pairs sampled (seeded)")
    add_llm_args(p, required=True)
    p.add_argument("--gates", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0],
                   help="min_margin values to report")
    p.add_argument("--max-passage-words", type=int, default=128)
    p.add_argument("--prompt", default="paper", choices=sorted(PROMPTS),
                   help="prompt variant (ragprune.rerank.pairwise.PROMPTS); 'paper' is Qin et al.'s")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p)
    args = p.parse_args(argv)
    for name in ("top_k", "max_passage_words"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragprune.rerank.llm import pick_label
    from ragprune.rerank.pairwise import LABELS
    from ragprune.retrieve.bm25 import BM25Retriever

    ds = load_beir(args.data, args.split)
    qids = [q for q in ds.queries if q in ds.qrels]
    if args.run is not None:
        from eval.beir import read_run

        lists = read_run(args.run, ds, qids, args.top_k)
    else:
        bm25 = BM25Retriever.from_documents(ds.corpus, show_progress=False)
        lists = bm25.retrieve_many([ds.queries[q] for q in qids], k=args.top_k)
    hits = {q: [h.id for h in lst] for q, lst in zip(qids, lists)}
    pairs = sample_pairs(ds, hits, args.limit, args.seed)
    if not pairs:
        raise ValueError("eval.prp_pairs: no (relevant, non-relevant) pair in the top-k of any judged query.")
    docs = {d.id: d for d in ds.corpus}
    llm = llm_from_args(args)

    def cut(doc_id: str) -> str:
        return " ".join(docs[doc_id].full_text.split()[: args.max_passage_words])

    prompt = PROMPTS[args.prompt]
    right = ties = same_position = margin_right = margins = 0
    per_pair: list[dict[str, Any]] = []
    for qid, rel, non in tqdm(pairs, desc="pairs", unit="pair"):
        q = ds.queries[qid]
        first = llm.choose(prompt.format(query=q, a=cut(rel), b=cut(non)), LABELS, answer_prefix="Passage ")
        second = llm.choose(prompt.format(query=q, a=cut(non), b=cut(rel)), LABELS, answer_prefix="Passage ")
        a, b = pick_label(first, LABELS), pick_label(second, LABELS)
        right += a == "A" and b == "B"
        ties += not ((a == "A" and b == "B") or (a == "B" and b == "A"))
        same_position += a is not None and a == b
        lp1, lp2 = first.label_logprobs or {}, second.label_logprobs or {}
        s = None
        if all(k in lp for lp in (lp1, lp2) for k in LABELS):
            margins += 1
            s = (lp1["A"] - lp1["B"]) - (lp2["A"] - lp2["B"])  # > 0: the relevant passage is preferred
            margin_right += s > 0
        per_pair.append({"qid": qid, "relevant": rel, "non_relevant": non, "labels": [a, b],
                         "margin": None if s is None else round(s, 4)})
    n = len(pairs)
    return {"dataset": args.data.name, "llm": getattr(llm, "name", args.llm), "prompt": args.prompt, "pairs": n, "top_k": args.top_k,
            "label_accuracy": round(right / n, 4), "label_ties": round(ties / n, 4),
            "label_score": round((right + 0.5 * ties) / n, 4), "position_bias": round(same_position / n, 4),
            "margin_accuracy": round(margin_right / margins, 4) if margins else None, "pairs_with_logprobs": margins,
            "split": args.split, "gates": gate_table(per_pair, args.gates), "per_pair": per_pair}


def gate_table(per_pair: list[dict[str, Any]], gates: list[float]) -> list[dict[str, Any]]:
    """Coverage and accuracy of comparisons that pass each ``min_margin`` gate."""
    rows = []
    scored = [r for r in per_pair if r["margin"] is not None]
    for tau in gates:
        passed = [r for r in scored if abs(r["margin"]) > tau]
        labels_right = sum(r["labels"] == ["A", "B"] for r in passed)
        labels_wrong = sum(r["labels"] == ["B", "A"] for r in passed)
        rows.append({"min_margin": tau, "coverage": round(len(passed) / len(scored), 4) if scored else None,
                     "margin_accuracy": round(sum(r["margin"] > 0 for r in passed) / len(passed), 4) if passed else None,
                     "labels_right": labels_right, "labels_wrong": labels_wrong, "passed": len(passed)})
    return rows


def print_table(r: dict[str, Any]) -> None:
    print("| dataset | LLM | pairs | label accuracy | label ties | same position both orders | margin accuracy |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {r['dataset']} | {r['llm']} | {r['pairs']} | {r['label_accuracy']:.2f} | {r['label_ties']:.2f} | "
          f"{r['position_bias']:.2f} | {r['margin_accuracy'] if r['margin_accuracy'] is not None else 'n/a'} |")
    print("\n| min_margin | coverage | margin rule right | label rule right / wrong (of passed) |")
    print("|---|---|---|---|")
    for g in r["gates"]:
        print(f"| {g['min_margin']:g} | {g['coverage']} | {g['margin_accuracy']} | "
              f"{g['labels_right']} / {g['labels_wrong']} (of {g['passed']}) |")


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.prp_pairs", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
