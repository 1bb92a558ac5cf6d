"""Cross-encoder reranking with any Hugging Face sequence-classification checkpoint.

Loads the layout of the public ms-marco cross-encoders (``config.json``, weights, tokenizer)
and of ragprune's own shipped reranker. Needs the ``rerank`` extra.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from .._quant import check_quantize, int8_dynamic
from .._runtime import Backend, TorchRunner, check_backend, onnx_runner
from .._validate import check_positive_int
from ..models import check_tokenizer, resolve_model
from ..text import tokenizer_safe
from ..types import Document
from .base import FusionWeight, PointwiseReranker, check_fusion_weight

logger = logging.getLogger(__name__)

__all__ = ["CrossEncoderReranker", "load_cross_encoder"]

DEFAULT_MODEL = "ragprune-reranker"


def _import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError("CrossEncoderReranker needs torch and transformers: pip install 'ragprune[rerank]'") from e
    return torch


def load_cross_encoder(model: str | os.PathLike[str], *, trust_remote_code: bool = False,
                       owner: str = "CrossEncoderReranker", revision: str | None = None,
                       local_files_only: bool | None = None) -> tuple[Any, Any, Path]:
    """Load ``(tokenizer, model, path)`` from a sequence-classification checkpoint.

    ``model`` is anything :func:`ragprune.models.resolve_model` resolves: a folder, a shipped
    name or a Hugging Face id (at ``revision``; downloaded only when ``local_files_only`` and
    ``HF_HUB_OFFLINE`` allow it).

    Raises:
        ragprune.models.ModelNotFoundError: the folder does not exist.
        ValueError: the folder is not a loadable checkpoint, or needs remote code that was
            not allowed.
    """
    _import_torch()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(model, owner=owner, revision=revision, local_files_only=local_files_only,
                         allow_code=trust_remote_code)
    cfg_path = path / "config.json"
    if not path.is_dir() or not cfg_path.is_file():
        raise ValueError(f"{owner}: {path} is not a Hugging Face checkpoint folder (no config.json).")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{owner}: {cfg_path} is not valid JSON ({e}).") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{owner}: {cfg_path} holds a JSON {type(cfg).__name__}, not a model config object.")
    if "auto_map" in cfg and not trust_remote_code:
        raise ValueError(
            f"{owner}: {path} needs custom code from the checkpoint (config.json has 'auto_map'); "
            "review it and pass trust_remote_code=True to allow it."
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
        net, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as e:
        raise ValueError(f"{owner}: could not load a sequence-classification model from {path} "
                         f"({type(e).__name__}: {e}).") from e
    check_tokenizer(tok, getattr(net.config, "vocab_size", None), path, owner)
    missing = sorted(info.get("missing_keys") or []) + sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing:  # e.g. a plain encoder: its classification head would be random
        raise ValueError(f"{owner}: {path} has no trained classification head (weights not in the checkpoint: "
                         f"{', '.join(missing[:5])}); it is not a cross-encoder. Pass a sequence-classification "
                         "checkpoint (e.g. 'ragprune-reranker').")
    return tok, net.eval(), path


def _recommended(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "ragprune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


class CrossEncoderReranker(PointwiseReranker):
    """Scores ``(query, title + passage)`` pairs jointly with a cross-encoder.

    Args:
        model: ``"ragprune-reranker"`` (default: the MiniLM-L6 reranker shipped in the
            ``ragprune-models`` package), a local checkpoint folder, or a Hugging Face id such
            as ``"cross-encoder/ms-marco-MiniLM-L-6-v2"`` (resolved through the Hugging Face
            cache the way transformers does).
        max_length: Tokens per pair. Longer passages are truncated from the end (the query is
            kept whole); nothing crashes on long input.
        batch_size: Pairs per forward pass; pairs are sorted by length first to cut padding.
            Default (``None``): 8 on CPU, where small length-sorted batches pad least and ran
            1.17x faster than 32 over 100 SciFact passages (``eval/README.md``, speed); 32 on a GPU.
        device: torch device (``"cpu"`` default).
        quantize: ``"int8"``: dynamic int8 quantization (CPU only; faster, slightly different
            scores). With ``backend="torch"`` torch quantizes the Linear layers; with
            ``backend="onnx"`` ONNX Runtime quantizes every MatMul with per-channel weights.
        backend: ``"torch"`` (default, the reference) or ``"onnx"``: ONNX Runtime on CPU, from
            an export made once and cached under ``$RAGPRUNE_ONNX_DIR`` (see
            :mod:`ragprune._runtime`; needs the ``onnx`` extra). Scores match torch's to
            ~1e-5 in fp32; ``eval/speed.py rerank`` measures speed and nDCG of each option.
        trust_remote_code: Allow checkpoints that ship their own modelling code. Off by default.
        revision: For a Hugging Face id: branch, tag or commit (default ``main``).
        local_files_only: For a Hugging Face id: ``True`` never downloads; ``None`` (default)
            downloads unless ``HF_HUB_OFFLINE=1``. See :func:`ragprune.models.resolve_model`.
        first_stage_weight: Fusion with the scores the candidates arrived with (see
            :class:`~ragprune.rerank.base.PointwiseReranker`): 0 (default) ranks by the
            cross-encoder's scores alone, whatever the input type; a weight in (0, 1] ranks by
            ``(1 - w) * minmax(model) + w * minmax(first stage)`` and then needs
            ``ScoredDocument`` candidates (a retriever's output); ``"recommended"`` uses the
            value tuned on a dev split and stored in the checkpoint's ``ragprune.json`` (0.4 for
            the shipped reranker, see its model card; 0 for checkpoints without one). Each
            result carries the model's own score as ``model_score`` either way.

    A checkpoint with one output uses that logit as the score; with two outputs, the
    difference ``logit[1] - logit[0]``.

    Raises:
        ValueError: with ``first_stage_weight > 0``, :meth:`rerank` of candidates without
            first-stage scores (plain strings, ``Document`` or dicts).

    Example:
        >>> ce = CrossEncoderReranker()                                       # doctest: +SKIP
        >>> hits = ce.rerank("what causes scurvy", bm25.retrieve(q, 100), k=10)  # doctest: +SKIP
        >>> fused = CrossEncoderReranker(first_stage_weight="recommended")       # doctest: +SKIP
        >>> top = fused.rerank(q, bm25.retrieve(q, 100), k=10)                 # doctest: +SKIP
        >>> top[0].score, top[0].model_score, top[0].first_stage_score        # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        max_length: int = 256,
        batch_size: int | None = None,
        device: str = "cpu",
        quantize: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        local_files_only: bool | None = None,
        first_stage_weight: FusionWeight | None = 0.0,
        backend: Backend = "torch",
    ) -> None:
        owner = "CrossEncoderReranker"
        self.max_length = check_positive_int(max_length, "max_length", owner)
        if self.max_length < 16:
            raise ValueError(f"{owner}: max_length={max_length} leaves no room for query and passage; use at least "
                             "16 tokens (256 is the default).")
        if batch_size is None:
            batch_size = 8 if str(device) == "cpu" else 32
        self.batch_size = check_positive_int(batch_size, "batch_size", owner)
        self.backend = check_backend(backend, device, owner)
        check_quantize(quantize, device, owner)
        _import_torch()  # a clear ImportError before anything else
        self.tokenizer, net, self.path = load_cross_encoder(model, trust_remote_code=trust_remote_code,
                                                            revision=revision, local_files_only=local_files_only)
        if first_stage_weight is None:  # the default before fusion became explicit
            warnings.warn("CrossEncoderReranker: first_stage_weight=None is deprecated; pass 'recommended' for the "
                          "checkpoint's tuned fusion weight, or 0 (the default) for the model's scores alone.",
                          DeprecationWarning, stacklevel=2)
            first_stage_weight = "recommended"
        self.first_stage_weight = check_fusion_weight(first_stage_weight, owner, _recommended(self.path))
        self.num_labels = int(net.config.num_labels)
        if self.num_labels not in (1, 2):
            raise ValueError(f"{owner}: {self.path} has {self.num_labels} outputs; a cross-encoder has 1 or 2.")
        net = net.float()
        if self.backend == "onnx":
            self._run = onnx_runner(net, self.path, self.tokenizer, kind="cross-encoder", outputs=_logits,
                                    output_axes={"logits": {0: "batch"}}, quantize=quantize, owner=owner)
            self.model = None  # the torch weights are not kept
        else:
            self.model = (int8_dynamic(net) if quantize == "int8" else net).to(device)
            self._run = TorchRunner(self.model, device, _logits)
        self.device = device
        self.quantize = quantize
        self._lock = threading.Lock()

    def _score(self, queries: list[str], docs: list[Document]) -> list[float]:
        passages = [tokenizer_safe(d.full_text) for d in docs]
        queries = [tokenizer_safe(q) for q in queries]
        order = sorted(range(len(passages)), key=lambda i: len(queries[i]) + len(passages[i]))
        out = [0.0] * len(passages)
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer([queries[i] for i in idx], [passages[i] for i in idx], padding=True,
                                     truncation="longest_first", max_length=self.max_length, return_tensors="np")
                logits = self._run(dict(enc))[0]
                s = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
                for i, v in zip(idx, s.tolist()):
                    out[i] = v
        return out

    def __repr__(self) -> str:
        fuse = f", first_stage_weight={self.first_stage_weight}" if self.first_stage_weight else ""
        backend = f", backend={self.backend!r}" if self.backend != "torch" else ""
        return (f"CrossEncoderReranker({self.path.name!r}, max_length={self.max_length}, "
                f"quantize={self.quantize!r}{backend}{fuse})")


def _logits(out: Any) -> tuple[Any]:
    return (out.logits,)
