"""Third stage: keep only the sentences that answer the query (Provence-style pruning)."""

from .base import Pruner

__all__ = ["Pruner", "ProvencePruner"]


def __getattr__(name: str):  # lazy: torch/transformers only when used
    if name == "ProvencePruner":
        from .provence import ProvencePruner

        return ProvencePruner
    raise AttributeError(name)
