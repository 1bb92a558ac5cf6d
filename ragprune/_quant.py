"""Optional int8 dynamic quantization shared by the transformer-based stages."""

from __future__ import annotations

import warnings
from typing import Any


def check_quantize(quantize: Any, device: str, owner: str) -> str | None:
    """Validate a ``quantize`` argument (``None`` or ``"int8"``, CPU only)."""
    if quantize not in (None, "int8"):
        raise ValueError(f"{owner}: unknown quantize {quantize!r}; expected None or 'int8'.")
    if quantize == "int8" and device != "cpu":
        raise ValueError(f"{owner}: int8 dynamic quantization runs on CPU only.")
    return quantize


def int8_dynamic(net: Any) -> Any:
    """``net`` with every ``torch.nn.Linear`` replaced by a dynamically quantized int8 version."""
    import torch

    with warnings.catch_warnings():  # torch marks eager-mode quantization as deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
