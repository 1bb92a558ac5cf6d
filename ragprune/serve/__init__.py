"""``ragprune serve``: rerank, prune and context over HTTP (FastAPI + uvicorn).

Needs the ``serve`` extra (``pip install 'ragprune[serve]'``); ``import ragprune`` never imports
it. Build an application with :func:`create_app` or run ``ragprune serve`` (``--help`` lists
every option). Wire formats and routes: :mod:`ragprune.serve.app` and :mod:`ragprune.serve.schemas`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "DynamicBatcher", "QueueFullError", "require_serve_extra"]

_NEEDED = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client",
           "pydantic": "pydantic"}


def require_serve_extra() -> None:
    """Check that the ``serve`` extra is installed.

    Raises:
        ImportError: a package of the extra is missing; the message names ``ragprune[serve]``.
    """
    missing = [pkg for mod, pkg in _NEEDED.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(f"ragprune serve needs {', '.join(missing)}: pip install 'ragprune[serve]'")


_LAZY = {"create_app": "ragprune.serve.app", "DynamicBatcher": "ragprune.serve.batching",
         "QueueFullError": "ragprune.serve.batching"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ragprune.serve' has no attribute {name!r}")
    require_serve_extra()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
