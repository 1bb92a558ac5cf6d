"""First stage: find candidate documents (BM25, dense, hybrid)."""

from .base import Retriever
from .bm25 import BM25Retriever

__all__ = ["Retriever", "BM25Retriever", "DenseRetriever", "HybridRetriever"]


def __getattr__(name: str):  # lazy: dense needs torch/faiss, which the core does not require
    if name == "DenseRetriever":
        from .dense import DenseRetriever

        return DenseRetriever
    if name == "HybridRetriever":
        from .hybrid import HybridRetriever

        return HybridRetriever
    raise AttributeError(name)
