"""Optional int8 dynamic quantization shared by the transformer-based stages."""

from __future__ import annotations

import warnings
from typing import Any


def check_quantize(quantize: Any, device: str, owner: str) -> str | None:
    """Validate a ``quantize`` argument (``None`` or ``"int8"``, CPU only) and the ``device``."""
    if quantize not in (None, "int8"):
        raise ValueError(f"{owner}: unknown quantize {quantize!r}; expected None or 'int8'.")
    if quantize == "int8" and device != "cpu":
        raise ValueError(f"{owner}: int8 dynamic quantization runs on CPU only.")
    check_device(device, owner)
    return quantize


def check_device(device: Any, owner: str) -> None:
    """Raise ValueError for a device string torch cannot parse or a CUDA device without CUDA,
    before any model is loaded."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{owner}: unknown device {device!r} ({e}); use 'cpu' or 'cuda[:N]'.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{owner}: device {device!r} asked for, but this torch has no CUDA device; use 'cpu'.")


def int8_dynamic(net: Any) -> Any:
    """``net`` with every ``torch.nn.Linear`` replaced by a dynamically quantized int8 version."""
    import torch

    with warnings.catch_warnings():  # torch marks eager-mode quantization as deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
