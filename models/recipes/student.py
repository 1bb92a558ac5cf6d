"""Recipe for the fast reranker ``ragprune-reranker-minilm-l2``: a 2-layer student of the shipped 6-layer one.

Steps (files under ``--work``, default ``runs/student``):

    python -m models.recipes.reranker data --work runs/student   # the reranker's training groups and splits
    python -m models.recipes.student init      # 2 of the teacher's 6 layers -> runs/student/init (fp32)
    python -m models.recipes.student label     # teacher scores + [CLS] states -> groups_teacher.jsonl, teacher_cls.npy
    python -m models.recipes.student train --lr 2e-4 --cls-weight 50   # Margin-MSE + [CLS]-state MSE -> runs/student/train
    python -m models.recipes.student train --init runs/student/train/checkpoint-1180 --train-dir train2 \
        --cls-weight 50                        # stage 2 (lr 1e-4), as shipped
    python -m models.recipes.student export --train-dir train2   # fp16 -> models/ragprune_models/ragprune-reranker-minilm-l2
    python -m models.recipes.tune_fusion --model models/ragprune_models/ragprune-reranker-minilm-l2

Same data and splits as the 6-layer reranker (``models/recipes/reranker.py``: SciFact train minus
its last 100 claims, SQuAD articles 0-31, HotpotQA questions 0-57; no evaluation split).

The student starts from the teacher's embeddings, head and two of its layers (``--layers``,
default the first and the last; TinyBERT/DistilBERT-style layer dropping) and learns from two
signals of the teacher on every training pair:

- its score margins (Margin-MSE, Hofstätter et al.): ``(s(q,p+) - s(q,p-)) - (t(q,p+) - t(q,p-))``;
- its last-layer ``[CLS]`` state (mean squared error, weight ``--cls-weight``), the vector the
  shared head reads. This dense target is what makes the shortened model converge on a CPU:
  margins alone (a scalar per pair) left the dropped-layer student at the teacher's mean squared
  margin for hundreds of steps, because the teacher's head reads nothing useful from a 2-layer
  ``[CLS]`` at the start (its scores have std 0.5 where the teacher's margins average 3.9).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

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


def _pairs(groups: list[Any]) -> tuple[list[str], list[str]]:
    q = [g.query for g in groups for _ in range(1 + len(g.negs))]
    p = [t for g in groups for t in (g.pos, *g.negs)]
    return q, p


def cmd_label(args: argparse.Namespace) -> None:
    """Teacher logit and last-layer [CLS] state of every training pair (torch fp32, length-sorted batches)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ragprune.rerank.distill import TrainingGroup, read_groups, write_groups

    groups = read_groups(args.work / "groups.jsonl")
    if len({len(g.negs) for g in groups}) != 1:
        raise SystemExit("label: every group needs the same number of negatives (rerun the data step).")
    tok = AutoTokenizer.from_pretrained(str(args.teacher))
    net = AutoModelForSequenceClassification.from_pretrained(str(args.teacher), dtype=torch.float32).eval()
    q, p = _pairs(groups)
    lengths = [len(x) + len(y) for x, y in zip(q, p)]
    order = np.argsort(lengths, kind="stable")
    logits = np.zeros(len(q), dtype=np.float32)
    cls = np.zeros((len(q), net.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for i in tqdm(range(0, len(order), args.batch_size), desc="teacher", unit="batch"):
            idx = order[i : i + args.batch_size]
            enc = tok([q[j] for j in idx], [p[j] for j in idx], padding=True, truncation="longest_first",
                      max_length=args.max_length, return_tensors="pt")
            out = net(**enc, output_hidden_states=True)
            logits[idx] = out.logits[:, 0].numpy()
            cls[idx] = out.hidden_states[-1][:, 0].numpy()
    n = 1 + len(groups[0].negs)
    s = logits.reshape(len(groups), n)
    out_groups = [TrainingGroup(g.query, g.pos, g.negs, g.source, float(r[0]), tuple(float(x) for x in r[1:]))
                  for g, r in zip(groups, s)]
    write_groups(args.work / "groups_teacher.jsonl", out_groups)
    np.save(args.work / "teacher_cls.npy", cls.reshape(len(groups), n, -1).astype(np.float16))
    margins = s[:, :1] - s[:, 1:]
    summary = {"groups": len(groups), "pairs": len(q), "teacher": args.teacher.name, "max_length": args.max_length,
               "teacher_prefers_positive": round(float(np.mean(margins.mean(1) > 0)), 4),
               "mean_margin": round(float(margins.mean()), 3), "mean_squared_margin": round(float((margins**2).mean()), 3)}
    (args.work / "label.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


def cmd_train(args: argparse.Namespace) -> None:
    """Margin-MSE on the teacher's scores + ``cls_weight`` x MSE on its [CLS] states."""
    from ragprune.rerank.distill import TrainConfig, read_groups, train_cross_encoder

    groups = read_groups(args.work / "groups_teacher.jsonl")
    states = np.load(args.work / "teacher_cls.npy")
    if states.shape[0] != len(groups):
        raise SystemExit("train: teacher_cls.npy does not match groups_teacher.jsonl; rerun the label step.")
    cfg = TrainConfig(loss="margin_mse", state_weight=args.cls_weight, lr=args.lr, batch_size=args.batch_size,
                      negatives=states.shape[1] - 1, max_length=args.max_length, epochs=args.epochs,
                      max_steps=args.max_steps, save_every=args.save_every, seed=args.seed, threads=args.threads,
                      head_lr_mult=1.0)  # the head is the teacher's, already trained
    final = train_cross_encoder(groups, args.init or args.work / "init", args.work / args.train_dir, cfg,
                                teacher_states=states)
    print(f"final checkpoint: {final}")


def cmd_export(args: argparse.Namespace) -> None:
    from ragprune._train import latest_checkpoint
    from ragprune.rerank.distill import export_fp16

    ck, step = latest_checkpoint(args.work / args.train_dir)
    if ck is None:
        raise SystemExit(f"export: no checkpoint under {args.work / args.train_dir}; run the train step first.")
    dest = export_fp16(ck, args.dest)
    records = dest / "training"
    records.mkdir(exist_ok=True)
    for name in ("splits.json", "label.json", "init_layers.json"):
        if (args.work / name).is_file():
            shutil.copyfile(args.work / name, records / name)
    for run in sorted(d for d in args.work.iterdir() if (d / "train_log.jsonl").is_file()):  # every training stage
        shutil.copyfile(run / "train_config.json", records / f"{run.name}_config.json")
        shutil.copyfile(run / "train_log.jsonl", records / f"{run.name}_log.jsonl")
    print(f"exported {ck} (step {step}) to {dest}, training records in {records}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.recipes.student", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["init", "label", "train", "export"])
    p.add_argument("--work", type=Path, default=Path("runs/student"))
    p.add_argument("--teacher", type=Path, default=TEACHER)
    p.add_argument("--layers", type=int, nargs="+", default=[0, 5])
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8, help="groups per step (label: pairs per batch)")
    p.add_argument("--init", type=Path, default=None,
                   help="train: start from this checkpoint instead of <work>/init (e.g. to continue a finished run)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--cls-weight", type=float, default=10.0)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--train-dir", default="train", help="folder under --work for checkpoints and the log")
    p.add_argument("--dest", type=Path, default=Path("models/ragprune_models/ragprune-reranker-minilm-l2"))
    args = p.parse_args(argv)
    {"init": cmd_init, "label": cmd_label, "train": cmd_train, "export": cmd_export}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
