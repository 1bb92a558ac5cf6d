"""Training cross-encoder rerankers: Margin-MSE distillation plus label-based losses.

Margin-MSE (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation") trains the student so that its score *margin*
between a positive and a negative passage matches the teacher's margin::

    L = mean_j ((s(q, p+) - s(q, p-_j)) - (t(q, p+) - t(q, p-_j)))^2

Only margins matter, so teacher and student need not share a score scale offset. The
listwise loss (softmax cross-entropy of the positive among 1 + n candidates) and the pointwise
loss (binary cross-entropy) use gold labels only. ``loss="listwise+margin_mse"`` adds them.

The training data is a JSONL file of groups, one per line::

    {"query": "...", "pos": "passage text", "negs": ["...", ...], "source": "squad",
     "t_pos": 7.1, "t_negs": [3.2, ...]}          # teacher scores: only for margin_mse

Teacher labelling is a separate step that fills ``t_pos``/``t_negs`` (see
``models/recipes/reranker_data.py``), so a stronger teacher can be swapped in later.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_records, write_records

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainingGroup", "read_groups", "write_groups", "group_loss", "train_cross_encoder",
           "export_fp16", "LOSSES"]

LOSSES = ("margin_mse", "listwise", "pointwise")


@dataclass(frozen=True)
class TrainingGroup:
    """One query with one positive and ``n`` negatives (and optional teacher scores)."""

    query: str
    pos: str
    negs: tuple[str, ...]
    source: str = ""
    t_pos: float | None = None
    t_negs: tuple[float, ...] | None = None


def _group(r: dict[str, Any]) -> TrainingGroup:
    return TrainingGroup(query=r["query"], pos=r["pos"], negs=tuple(r["negs"]), source=r.get("source", ""),
                         t_pos=r.get("t_pos"), t_negs=tuple(r["t_negs"]) if r.get("t_negs") is not None else None)


def read_groups(path: str | os.PathLike[str]) -> list[TrainingGroup]:
    """Read training groups from JSONL (see the module docstring)."""
    return read_records(path, _group, "training group")


def write_groups(path: str | os.PathLike[str], groups: Sequence[TrainingGroup]) -> None:
    """Write training groups as JSONL (atomically)."""
    write_records(path, groups)


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_cross_encoder` (all saved next to the checkpoints)."""

    loss: str = "listwise+margin_mse"
    margin_weight: float = 1.0
    lr: float = 5e-5
    warmup: float = 0.05
    weight_decay: float = 0.01
    batch_size: int = 8
    negatives: int = 3
    max_length: int = 192
    epochs: float = 1.0
    max_steps: int | None = None
    save_every: int = 100
    seed: int = 13
    threads: int | None = None
    freeze_embeddings: bool = True
    head_lr_mult: float = 20.0
    state_weight: float = 1.0
    losses: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        parts = tuple(p.strip() for p in self.loss.split("+"))
        bad = [p for p in parts if p not in LOSSES]
        if bad or not parts:
            raise ValueError(f"TrainConfig: unknown loss {self.loss!r}; combine {', '.join(LOSSES)} with '+'.")
        self.losses = parts


def group_loss(scores: Any, groups: Sequence[TrainingGroup], cfg: TrainConfig) -> Any:
    """Loss of a batch. ``scores``: tensor (B, 1 + n), column 0 the positive."""
    import torch
    import torch.nn.functional as F

    total = scores.new_zeros(())
    if "listwise" in cfg.losses:
        total = total + F.cross_entropy(scores, torch.zeros(len(groups), dtype=torch.long))
    if "pointwise" in cfg.losses:
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        total = total + F.binary_cross_entropy_with_logits(scores, labels)
    if "margin_mse" in cfg.losses:
        if any(g.t_pos is None or g.t_negs is None for g in groups):
            raise ValueError("group_loss: margin_mse needs teacher scores (t_pos, t_negs); run the teacher labelling step.")
        n = scores.shape[1] - 1
        t = torch.tensor([[g.t_pos, *g.t_negs[:n]] for g in groups], dtype=scores.dtype)
        student_margin = scores[:, :1] - scores[:, 1:]
        teacher_margin = t[:, :1] - t[:, 1:]
        w = cfg.margin_weight if len(cfg.losses) > 1 else 1.0
        total = total + w * F.mse_loss(student_margin, teacher_margin)
    return total


