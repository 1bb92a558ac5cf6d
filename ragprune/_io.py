"""Crash-safe, pickle-free index folders.

Layout of a saved index::

    idx/
      manifest.json          {"format": "ragprune-index", "kind": "bm25", "format_version": 1,
                              "data": "v-3f2a..."}
      v-3f2a.../             the live data: params.json, documents.jsonl, *.npz, ...

``save`` writes a complete new ``v-*`` folder first (files fsynced), then swaps
``manifest.json`` with one atomic ``os.replace``, then deletes the previous data folder. A crash
at any moment leaves either the old manifest (pointing at untouched old data) or the new one:
never a half-written index in place of a good one. A reader whose data folder is deleted by a
concurrent save while it reads (:func:`load_index`) starts again from the new manifest. Loading reads only JSON, JSONL, ``.npz``
(``allow_pickle=False``) and FAISS files: nothing in an index can execute code.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .types import Document

MANIFEST = "manifest.json"
FORMAT = "ragprune-index"
T = TypeVar("T")
_OWN_ENTRY = re.compile(r"(?:\.tmp-|v-)[0-9a-f]{32}")  # data and temp folders save() creates


class IndexFormatError(ValueError):
    """An index folder is missing, corrupt, of another kind, or from another format version."""


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temp file + fsync + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_index_dir(
    path: str | os.PathLike[str],
    *,
    kind: str,
    format_version: int,
    params: dict[str, Any],
    write_data: Callable[[Path], None],
) -> Path:
    """Atomically (re)place the index at ``path``; see the module docstring.

    Args:
        path: Index folder (created if missing).
        kind: Index type, checked on load (e.g. ``"bm25"``).
        format_version: Version of the on-disk layout, checked on load.
        params: JSON-serialisable parameters saved as ``params.json``.
        write_data: Writes the data files into the folder it is given.

    Returns:
        The folder that now holds the live data.
    """
    if not os.fspath(path):
        raise ValueError("save: the index path is empty; give a folder name.")
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise IndexFormatError(f"save: {root} exists and is not a folder; pick another path.")
    _check_ours(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write_data(tmp)
        write_json(tmp / "params.json", {"kind": kind, "format_version": format_version, **params})
        for f in tmp.iterdir():
            _fsync_path(f)
        final = root / f"v-{uuid.uuid4().hex}"
        os.rename(tmp, final)
        _fsync_path(root)
        write_json(root / MANIFEST, {"format": FORMAT, "kind": kind,
                                     "format_version": format_version, "data": final.name})
        _fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Only now is the old data unreachable; remove it and leftovers of killed saves.
    # (One writer per index folder at a time; concurrent readers are fine.)
    for entry in root.iterdir():
        if entry.name != final.name and entry.name.startswith((".tmp-", "v-")):  # the folder is ours
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{MANIFEST}.") and entry.name.endswith(".tmp"):
            entry.unlink(missing_ok=True)  # a manifest temp file left by a killed save
    return final


def _check_ours(root: Path) -> None:
    """Refuse to save into a folder that holds something other than a ragprune index: the
    save cleans up the folder's old data, which must never touch a user's files."""
    if not root.is_dir() or all(_OWN_ENTRY.fullmatch(e.name) for e in root.iterdir()):
        return  # new, empty, or only the leftovers of a killed first save
    mpath = root / MANIFEST
    try:
        ours = json.loads(mpath.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, RecursionError, AttributeError):
        ours = False
    if not ours:
        raise IndexFormatError(f"save: {root} is not empty and holds no ragprune index ({MANIFEST}); "
                               "save into a new or empty folder, or into an existing index to replace it.")


def read_index_dir(path: str | os.PathLike[str], *, kind: str,
                   format_version: int | tuple[int, ...]) -> tuple[Path, dict[str, Any]]:
    """Locate the live data of an index folder and return ``(data_dir, params)``.

    ``format_version`` is the version this code reads, or a tuple of every version it reads.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no ragprune index.
        IndexFormatError: the index is corrupt, of another kind or another format version.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"load: no index folder at {root}; build one and call .save({str(root)!r}) first.")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"load: {root} has no {MANIFEST}; it is not a ragprune index folder.")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise IndexFormatError(f"load: {mpath} is corrupt ({e}); rebuild the index.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"load: {mpath} is not a ragprune manifest; rebuild the index.")
    if manifest.get("kind") != kind:
        raise IndexFormatError(
            f"load: {root} holds a {manifest.get('kind')!r} index, not {kind!r}; use the matching class."
        )
    versions = format_version if isinstance(format_version, tuple) else (format_version,)
    version = manifest.get("format_version")
    if type(version) is not int or version not in versions:
        readable = " or ".join(map(str, versions))
        raise IndexFormatError(
            f"load: {root} was written with index format version {version}, "
            f"this ragprune reads version {readable}; rebuild the index with this version."
        )
    name = manifest.get("data")
    if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
        raise IndexFormatError(f"load: {mpath} names no valid data folder; rebuild the index.")
    data = root / name
    try:
        params = json.loads((data / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise IndexFormatError(f"load: {data / 'params.json'} is missing or corrupt ({e}); rebuild the index.") from e
    if not isinstance(params, dict) or params.get("kind") != kind or params.get("format_version") != version:
        raise IndexFormatError(f"load: {data / 'params.json'} does not match its manifest; rebuild the index.")
    return data, params


def load_index(path: str | os.PathLike[str], *, kind: str, format_version: int | tuple[int, ...],
               read: Callable[[Path, dict[str, Any]], T], attempts: int = 5) -> T:
    """:func:`read_index_dir`, then ``read(data_dir, params)``, retried when a concurrent
    :func:`write_index_dir` swapped the manifest and deleted the data being read."""
    for attempt in range(attempts):
        live = _live_data(path)
        try:
            data_dir, params = read_index_dir(path, kind=kind, format_version=format_version)
            return read(data_dir, params)
        except IndexFormatError:
            if attempt + 1 == attempts or _live_data(path) in (None, live):
                raise  # really corrupt, not replaced under our feet
    raise AssertionError("unreachable")  # pragma: no cover


def _live_data(path: str | os.PathLike[str]) -> str | None:
    """The data folder the manifest names right now (None if unreadable)."""
    try:
        name = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, RecursionError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def write_documents(path: Path, docs: Iterable[Document]) -> Any:
    """Write documents as JSON lines (id, title, text, metadata), UTF-8, one per line.

    A document holding lone surrogates (not encodable as UTF-8) is written with ASCII escapes,
    which JSON round-trips exactly.

    Returns:
        The ``n + 1`` byte offsets of the lines (int64 array), the index of
        :class:`ragprune._docstore.DiskDocuments`.
    """
    from array import array

    import numpy as np

    offsets = array("q", [0])
    pos = 0
    with open(path, "wb") as f:
        for d in docs:
            row = {"id": d.id, "title": d.title, "text": d.text, "metadata": dict(d.metadata)}
            try:
                line = json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")
            except UnicodeEncodeError:
                line = json.dumps(row, ensure_ascii=True, default=str).encode("ascii")
            f.write(line + b"\n")
            pos += len(line) + 1
            offsets.append(pos)
    return np.frombuffer(offsets, dtype=np.int64).copy()


def document_from_json(line: bytes | str) -> Document:
    """Parse one line written by :func:`write_documents`."""
    row = json.loads(line)
    return Document(id=row["id"], text=row["text"], title=row.get("title", ""), metadata=row.get("metadata") or {})


def read_documents(path: Path) -> list[Document]:
    """Read documents written by :func:`write_documents`."""
    docs = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                docs.append(document_from_json(line))
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise IndexFormatError(f"load: {path} is missing or corrupt ({type(e).__name__}: {e}); rebuild the index.") from e
    return docs


def write_records(path: str | os.PathLike[str], records: Iterable[Any]) -> None:
    """Write dataclass records as JSON lines, atomically; ``None`` fields are left out."""
    from dataclasses import asdict

    tmp = Path(f"{path}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: v for k, v in asdict(r).items() if v is not None}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_records(path: str | os.PathLike[str], parse: Callable[[dict[str, Any]], Any], what: str) -> list[Any]:
    """Parse every JSON line of ``path`` with ``parse``; errors name the file, line and ``what``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n} is not a valid {what} ({e}).") from e
    if not out:
        raise ValueError(f"{path} holds no {what}s.")
    return out


def load_npz(path: Path) -> dict[str, Any]:
    """Load an ``.npz`` file without ever unpickling objects."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise IndexFormatError(f"load: {path} is missing or corrupt ({e}); rebuild the index.") from e


def load_npy(path: Path, *, mmap: bool = False) -> Any:
    """Load one ``.npy`` array without ever unpickling; ``mmap=True`` maps it read-only."""
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except Exception as e:  # a damaged header fails inside numpy's parser (SyntaxError, TokenError, ...)
        raise IndexFormatError(f"load: {path} is missing or corrupt ({e}); rebuild the index.") from e
    if not isinstance(arr, np.ndarray):
        raise IndexFormatError(f"load: {path} is not a single array; rebuild the index.")
    return arr


def save_npy(path: Path, arr: Any) -> None:
    """Write one array as ``.npy`` (never pickled: object arrays are refused)."""
    import numpy as np

    np.save(path, arr, allow_pickle=False)


def open_text(path: Path, owner: str) -> Any:
    """Open a UTF-8 text file, or its ``.gz`` twin when only that exists (or it is named)."""
    for p in (path, path.with_name(path.name + ".gz")):
        if p.is_file():
            return gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")
    raise FileNotFoundError(f"{owner}: {path} not found (nor {path.name}.gz).")


def iter_jsonl(path: Path, owner: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a (gzipped) JSON-lines file, read lazily; errors name the line."""
    with open_text(path, owner) as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):  # noqa: B007 - n names the line of a decoding error
                if line.strip():
                    try:
                        row = json.loads(line)
                    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
                        raise ValueError(f"{owner}: {path}:{n} is not valid JSON ({e}).") from e
                    if not isinstance(row, dict):
                        raise ValueError(f"{owner}: {path}:{n} is a JSON {type(row).__name__}, not an object.")
                    yield row
        except UnicodeDecodeError as e:
            raise ValueError(f"{owner}: {path} is not UTF-8 text (line {n + 1}, byte {e.start}); "
                             "re-encode the file as UTF-8.") from e
