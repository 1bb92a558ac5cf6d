"""Recipe for the shipped pruner ``models/ragprune_models/ragprune-provence-minilm-l6``.

    python -m models.recipes.provence data     # sentence-labelled examples -> runs/provence/examples.jsonl
    python -m models.recipes.provence train    # token BCE + 0.5 * relevance BCE, checkpoints + log
    python -m models.recipes.provence export   # fp16 -> models/ragprune_models/ragprune-provence-minilm-l6

Training data: the ``train`` splits of eval.pruning_data (SciFact claims_train minus
its last 100, SQuAD dev articles 0-31, HotpotQA questions 0-57): every gold passage with its
sentence labels, plus hard negatives (BM25-nearest non-evidence passages; HotpotQA
distractors) labelled all-drop, and optionally HotpotQA two-hop readings (``--hotpot-bridge``).
The release is trained in two stages (the model card has both command lines): stage 1 from
the shipped reranker, whose classifier becomes the ranking head; stage 2 from stage 1 with
more negatives, more SQuAD questions and the two-hop readings.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from eval.pruning_data import PruningQuestion, load_pruning_set
from ragprune.prune.train import (
    PrunerTrainConfig,
    PruningExample,
    read_examples,
    train_pruner,
    write_examples,
)


def _bridge_examples(q: PruningQuestion, negs: int) -> list[PruningExample]:
    """HotpotQA two-hop readings: the question plus one supporting sentence of the other gold
    paragraph (what ``ProvencePruner(hops=2)`` appends at inference) against each gold paragraph,
    and against ``negs`` distractors (all-drop)."""
    gold = [p for p in q.passages if p.relevant]
    rest = [p for p in q.passages if not p.relevant]
    out = []
    for i, p in enumerate(gold):
        for other in gold[:i] + gold[i + 1 :]:
            j = other.labels.index(1)
            a, b = other.spans[j]
            query = f"{q.query} {other.document.text[a:b]}"
            for t in [p] + rest[:negs]:
                out.append(PruningExample(query, t.document.title, t.document.text, t.spans, t.labels,
                                          float(t.relevant), "hotpotqa-bridge"))
    return out


def cmd_data(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    examples: list[PruningExample] = []
    counts = {}
    plan = (("scifact", None, args.scifact_negatives, 1), ("squad", args.squad_questions, 1, 1),
            ("hotpotqa", None, args.hotpot_negatives, args.hotpot_repeat))
    for ds, limit, negs, repeat in plan:
        qs = load_pruning_set(args.shared, ds, "train", passages=max(5, 1 + negs), limit=limit, seed=args.seed)
        n0 = len(examples)
        for q in qs:
            gold = [p for p in q.passages if p.relevant]
            rest = [p for p in q.passages if not p.relevant]
            ex = [PruningExample(q.query, p.document.title, p.document.text, p.spans, p.labels, float(p.relevant), ds)
                  for p in gold + rest[:negs]]
            if ds == "hotpotqa" and args.hotpot_bridge:
                ex += _bridge_examples(q, args.hotpot_bridge)
            examples.extend(ex * repeat)
        counts[ds] = len(examples) - n0
    rng.shuffle(examples)
    args.work.mkdir(parents=True, exist_ok=True)
    write_examples(args.work / "examples.jsonl", examples)
    meta = {"examples": counts, "seed": args.seed, "squad_questions": args.squad_questions,
            "scifact_negatives": args.scifact_negatives, "hotpot_negatives": args.hotpot_negatives,
            "hotpot_bridge": args.hotpot_bridge, "hotpot_repeat": args.hotpot_repeat}
    (args.work / "data.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(counts))


def cmd_train(args: argparse.Namespace) -> None:
    cfg = PrunerTrainConfig(lr=args.lr, batch_size=args.batch_size, max_length=args.max_length, epochs=args.epochs,
                            max_steps=args.max_steps, save_every=args.save_every, seed=args.seed, threads=args.threads,
                            rank_weight=args.rank_weight, head_lr_mult=args.head_lr_mult)
    final = train_pruner(read_examples(args.work / "examples.jsonl"), args.init, args.work / "train", cfg)
    print(f"final checkpoint: {final}")


def cmd_export(args: argparse.Namespace) -> None:
    from ragprune._train import latest_checkpoint
    from ragprune.prune.provence import load_provence, save_provence

    ck, step = latest_checkpoint(args.work / "train", marker="provence.json")
    if ck is None:
        raise SystemExit("export: no checkpoint under runs/provence/train; run the train step first.")
    tok, model, _ = load_provence(ck)
    meta = json.loads((ck / "provence.json").read_text())
    save_provence(model, tok, args.dest, fp16=True, extra={k: v for k, v in meta.items() if k not in ("format", "version")})
    print(f"exported {ck} (step {step}) to {args.dest}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m models.recipes.provence", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["data", "train", "export"])
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--work", type=Path, default=Path("runs/provence"))
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--squad-questions", type=int, default=1200)
    p.add_argument("--scifact-negatives", type=int, default=1, help="BM25 negatives per SciFact claim")
    p.add_argument("--hotpot-negatives", type=int, default=2, help="distractors per HotpotQA question")
    p.add_argument("--hotpot-bridge", type=int, default=0,
                   help="add two-hop readings (question + the other gold paragraph's supporting sentence) "
                        "with this many distractors each; 0 = none")
    p.add_argument("--hotpot-repeat", type=int, default=1, help="repeat the HotpotQA examples (upsampling)")
    p.add_argument("--init", default="ragprune-reranker", help="encoder or cross-encoder to start from")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=320)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--rank-weight", type=float, default=0.5)
    p.add_argument("--head-lr-mult", type=float, default=20.0,
                   help="learning-rate multiplier of the two heads (use 1 when continuing from a trained pruner)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dest", type=Path, default=Path("models/ragprune_models/ragprune-provence-minilm-l6"))
    args = p.parse_args(argv)
    {"data": cmd_data, "train": cmd_train, "export": cmd_export}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
