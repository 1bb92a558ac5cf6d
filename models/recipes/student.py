"""Recipe for the fast reranker ``ragprune-reranker-minilm-l2``: a 2-layer student of the shipped 6-layer one.

Steps (files under ``--work``, default ``runs/student``):

    python -m models.recipes.reranker data --work runs/student   # the reranker's training groups and splits
    python -m models.recipes.student init      # 2 of the teacher's 6 layers -> runs/student/init (fp32)
    python -m models.recipes.student label     # teacher scores -> groups_teacher.jsonl
    python -m models.recipes.reranker train --work runs/student --init runs/student/init --max-length 160 \
        --lr 1e-4 --head-lr-mult 1     # the head is the teacher's, already trained
    python -m models.recipes.student export    # fp16 -> models/ragprune_models/ragprune-reranker-minilm-l2
    python -m models.recipes.tune_fusion --model models/ragprune_models/ragprune-reranker-minilm-l2

Same data and splits as the 6-layer reranker (``models/recipes/reranker.py``: SciFact train minus
its last 100 claims, SQuAD articles 0-31, HotpotQA questions 0-57; no evaluation split). The
teacher is the ensemble ``ragprune-reranker-minilm-l6`` logit + the recipe's ``hybrid`` score
(``--hybrid-weight``), so the student learns the 6-layer model's margins (Margin-MSE,
Hofstätter et al.) with the lexical/dense signal the 6-layer model was itself taught from.
The student starts from the teacher's own embeddings, head and layers ``--layers`` (default the
first and the last), the initialisation TinyBERT/DistilBERT-style layer dropping uses.

Status: experimental, no checkpoint shipped. On 2 CPU cores the first runs (lr 1e-4, head
learning-rate factor 20 and 1) did not learn the teacher's margins: after 150-270 of 590 steps the
loss stayed at the teacher's mean squared margin (~50); the student's margins grew from 0.0 to
0.4 against the teacher's 5.8. To try next: scale the teacher margins down, keep the bottom layers
(``--layers 0 1``), more steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TEACHER = Path("models/ragprune_models/ragprune-reranker-minilm-l6")


def cmd_init(args: argparse.Namespace) -> None:
    """Keep ``args.layers`` of the teacher's encoder layers, in order; save fp32."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    net = AutoModelForSequenceClassification.from_pretrained(str(args.teacher), dtype=torch.float32)
    layers = net.base_model.encoder.layer
    if not args.layers or max(args.layers) >= len(layers) or min(args.layers) < 0:
        raise SystemExit(f"init: --layers must be indices in 0..{len(layers) - 1}, got {args.layers}")
    net.base_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in args.layers])
    net.config.num_hidden_layers = len(args.layers)
    dest = args.work / "init"
    net.save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(args.teacher)).save_pretrained(dest)
    (args.work / "init_layers.json").write_text(json.dumps({"teacher": str(args.teacher), "layers": args.layers}))
    print(f"student init: layers {args.layers} of {args.teacher} -> {dest}")


def cmd_label(args: argparse.Namespace) -> None:
    """Teacher margins: 6-layer cross-encoder logit + ``hybrid_weight`` x the hybrid teacher."""
    from models.recipes.reranker import _teachers
    from ragprune.rerank.cross_encoder import CrossEncoderReranker
    from ragprune.rerank.distill import TrainingGroup, read_groups, write_groups

    groups = read_groups(args.work / "groups.jsonl")
    ce = CrossEncoderReranker(args.teacher, max_length=args.max_length, backend=args.backend, batch_size=32)
    hybrid = _teachers(args) if args.hybrid_weight else {}
    q = [g.query for g in groups for _ in range(1 + len(g.negs))]
    p = [t for g in groups for t in (g.pos, *g.negs)]
    ce_scores = np.asarray(ce.score(q, p), dtype=float)  # one call: length-sorted batches, progress in the log
    out, at = [], 0
    for g in groups:
        n = 1 + len(g.negs)
        s = ce_scores[at : at + n]
        at += n
        if args.hybrid_weight:
            s = s + args.hybrid_weight * np.asarray(hybrid[g.source].scores(g.query, [g.pos, *g.negs], "hybrid"))
        out.append(TrainingGroup(g.query, g.pos, g.negs, g.source, float(s[0]), tuple(float(x) for x in s[1:])))
    write_groups(args.work / "groups_teacher.jsonl", out)
    margins = np.array([g.t_pos - np.mean(g.t_negs) for g in out])
    summary = {"groups": len(out), "teacher": f"{args.teacher.name} + {args.hybrid_weight} x hybrid",
               "teacher_prefers_positive": round(float(np.mean(margins > 0)), 4)}
    (args.work / "label.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


def cmd_export(args: argparse.Namespace) -> None:
    from ragprune._train import latest_checkpoint
    from ragprune.rerank.distill import export_fp16

    ck, step = latest_checkpoint(args.work / args.train_dir)
    if ck is None:
        raise SystemExit(f"export: no checkpoint under {args.work / args.train_dir}; run the train step first.")
    print(f"exported {ck} (step {step}) to {export_fp16(ck, args.dest)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.recipes.student", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["init", "label", "export"])
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--work", type=Path, default=Path("runs/student"))
    p.add_argument("--teacher", type=Path, default=TEACHER)
    p.add_argument("--layers", type=int, nargs="+", default=[0, 5])
    p.add_argument("--hybrid-weight", type=float, default=0.5)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--backend", choices=["torch", "onnx"], default="onnx", help="teacher inference (same scores)")
    p.add_argument("--train-dir", default="train", help="folder under --work the train step wrote")
    p.add_argument("--dest", type=Path, default=Path("models/ragprune_models/ragprune-reranker-minilm-l2"))
    args = p.parse_args(argv)
    {"init": cmd_init, "label": cmd_label, "export": cmd_export}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
