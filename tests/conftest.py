"""Shared fixtures. Real data comes from ../shared/data (override with RAGPRUNE_SHARED_DATA)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Two cores shared with other work: one thread per library avoids oversubscription stalls.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAGPRUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set RAGPRUNE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scifact_sample(shared_data):
    """First 300 SciFact documents and 40 real queries (plain dicts, BEIR layout)."""
    folder = shared_data / "beir_scifact"
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(300)]
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][:40]
    return docs, queries


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 sentence-transformers model (no download)."""
    pytest.importorskip("sentence_transformers")
    from ragprune.retrieve.dense import load_sentence_transformer

    return load_sentence_transformer("minilm", device="cpu")


TOY = [
    {"_id": "paris", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"_id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany and its largest city."},
    {"_id": "cats", "title": "Cats", "text": "Cats are small domesticated carnivorous mammals that purr."},
    {"_id": "scurvy", "title": "Scurvy", "text": "Scurvy is a disease caused by a lack of vitamin C."},
    {"_id": "python", "title": "Python", "text": "Python is a programming language that emphasises readability."},
]


@pytest.fixture()
def toy_docs():
    return [dict(d) for d in TOY]