def train_cross_encoder(
    groups: Sequence[TrainingGroup],
    init_model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    teacher_states: Any = None,
) -> Path:
    """Fine-tune a sequence-classification cross-encoder (one output) on training groups.

    Args:
        groups: Training groups; every group needs at least ``cfg.negatives`` negatives.
        init_model: Local folder of the initial encoder (e.g. all-MiniLM-L6-v2) or a
            cross-encoder checkpoint to continue from.
        out_dir: Receives ``checkpoint-<step>/`` (newest only), ``train_log.jsonl`` and
            ``train_config.json``.
        cfg: Hyper-parameters (:class:`TrainConfig`).
        resume: Continue from the newest ``checkpoint-*`` in ``out_dir`` if there is one
            (weights, step, data order and schedule; the optimizer moments restart).
        teacher_states: Optional array ``(len(groups), 1 + negatives', hidden)`` of the teacher's
            last-layer ``[CLS]`` state per pair (positive first); adds ``cfg.state_weight`` x the
            mean squared error of the student's state to it (layer-dropped students need this
            dense target to converge).

    Returns:
        The folder of the final checkpoint (fp32).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .._train import batch_stream, latest_checkpoint, run_training
    from ..models import resolve_model

    cfg = cfg or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    states = None if teacher_states is None else torch.as_tensor(np.asarray(teacher_states, dtype=np.float32))
    if states is not None and (states.ndim != 3 or states.shape[0] != len(groups)
                               or states.shape[1] < 1 + cfg.negatives):
        raise ValueError(f"train_cross_encoder: teacher_states has shape {tuple(states.shape)}; expected "
                         f"({len(groups)}, >= {1 + cfg.negatives}, hidden), one row per group.")
    usable = [i for i, g in enumerate(groups) if len(g.negs) >= cfg.negatives]
    if len(usable) < cfg.batch_size:
        raise ValueError(f"train_cross_encoder: {len(usable)} usable groups, fewer than batch_size={cfg.batch_size}.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start_from, step0 = latest_checkpoint(out) if resume else (None, 0)
    src = start_from or resolve_model(init_model, owner="train_cross_encoder")
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1, local_files_only=True)
    if cfg.freeze_embeddings:
        for p in model.base_model.embeddings.parameters():
            p.requires_grad_(False)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * (len(usable) // cfg.batch_size)))
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), "init_model": str(init_model),
                                                       "groups": len(usable), "total_steps": total,
                                                       "teacher_states": states is not None}, indent=1))

    def loss_fn(idx: list[int]) -> Any:
        batch = [groups[i] for i in idx]
        q = [g.query for g in batch for _ in range(1 + cfg.negatives)]
        p = [t for g in batch for t in (g.pos, *g.negs[: cfg.negatives])]
        enc = tok(q, p, padding=True, truncation="longest_first", max_length=cfg.max_length, return_tensors="pt")
        res = model(**enc, output_hidden_states=states is not None)
        loss = group_loss(res.logits.view(len(batch), 1 + cfg.negatives), batch, cfg)
        if states is not None:
            target = states[idx, : 1 + cfg.negatives].reshape(-1, states.shape[-1])
            loss = loss + cfg.state_weight * torch.nn.functional.mse_loss(res.hidden_states[-1][:, 0], target)
        return loss

    def save(ck: Path) -> None:
        model.save_pretrained(ck, safe_serialization=True)
        tok.save_pretrained(ck)

    return run_training(model=model, batches=batch_stream(usable, cfg.batch_size, cfg.seed, skip=step0),
                        loss_fn=loss_fn, save=save, out_dir=out, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        warmup=cfg.warmup, total=total, step0=step0, save_every=cfg.save_every,
                        desc="train reranker", head_lr_mult=cfg.head_lr_mult, progress=progress)


def export_fp16(checkpoint: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Save a checkpoint as fp16 safetensors with its tokenizer (the shipped format).

    :class:`~ragprune.rerank.cross_encoder.CrossEncoderReranker` upcasts to fp32 on load.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = Path(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(str(src), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest
