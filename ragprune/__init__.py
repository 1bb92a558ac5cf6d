"""ragprune: retrieve, rerank and prune to the few hundred tokens an LLM should read.

The public API is importable from the top level. Heavy backends (torch, faiss, lxml) are
imported lazily, the first time their class is used, so ``import ragprune`` stays light and
has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._io import IndexFormatError
from .types import Document, PrunedDocument, PrunedHtml, ScoredDocument

__version__ = "0.1.0"

_LAZY = {
    "BM25Retriever": "ragprune.retrieve.bm25",
    "DenseRetriever": "ragprune.retrieve.dense",
    "HybridRetriever": "ragprune.retrieve.hybrid",
    "Retriever": "ragprune.retrieve.base",
    "Reranker": "ragprune.rerank.base",
    "Scorer": "ragprune.rerank.base",
    "PointwiseReranker": "ragprune.rerank.base",
    "CrossEncoderReranker": "ragprune.rerank.cross_encoder",
    "PairwiseReranker": "ragprune.rerank.pairwise",
    "LlamaCppLLM": "ragprune.rerank.llm",
    "TransformersLLM": "ragprune.rerank.llm",
    "OpenAICompatibleLLM": "ragprune.rerank.llm",
    "CallableLLM": "ragprune.rerank.llm",
    "Pruner": "ragprune.prune.base",
    "Pipeline": "ragprune.pipeline",
    "HtmlPruner": "ragprune.html.prune",
    "Context": "ragprune.pipeline",
    "fit_context": "ragprune.pipeline",
    "fill_budget": "ragprune.budget",
    "ProvencePruner": "ragprune.prune.provence",
    "Analyzer": "ragprune.text",
    "count_tokens": "ragprune.text",
    "split_sentences": "ragprune.text",
    "sentence_spans": "ragprune.text",
}

__all__ = ["Document", "ScoredDocument", "PrunedDocument", "PrunedHtml", "IndexFormatError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ragprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
