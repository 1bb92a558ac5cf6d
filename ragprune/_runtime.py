"""Inference backends shared by the transformer stages: torch (the reference) and ONNX Runtime.

A *runner* takes a tokenizer's batch as numpy arrays (``input_ids``, ``attention_mask``, ...)
and returns the model's outputs as float32 numpy arrays, whichever backend computes them, so
:class:`~ragprune.rerank.cross_encoder.CrossEncoderReranker` and
:class:`~ragprune.prune.provence.ProvencePruner` hold one code path for both.

``backend="onnx"`` exports the checkpoint to ONNX once (``torch.onnx``), optionally quantizes it
with ONNX Runtime's dynamic int8 quantization (per-channel weights), and caches the files under
``$RAGPRUNE_ONNX_DIR`` (default: ``onnx/`` in the ragprune model cache), keyed by a hash of the
checkpoint's config and weights, so a changed checkpoint is never served by a stale export.
Writes are atomic (temp file + rename); a half-written export is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx"]
BACKENDS = ("torch", "onnx")
EXPORT_VERSION = 1  # bump when the export recipe changes: old cached files are not reused
_WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "provence_heads.safetensors",
                 "provence.json")


def check_backend(backend: Any, device: str, owner: str) -> Backend:
    """Validate ``backend`` (``"torch"`` or ``"onnx"``; ONNX runs on CPU here)."""
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: unknown backend {backend!r}; expected 'torch' or 'onnx'.")
    if backend == "onnx":
        if device != "cpu":
            raise ValueError(f"{owner}: backend='onnx' runs on CPU (ONNX Runtime's CPU provider); use device='cpu' "
                             "or backend='torch' for a GPU.")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ImportError(f"{owner}: backend='onnx' needs onnxruntime and onnx: pip install 'ragprune[onnx]'") from e
    return backend


def onnx_dir() -> Path:
    """Where exported ONNX models are cached: ``$RAGPRUNE_ONNX_DIR`` or ``<models_dir>/onnx``."""
    from .models import models_dir

    env = os.environ.get("RAGPRUNE_ONNX_DIR")
    return Path(env).expanduser() if env else models_dir() / "onnx"


def checkpoint_digest(path: Path, kind: str) -> str:
    """A short hash of the checkpoint's config and weight files (and the export recipe)."""
    h = hashlib.sha256(f"{kind}:v{EXPORT_VERSION}".encode())
    for name in _WEIGHT_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


class TorchRunner:
    """Runs a torch module; ``outputs`` picks the output tensors from what the module returns."""

    def __init__(self, net: Any, device: str, outputs: Callable[[Any], Sequence[Any]]) -> None:
        self.net, self.device, self.outputs = net, device, outputs

    def __call__(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.net(**{k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in batch.items()})
            return [t.float().cpu().numpy() for t in self.outputs(out)]


class OnnxRunner:
    """Runs an ONNX file with ONNX Runtime's CPU provider (``threads`` intra-op threads)."""

    def __init__(self, file: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or _torch_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.file = file
        self.session = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feed = {k: np.asarray(batch[k], dtype=np.int64) for k in self.inputs if k in batch}
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, feed)]


def _torch_threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is installed with every model extra
        return max(1, os.cpu_count() or 1)


def onnx_runner(net: Any, path: Path, tokenizer: Any, *, kind: str, outputs: Callable[[Any], Sequence[Any]],
                output_axes: Mapping[str, Mapping[int, str]], quantize: str | None, threads: int | None = None,
                owner: str) -> OnnxRunner:
    """The cached ONNX export of ``net`` (exported and, for ``quantize="int8"``, quantized on first use).

    Args:
        net: The loaded torch module (fp32, eval mode).
        path: The checkpoint folder (its files key the cache).
        tokenizer: Builds the example batch that fixes the input names.
        kind: ``"cross-encoder"`` or ``"provence"`` (part of the cache key).
        outputs: Picks the output tensors from ``net(**batch)``.
        output_axes: Name of each output in the ONNX graph and its dynamic axes
            (``{"logits": {0: "batch"}}``).
        quantize: ``None`` (fp32) or ``"int8"`` (dynamic, per-channel int8 weights).
    """
    folder = onnx_dir() / f"{path.name}-{checkpoint_digest(path, kind)}"
    fp32 = folder / "model.onnx"
    file = fp32 if quantize is None else folder / "model.int8.onnx"
    with _EXPORT_LOCK:
        if not fp32.is_file():
            logger.info("%s: exporting %s to ONNX (once) in %s", owner, path.name, folder)
            _atomic(fp32, lambda tmp: _export(net, tokenizer, outputs, output_axes, tmp, owner))
        if quantize == "int8" and not file.is_file():
            logger.info("%s: quantizing the ONNX export to int8 (once)", owner)
            _atomic(file, lambda tmp: _quantize_int8(fp32, tmp))
    try:
        return OnnxRunner(file, threads)
    except Exception as e:  # a corrupt cached file (disk full, edited): say where it is
        raise ValueError(f"{owner}: ONNX Runtime could not load {file} ({type(e).__name__}: {e}); delete "
                         f"{folder} to export it again.") from e


_EXPORT_LOCK = threading.Lock()


def _atomic(dest: Path, write: Callable[[Path], None]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _export(net: Any, tokenizer: Any, outputs: Callable[[Any], Sequence[Any]],
            output_axes: Mapping[str, Mapping[int, str]], dest: Path, owner: str) -> None:
    import torch

    sample = tokenizer(["a query", "another query"], ["a passage to read", "a second, longer passage to read"],
                       padding=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(outputs(self.net(**dict(zip(names, args)))))

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update({n: dict(a) for n, a in output_axes.items()})
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            torch.onnx.export(_Graph().eval(), tuple(sample[n] for n in names), str(dest), input_names=names,
                              output_names=list(output_axes), dynamic_axes=axes, opset_version=17, dynamo=False)
        except Exception as e:
            raise ValueError(f"{owner}: could not export the model to ONNX ({type(e).__name__}: {e}); use "
                             "backend='torch'.") from e


def _quantize_int8(src: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _DropRecords()
    root.addFilter(quiet)  # onnxruntime.quantization logs advice through the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.removeFilter(quiet)


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.replace(os.sep, "/").count("onnxruntime/quantization")
