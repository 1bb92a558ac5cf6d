"""Documents of a saved index, read from disk on demand.

An index folder keeps its documents as JSON lines (``documents.jsonl``, written by
:func:`ragprune._io.write_documents`) plus the byte offset of every line
(``documents.offsets.npy``: ``n + 1`` int64 values). :class:`DiskDocuments` memory-maps both and
parses a document only when it is asked for, so a retriever loaded with ``mmap=True`` holds no
document text in RAM: a query fetches its hits, nothing else. :class:`DocumentView` is the
result of :meth:`~ragprune.retrieve.BM25Retriever.add_documents` / ``delete`` on such a corpus:
the kept positions of the store plus the new documents, still without reading the store.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from ._io import IndexFormatError, document_from_json
from .types import Document

__all__ = ["DiskDocuments", "DocumentView"]


class _Documents(Sequence[Document]):
    """A read-only sequence of documents: subclasses give ``__len__`` and ``_get(i)`` for
    ``0 <= i < len``; indexing with negatives and slices and iteration come from here."""

    def _get(self, i: int) -> Document:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> Document: ...
    @overload
    def __getitem__(self, i: slice) -> list[Document]: ...

    def __getitem__(self, i: int | slice) -> Document | list[Document]:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"document position {i} out of range for {n} documents")
        return self._get(i)

    def __iter__(self) -> Iterator[Document]:
        for i in range(len(self)):
            yield self._get(i)


class DiskDocuments(_Documents):
    """Read-only, offset-indexed JSON-lines store: ``store[i]`` parses line ``i`` only.

    Args:
        path: The ``documents.jsonl`` file.
        offsets: ``n + 1`` ascending byte offsets (line ``i`` is ``[offsets[i], offsets[i+1])``),
            usually memory-mapped from ``documents.offsets.npy``.

    Raises:
        ragprune.IndexFormatError: the offsets do not describe the file.
    """

    def __init__(self, path: Path, offsets: np.ndarray) -> None:
        self.path = Path(path)
        if offsets.ndim != 1 or offsets.size < 1 or offsets.dtype.kind not in "iu":
            raise IndexFormatError(f"load: the offsets of {self.path} are not a 1-d integer array; rebuild the index.")
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError) as e:
            raise IndexFormatError(f"load: {self.path} is missing or unreadable ({e}); rebuild the index.") from e
        if int(offsets[0]) != 0 or int(offsets[-1]) != size:
            raise IndexFormatError(f"load: {self.path} does not match its offsets (file of {size} bytes); rebuild the index.")
        self._offsets = offsets

    def __len__(self) -> int:
        return int(self._offsets.size) - 1

    def _get(self, i: int) -> Document:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        if not 0 <= start < end or self._map is None or end > len(self._map):
            raise IndexFormatError(f"load: the offsets of {self.path} are corrupt at document {i}; rebuild the index.")
        try:
            return document_from_json(self._map[start:end])
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise IndexFormatError(f"load: {self.path} is corrupt at document {i} ({e}); rebuild the index.") from e

    def __repr__(self) -> str:
        return f"DiskDocuments({str(self.path)!r}, n={len(self)})"


class DocumentView(_Documents):
    """``base[positions[0]], base[positions[1]], ...`` followed by ``extra``: a corpus after
    additions and deletions, without copying or reading the base store."""

    def __init__(self, base: Sequence[Document], positions: np.ndarray, extra: Sequence[Document] = ()) -> None:
        self.base = base
        self.positions = np.asarray(positions, dtype=np.int64)
        self.extra = list(extra)

    def __len__(self) -> int:
        return int(self.positions.size) + len(self.extra)

    def _get(self, i: int) -> Document:
        m = self.positions.size
        return self.base[int(self.positions[i])] if i < m else self.extra[i - m]

    def select(self, keep: np.ndarray) -> DocumentView:
        """The view of the documents where the boolean mask ``keep`` is true."""
        m = self.positions.size
        extra = [d for d, k in zip(self.extra, keep[m:].tolist()) if k]
        return DocumentView(self.base, self.positions[keep[:m]], extra)

    def __repr__(self) -> str:
        return f"DocumentView(base={self.base!r}, n={len(self)})"
