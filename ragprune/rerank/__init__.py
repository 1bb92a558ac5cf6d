"""Second stage: reorder candidates (cross-encoder, pairwise LLM prompting).

``Scorer`` (pointwise ``score``) and ``Reranker`` (list-wise ``rerank``) are separate interfaces;
``PointwiseReranker`` is both (rerank by sorting on scores, optional first-stage fusion)."""

from .base import PointwiseReranker, Reranker, Scorer

__all__ = ["Reranker", "Scorer", "PointwiseReranker", "CrossEncoderReranker", "PairwiseReranker"]


def __getattr__(name: str):  # lazy: torch/transformers only when used
    if name == "CrossEncoderReranker":
        from .cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker
    if name == "PairwiseReranker":
        from .pairwise import PairwiseReranker

        return PairwiseReranker
    raise AttributeError(name)
