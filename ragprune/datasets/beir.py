"""Load any dataset in BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Gzipped files (``corpus.jsonl.gz``) are read too. Only standard-library parsing: nothing in a
dataset folder can execute code.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._io import iter_jsonl, open_text
from ..types import Document

__all__ = ["BeirDataset", "load_beir", "read_qrels"]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset split.

    Attributes:
        name: Folder name (e.g. ``"beir_scifact"``).
        corpus: Every document, in file order.
        queries: ``{query_id: text}`` for the queries that have judgements in this split,
            in qrels order.
        qrels: ``{query_id: {doc_id: grade}}``; grades > 0 are relevant.
    """

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _open(path: Path):
    return open_text(path, "load_beir")


def _jsonl(path: Path) -> Iterator[dict]:
    return iter_jsonl(path, "load_beir")


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score`` with a header line)."""
    qrels: dict[str, dict[str, int]] = {}
    with _open(Path(path)) as f:
        reader = csv.reader(f, delimiter="\t")
        for n, row in enumerate(reader):
            if not row or (n == 0 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # blank line or header
            if len(row) < 3:
                raise ValueError(f"load_beir: {path}:{n + 1} needs 3 tab-separated columns, got {row!r}.")
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def load_beir(path: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load a BEIR folder.

    Args:
        path: Folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: Which qrels file to use (``test``, ``dev``, ``train``).

    Raises:
        FileNotFoundError: a required file is missing (the message names it).
        ValueError: a malformed line (the message gives file and line number).

    Example:
        >>> ds = load_beir("../shared/data/beir_scifact", "test")      # doctest: +SKIP
        >>> len(ds.corpus), len(ds.queries)                            # doctest: +SKIP
        (5183, 300)
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"load_beir: {root} is not a folder.")
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path)
    corpus = [
        Document(id=str(r["_id"]), text=r.get("text") or "", title=r.get("title") or "")
        for r in _jsonl(root / "corpus.jsonl")
    ]
    all_queries = {str(r["_id"]): r.get("text") or "" for r in _jsonl(root / "queries.jsonl")}
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise ValueError(f"load_beir: {len(missing)} qrels queries are not in queries.jsonl (e.g. {missing[0]!r}).")
    queries = {q: all_queries[q] for q in qrels if all_queries[q].strip()}
    return BeirDataset(name=root.name, corpus=corpus, queries=queries, qrels=qrels)
