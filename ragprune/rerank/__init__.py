"""Second stage: reorder candidates (cross-encoder, pairwise LLM prompting)."""

from .base import Reranker

__all__ = ["Reranker", "CrossEncoderReranker", "PairwiseReranker"]


def __getattr__(name: str):  # lazy: torch/transformers only when used
    if name == "CrossEncoderReranker":
        from .cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker
    if name == "PairwiseReranker":
        from .pairwise import PairwiseReranker

        return PairwiseReranker
    raise AttributeError(name)
