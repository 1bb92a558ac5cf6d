"""Training the Provence-style pruner: sentence labels become token labels.

Each example is a query and a passage whose sentences carry keep (1) / drop (0) labels, plus a
passage relevance label for the ranking head. Tokens inherit the label of the sentence they
start in; query, title and special tokens are ignored by the token loss. Irrelevant passages
(every sentence 0, relevance 0) teach the model to drop whole passages.

Loss = mean token BCE + ``rank_weight`` * ranking loss, where the ranking loss is BCE on the
relevance label, or (``rank_teacher`` scores present) MSE to a teacher's score.

Examples are JSONL, one per line::

    {"query": "...", "title": "...", "text": "...", "spans": [[0, 57], [58, 120]],
     "labels": [1, 0], "relevant": 1, "source": "squad", "teacher": 4.2}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_records, write_records

__all__ = ["PruningExample", "PrunerTrainConfig", "read_examples", "write_examples", "token_labels",
           "train_pruner"]


@dataclass(frozen=True)
class PruningExample:
    """One (query, passage) pair with per-sentence keep labels."""

    query: str
    title: str
    text: str
    spans: tuple[tuple[int, int], ...]
    labels: tuple[int, ...]
    relevant: float
    source: str = ""
    teacher: float | None = None

    def __post_init__(self) -> None:
        if len(self.spans) != len(self.labels):
            raise ValueError(f"PruningExample: {len(self.spans)} spans but {len(self.labels)} labels.")


def _example(r: dict[str, Any]) -> PruningExample:
    return PruningExample(r["query"], r.get("title", ""), r["text"], tuple((int(a), int(b)) for a, b in r["spans"]),
                          tuple(int(x) for x in r["labels"]), float(r["relevant"]), r.get("source", ""),
                          r.get("teacher"))


def read_examples(path: str | os.PathLike[str]) -> list[PruningExample]:
    """Read pruning examples from JSONL (see the module docstring)."""
    return read_records(path, _example, "pruning example")


def write_examples(path: str | os.PathLike[str], examples: Sequence[PruningExample]) -> None:
    """Write pruning examples as JSONL (atomically)."""
    write_records(path, examples)


def token_labels(offsets: np.ndarray, sequence_ids: Sequence[int | None], text_offset: int,
                 spans: Sequence[tuple[int, int]], labels: Sequence[int]) -> np.ndarray:
    """Per-token labels: the label of the sentence a context token starts in, else -100.

    Args:
        offsets: ``(T, 2)`` character offsets into the context string.
        sequence_ids: Per token, 0 (query), 1 (context) or None (special).
        text_offset: Where ``text`` starts inside the context (after ``title + "\\n"``).
    """
    out = np.full(len(sequence_ids), -100, dtype=np.int64)
    if not spans:
        return out
    starts = np.array([a for a, _ in spans])
    ends = np.array([b for _, b in spans])
    lab = np.asarray(labels)
    for t, sid in enumerate(sequence_ids):
        if sid != 1:
            continue
        pos = int(offsets[t][0]) - text_offset
        if pos < 0:
            continue  # title
        j = int(np.searchsorted(starts, pos, side="right")) - 1
        out[t] = lab[j] if j >= 0 and pos < ends[j] else 0  # whitespace between sentences: drop
    return out


@dataclass
class PrunerTrainConfig:
    """Hyper-parameters of :func:`train_pruner`."""

    lr: float = 3e-5
    warmup: float = 0.05
    weight_decay: float = 0.01
    batch_size: int = 8
    max_length: int = 384
    epochs: float = 1.0
    max_steps: int | None = None
    rank_weight: float = 0.5
    save_every: int = 50
    seed: int = 13
    threads: int | None = None
    freeze_embeddings: bool = True
    head_lr_mult: float = 20.0


def train_pruner(
    examples: Sequence[PruningExample],
    init: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: PrunerTrainConfig | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Train the two-head model; returns the final checkpoint folder (fp32, loadable by
    :class:`~ragprune.prune.provence.ProvencePruner`).

    Args:
        examples: Labelled (query, passage) pairs.
        init: Encoder folder (e.g. ``"minilm"``) or a cross-encoder (its classifier becomes
            the ranking head), or a Provence checkpoint to continue from.
        out_dir: Receives ``checkpoint-<step>/``, ``train_log.jsonl``, ``train_config.json``.
    """
    import torch
    import torch.nn.functional as F

    from .._train import batch_stream, latest_checkpoint, run_training
    from .provence import init_provence, load_provence, save_provence

    cfg = cfg or PrunerTrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(examples) < cfg.batch_size:
        raise ValueError(f"train_pruner: {len(examples)} examples, fewer than batch_size={cfg.batch_size}.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start_from, step0 = latest_checkpoint(out, marker="provence.json") if resume else (None, 0)
    if start_from is not None:
        tok, model, _ = load_provence(start_from)
    elif (Path(str(init)) / "provence.json").is_file():
        tok, model, _ = load_provence(init)
    else:
        tok, model = init_provence(init)
    if cfg.freeze_embeddings:
        for p in model.encoder.embeddings.parameters():
            p.requires_grad_(False)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * (len(examples) // cfg.batch_size)))
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), "init": str(init), "examples": len(examples),
                                                       "total_steps": total}, indent=1))

    def loss_fn(batch: list[PruningExample]) -> Any:
        contexts = [(f"{e.title}\n" if e.title else "") + e.text for e in batch]
        enc = tok([e.query for e in batch], contexts, truncation="only_second", max_length=cfg.max_length,
                  padding=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").numpy()
        labels = torch.tensor(np.stack([
            token_labels(offsets[i], enc.sequence_ids(i), len(e.title) + 1 if e.title else 0, e.spans, e.labels)
            for i, e in enumerate(batch)]))
        rank, logits = model(**enc)
        mask = labels != -100
        tok_loss = F.binary_cross_entropy_with_logits(logits[mask], labels[mask].float()) if mask.any() else logits.sum() * 0
        if all(e.teacher is not None for e in batch):
            rank_loss = F.mse_loss(rank, torch.tensor([e.teacher for e in batch], dtype=rank.dtype))
        else:
            rank_loss = F.binary_cross_entropy_with_logits(rank, torch.tensor([e.relevant for e in batch], dtype=rank.dtype))
        return tok_loss + cfg.rank_weight * rank_loss

    def save(ck: Path) -> None:
        save_provence(model, tok, ck, extra={"max_length": cfg.max_length})

    return run_training(model=model, batches=batch_stream(list(examples), cfg.batch_size, cfg.seed, skip=step0),
                        loss_fn=loss_fn, save=save, out_dir=out, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        warmup=cfg.warmup, total=total, step0=step0, save_every=cfg.save_every,
                        desc="train pruner", head_lr_mult=cfg.head_lr_mult, progress=progress)
