"""Training-loop plumbing shared by the reranker and pruner trainers.

Checkpoints are folders ``checkpoint-<step>`` (only the newest is kept), the log is
``train_log.jsonl`` (one JSON object every ``log_every`` steps), and a resumed run replays the
same data order and learning-rate schedule as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def latest_checkpoint(out_dir: Path, marker: str = "config.json") -> tuple[Path | None, int]:
    """The newest complete ``checkpoint-<step>`` folder under ``out_dir`` and its step."""
    best, step = None, 0
    for p in Path(out_dir).glob("checkpoint-*"):
        try:
            s = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if (p / marker).is_file() and s > step:
            best, step = p, s
    return best, step


def batch_stream(items: Sequence[T], batch_size: int, seed: int, skip: int = 0) -> Iterator[list[T]]:
    """Endless shuffled batches (a new permutation each epoch); ``skip`` batches are dropped."""
    rng = random.Random(seed)

    def gen() -> Iterator[list[T]]:
        while True:
            order = list(range(len(items)))
            rng.shuffle(order)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                yield [items[j] for j in order[i : i + batch_size]]

    it = gen()
    for _ in range(skip):
        next(it)
    return it


HEAD_PREFIXES = ("classifier.", "rank_head.", "token_head.", "pooler.", "bert.pooler.", "encoder.pooler.")


def make_optimizer(model: Any, *, lr: float, weight_decay: float, warmup: float, total: int, step0: int,
                   head_lr_mult: float = 1.0) -> tuple[Any, Any]:
    """AdamW with linear warm-up and decay, fast-forwarded to ``step0``.

    No weight decay on biases and LayerNorm weights. Freshly initialised heads (classifier,
    pooler, ranking and token heads) learn ``head_lr_mult`` times faster: a score head that
    starts near zero otherwise needs hundreds of steps to reach the teacher's score scale.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "norm.weight")
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((n.startswith(HEAD_PREFIXES), n.endswith(no_decay)), []).append(p)
    opt = torch.optim.AdamW([
        {"params": ps, "lr": lr * (head_lr_mult if head else 1.0), "weight_decay": 0.0 if nd else weight_decay}
        for (head, nd), ps in sorted(groups.items())
    ], lr=lr)
    sched = get_linear_schedule_with_warmup(opt, int(warmup * total), total)
    with warnings.catch_warnings():  # stepping the schedule before the optimizer is intended here
        warnings.simplefilter("ignore")
        for _ in range(step0):
            sched.step()
    return opt, sched


def run_training(
    *,
    model: Any,
    batches: Iterator[Any],
    loss_fn: Callable[[Any], Any],
    save: Callable[[Path], None],
    out_dir: Path,
    lr: float,
    weight_decay: float,
    warmup: float,
    total: int,
    step0: int,
    save_every: int,
    desc: str,
    head_lr_mult: float = 1.0,
    progress: bool = True,
    log_every: int = 10,
) -> Path:
    """The loop: forward/backward/clip/step, smoothed-loss log, rotating checkpoints.

    Returns the folder of the last checkpoint (``checkpoint-<total>``).
    """
    import torch

    opt, sched = make_optimizer(model, lr=lr, weight_decay=weight_decay, warmup=warmup, total=total, step0=step0,
                                head_lr_mult=head_lr_mult)
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step0, desc=desc, unit="step")
    t0, running = time.time(), None
    with open(out_dir / "train_log.jsonl", "a", encoding="utf-8") as log:
        for step in range(step0 + 1, total + 1):
            loss = loss_fn(next(batches))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            value = float(loss.item())
            running = value if running is None else 0.98 * running + 0.02 * value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}")
            if step % log_every == 0 or step == total:
                log.write(json.dumps({"step": step, "loss": round(value, 5), "smoothed": round(running, 5),
                                      "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 1)}) + "\n")
                log.flush()
            if step % save_every == 0 or step == total:
                ck = out_dir / f"checkpoint-{step}"
                save(ck)
                for old in out_dir.glob("checkpoint-*"):
                    if old != ck:
                        shutil.rmtree(old, ignore_errors=True)
    if bar is not None:
        bar.close()
    return out_dir / f"checkpoint-{total}"
