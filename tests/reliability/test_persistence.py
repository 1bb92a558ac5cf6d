"""Crash safety and hostile files for saved indexes (BM25 and dense).

What this protects:

- *Crash safety.* A process SIGKILLed at any point of ``save()`` (at every file-system call of
  the save in turn, and at random moments) leaves a folder that loads and answers exactly like
  either the previous index or the new one, never an error; the next save cleans the leftovers.
  (tests/test_bm25.py kills one BM25 save at one fixed point; this covers every point, random
  points and the dense index.)
- *Concurrent readers.* Loading while another thread saves always succeeds (a reader whose data
  folder was deleted by the save retries from the new manifest).
- *Corrupt files.* Every file of a saved index truncated, emptied, replaced by garbage, bit
  flipped (binary files) or deleted gives ``IndexFormatError`` (a ``ValueError``) or
  ``FileNotFoundError`` naming the file or folder; never a raw ``KeyError``/``TypeError``.
- *No code execution.* ``.npz`` files are read with ``allow_pickle=False``: a pickle payload
  (object array or a plain pickle file) is rejected before anything is unpickled.
- *Format versions.* Indexes from another format version, another index kind or a pre-manifest
  layout fail with a message that says what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ragprune import BM25Retriever, IndexFormatError

from .helpers import FakeEncoder, make_corpus, make_queries

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)")


# --------------------------------------------------------------------------- helpers (also run in subprocesses)


def _build(kind: str, n_old: int = 300, n_new: int = 2000):
    """``(old, new, load)``: two different indexes of one kind and how to load one."""
    if kind == "bm25":
        return (BM25Retriever.from_documents(make_corpus(n_old, seed=1)),
                BM25Retriever.from_documents(make_corpus(n_new, seed=2), method="bm25l"),
                BM25Retriever.load)
    from ragprune import DenseRetriever

    return (DenseRetriever.from_documents(make_corpus(n_old, seed=1), FakeEncoder()),
            DenseRetriever.from_documents(make_corpus(n_new, seed=2), FakeEncoder(), index="hnsw", hnsw_m=8),
            lambda p: DenseRetriever.load(p, model=FakeEncoder()))


def _answers(retriever) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 5)) for h in hits] for hits in retriever.retrieve_many(make_queries(8), k=5)]


def _arm_kill_at(k: int) -> None:  # pragma: no cover - runs in a forked child
    """SIGKILL this process at its k-th file-system call (open/mkdir/rename/replace/fsync/unlink/...)."""
    import builtins
    import io

    calls = [0]

    def wrap(fn):
        def inner(*args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)

        return inner

    for mod, name in [(os, "replace"), (os, "rename"), (os, "fsync"), (os, "mkdir"), (os, "unlink"),
                      (os, "rmdir"), (shutil, "rmtree"), (builtins, "open"), (io, "open")]:
        setattr(mod, name, wrap(getattr(mod, name)))


def _kill_worker(kind: str, root: str, random_kills: int, seed: int) -> None:  # pragma: no cover - subprocess
    """Save ``new`` over ``old`` in forked children killed at every step and at random times;
    print one JSON row per kill: what the folder loads as afterwards ("old", "new", or the error)."""
    import random

    idx = Path(root) / "idx"
    old, new, load = _build(kind)
    expected = {"old": _answers(old), "new": _answers(new)}

    def outcome() -> str:
        try:
            got = _answers(load(idx))
        except Exception as e:  # noqa: BLE001 - reported to the test
            return f"error: {type(e).__name__}: {e}"
        return next((name for name, ans in expected.items() if ans == got), "other")

    def leftovers() -> list[str]:
        return sorted(p.name for p in idx.iterdir() if p.name != "manifest.json" and not p.name.startswith("v-"))

    rows = []
    k = 1
    while k < 500:  # 1. kill at the k-th file-system call, until a save runs to the end
        old.save(idx)
        pid = os.fork()
        if pid == 0:
            _arm_kill_at(k)
            new.save(idx)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        rows.append({"mode": "step", "k": k, "killed": killed, "outcome": outcome(), "leftovers": leftovers()})
        if not killed:
            break
        k += 1
    t = time.perf_counter()
    new.save(Path(root) / "scratch")
    duration = time.perf_counter() - t
    rng = random.Random(seed)
    for _ in range(random_kills):  # 2. kill at a random moment of the save
        old.save(idx)
        delay = rng.uniform(0, duration * 2.5)
        pid = os.fork()
        if pid == 0:
            new.save(idx)
            os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        rows.append({"mode": "random", "delay": delay, "outcome": outcome()})
    new.save(idx)  # 3. a normal save cleans what the killed ones left
    rows.append({"mode": "final", "outcome": outcome(), "leftovers": leftovers(),
                 "data_dirs": len([p for p in idx.iterdir() if p.name.startswith("v-")])})
    print(json.dumps(rows))


def _update_kill_worker(root: str) -> None:  # pragma: no cover - subprocess
    """Load an index memory-mapped, delete and add documents, save over the same folder: in
    forked children killed at every file-system call. One JSON row per kill: what loads after."""
    idx = Path(root) / "idx"
    base = make_corpus(200, seed=1)
    extra = [{**d, "_id": f"new{i}"} for i, d in enumerate(make_corpus(40, seed=3))]
    gone = [d["_id"] for d in base[:15]]
    old = BM25Retriever.from_documents(base)
    expected = {"old": _answers(old), "new": _answers(BM25Retriever.from_documents(base[15:] + extra))}

    def outcome() -> str:
        try:
            got = _answers(BM25Retriever.load(idx))
        except Exception as e:  # noqa: BLE001 - reported to the test
            return f"error: {type(e).__name__}: {e}"
        return next((name for name, ans in expected.items() if ans == got), "other")

    rows = []
    for k in range(1, 500):
        old.save(idx)
        pid = os.fork()
        if pid == 0:
            _arm_kill_at(k)
            r = BM25Retriever.load(idx, mmap=True)
            r.delete(gone)
            r.add_documents(extra)
            r.save(idx)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        rows.append({"k": k, "killed": killed, "outcome": outcome()})
        if not killed:
            break
    print(json.dumps(rows))


def test_a_kill_during_an_update_leaves_the_previous_index_loadable(tmp_path):
    code = f"from tests.reliability.test_persistence import _update_kill_worker; _update_kill_worker({str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) > 10 and not rows[-1]["killed"] and rows[-1]["outcome"] == "new"
    bad = [r for r in rows if r["outcome"] not in ("old", "new")]
    assert not bad, bad[:3]
    assert {r["outcome"] for r in rows if r["killed"]} == {"old", "new"}  # killed before and after the switch


def _run_kill_worker(kind: str, tmp_path: Path, random_kills: int) -> list[dict]:
    code = (f"from tests.reliability.test_persistence import _kill_worker; "
            f"_kill_worker({kind!r}, {str(tmp_path)!r}, {random_kills}, 7)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- crash safety


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_sigkill_at_every_step_and_at_random_moments_of_save(kind, tmp_path):
    if kind == "dense":
        pytest.importorskip("faiss")
    rows = _run_kill_worker(kind, tmp_path, random_kills=6)
    steps = [r for r in rows if r["mode"] == "step"]
    bad = [r for r in rows if r["outcome"] not in ("old", "new")]
    assert not bad, bad
    killed = [r for r in steps if r["killed"]]
    assert len(killed) >= 8, steps  # the save has many steps; every one was a kill point
    assert {r["outcome"] for r in killed} == {"old", "new"}  # before and after the manifest swap
    # once the new manifest is in place, every later kill still loads the new index
    first_new = next(i for i, r in enumerate(killed) if r["outcome"] == "new")
    assert all(r["outcome"] == "new" for r in killed[first_new:])
    assert not steps[-1]["killed"] and steps[-1]["outcome"] == "new"
    final = rows[-1]
    assert final["outcome"] == "new" and final["leftovers"] == [] and final["data_dirs"] == 1


def test_next_save_removes_every_kind_of_leftover(tmp_path):
    """A manifest temp file from a save killed mid-swap used to stay forever."""
    idx = tmp_path / "idx"
    a, b, _ = _build("bm25", n_old=50, n_new=60)
    a.save(idx)
    (idx / ".manifest.json.0123abcd.tmp").write_text("{")
    (idx / ".tmp-deadbeef").mkdir()
    (idx / "v-orphan").mkdir()
    (idx / "notes.txt").write_text("a user's file is left alone")
    b.save(idx)
    assert sorted(p.name for p in idx.iterdir() if not p.name.startswith("v-")) == ["manifest.json", "notes.txt"]
    assert len([p for p in idx.iterdir() if p.name.startswith("v-")]) == 1
    assert _answers(BM25Retriever.load(idx)) == _answers(b)


@pytest.mark.timeout(120)
def test_sigkill_a_separate_process_during_save(tmp_path):
    """A real, separately started process killed at a random moment of a large save."""
    idx = tmp_path / "idx"
    old, new, _ = _build("bm25", n_old=200, n_new=6000)
    old.save(idx)
    expected = (_answers(old), _answers(new))
    code = ("import sys; from tests.reliability.test_persistence import _build; "
            "_, new, _ = _build('bm25', n_new=6000); print('ready', flush=True); "
            f"[new.save({str(idx)!r}) for _ in range(100)]")
    for delay in (0.0, 0.05, 0.15):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert _answers(BM25Retriever.load(idx)) in expected


def test_loading_while_another_thread_saves(tmp_path):
    """Readers used to fail with 'documents.jsonl is missing' when a save deleted their data."""
    a, b, _ = _build("bm25", n_old=200, n_new=300)
    answers = {len(a): _answers(a), len(b): _answers(b)}
    idx = tmp_path / "idx"
    a.save(idx)
    done = threading.Event()
    errors: list[str] = []
    loads = [0]

    def writer():
        for i in range(30):
            (a if i % 2 else b).save(idx)
        done.set()

    def reader():
        while not done.is_set():
            try:
                r = BM25Retriever.load(idx)
                assert _answers(r) == answers[len(r)]
                loads[0] += 1
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert loads[0] > 10


# --------------------------------------------------------------------------- corrupt files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved BM25 index and one saved dense index (fake encoder), copied per test."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    BM25Retriever.from_documents(make_corpus(60)).save(root / "bm25")
    out["bm25"] = (root / "bm25", BM25Retriever.load)
    out["bm25-mmap"] = (root / "bm25", _load_mapped_and_query)
    try:
        from ragprune import DenseRetriever

        DenseRetriever.from_documents(make_corpus(60), FakeEncoder()).save(root / "dense")
        out["dense"] = (root / "dense", lambda p: DenseRetriever.load(p, model=FakeEncoder()))
    except ImportError:
        pass
    return out


def _load_mapped_and_query(path):
    """A memory-mapped load defers the checks that read every posting to query time."""
    r = BM25Retriever.load(path, mmap=True)
    for q in ("cell gene", "protein", "cell cell gene protein growth"):
        r.retrieve(q, k=3)
    r.retrieve_many(["cell gene"] * 5, k=3)
    r.retrieve(" ".join(r.vocab), k=3)  # every posting list
    return r


def _copy(saved, kind, tmp_path) -> tuple[Path, Path, object]:
    if kind not in saved:
        pytest.skip(f"{kind} extra not installed")
    src, load = saved[kind]
    dst = tmp_path / kind
    shutil.copytree(src, dst)
    return dst, next(p for p in dst.iterdir() if p.name.startswith("v-")), load


def _mutations(data: bytes) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {"empty": b"", "garbage": bytes(range(256)) * 4, "deleted": None,
                                    "json_null": b"null", "deep_json": b"[" * 100_000}
    for frac in (0.1, 0.5, 0.9):
        out[f"truncated_{frac}"] = data[: int(len(data) * frac)]
    return out


BM25_FILES = ["manifest.json", "params.json", "vocab.json", "documents.jsonl", "documents.offsets.npy", "scores.npy",
              "indices.npy", "indptr.npy", "nonocc.npy", "tf.npy", "doclen.npy"]
FILES = {"bm25": BM25_FILES, "bm25-mmap": BM25_FILES,
         "dense": ["manifest.json", "params.json", "documents.jsonl", "index.faiss"]}


@pytest.mark.parametrize("kind, victim", [(k, f) for k, fs in FILES.items() for f in fs])
def test_every_damaged_file_fails_clearly(saved, tmp_path, kind, victim):
    root, data_dir, load = _copy(saved, kind, tmp_path)
    path = root / victim if victim == "manifest.json" else data_dir / victim
    original = path.read_bytes()
    for name, content in _mutations(original).items():
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        with pytest.raises((IndexFormatError, FileNotFoundError)) as info:
            load(root)
        msg = str(info.value)
        assert str(path) in msg or str(data_dir) in msg or str(root) in msg, (name, msg)
        assert "rebuild" in msg or "not a ragprune index" in msg or "no manifest" in msg, (name, msg)
        path.write_bytes(original)
    load(root)  # restored: loads again


@pytest.mark.parametrize("kind, victim", [("bm25", "scores.npy"), ("bm25", "indices.npy"), ("bm25-mmap", "indices.npy"),
                                          ("bm25-mmap", "indptr.npy"), ("bm25-mmap", "documents.offsets.npy"),
                                          ("dense", "index.faiss")])
def test_bit_flips_in_binary_files_never_crash(saved, tmp_path, kind, victim):
    root, data_dir, load = _copy(saved, kind, tmp_path)
    path = data_dir / victim
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(original), 40):
        flipped = bytearray(original)
        flipped[pos] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            r = load(root)
            r.retrieve("cell gene", k=3)  # a flip in vector data may go unnoticed; it must still work
        except IndexFormatError as e:
            assert str(data_dir) in str(e)
    path.write_bytes(original)


@pytest.mark.parametrize("params_patch, msg", [
    ({"n_docs": -1}, "inconsistent"),
    ({"n_terms": "many"}, "bad params"),
    ({"analyzer": {"stemmer": "klingon", "stopwords": [], "min_token_length": 1}}, "bad params"),
    ({"method": "bm26"}, "bad params"),
    ({"analyzer": {"stemmer": 5, "stopwords": [], "min_token_length": 1}}, "bad params"),
    ({"analyzer": {"stemmer": "english", "stopwords": [None], "min_token_length": 1}}, "bad params"),
    ({"k1": float("nan")}, "bad params"),
    ({"k1": None}, "bad params"),
])
def test_bm25_bad_params_fail_clearly(saved, tmp_path, params_patch, msg):
    root, data_dir, load = _copy(saved, "bm25", tmp_path)
    params = json.loads((data_dir / "params.json").read_text())
    (data_dir / "params.json").write_text(json.dumps({**params, **params_patch}))
    with pytest.raises(IndexFormatError, match=msg):
        load(root)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("arrays", [
    {"scores": np.array(["a", "b"]), "indices": np.zeros(2, np.int32), "indptr": np.zeros(3), "nonocc": np.zeros(2)},
    {"indices": np.array([0, 99999, 1], np.int32)},
    {"nonocc": np.array(["x"] * 5)},
    {"indptr": np.array([5, 3, 1])},
    {"tf": np.zeros(3, np.float32)},
    {"doclen": np.zeros((2, 2), np.int32)},
])
def test_bm25_arrays_of_the_wrong_kind_fail_clearly(saved, tmp_path, arrays, mmap):
    """Arrays of the wrong dtype or shape used to escape as a raw ValueError from numpy."""
    root, data_dir, _ = _copy(saved, "bm25", tmp_path)
    for name, arr in arrays.items():
        if name == "indices":  # the right length, one document out of range
            current = np.load(data_dir / "indices.npy")
            arr = current.copy()
            arr[len(arr) // 2] = 99999
        np.save(data_dir / f"{name}.npy", arr)
    with pytest.raises(IndexFormatError, match="rebuild the index"):
        _load_mapped_and_query(root) if mmap else BM25Retriever.load(root)


@pytest.mark.parametrize("vocab", ['{"a": 1}', "42", '["ok", 7]', '"string"'])
def test_bm25_vocab_of_the_wrong_shape_fails_clearly(saved, tmp_path, vocab):
    """A JSON number used to escape as TypeError: object of type 'int' has no len()."""
    root, data_dir, load = _copy(saved, "bm25", tmp_path)
    (data_dir / "vocab.json").write_text(vocab)
    with pytest.raises(IndexFormatError, match="vocab"):
        load(root)


# --------------------------------------------------------------------------- never unpickle


class _Exploit:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.parametrize("mmap", [False, True])
def test_pickle_payloads_in_npy_are_rejected_before_unpickling(saved, tmp_path, monkeypatch, mmap):
    root, data_dir, load = _copy(saved, "bm25", tmp_path)
    marker = tmp_path / "PWNED"
    npy = data_dir / "scores.npy"
    evil = np.empty(1, dtype=object)
    evil[0] = _Exploit(str(marker))
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    for payload in ("object array", "raw pickle"):
        if payload == "object array":
            np.save(npy, evil, allow_pickle=True)
        else:
            npy.write_bytes(pickle.dumps(_Exploit(str(marker))))
        with pytest.raises(IndexFormatError, match=re.escape(str(npy))):
            BM25Retriever.load(root, mmap=mmap)
        assert not marker.exists(), f"{payload}: the pickle was executed"
    assert calls and all(c is False for c in calls)  # every np.load of an index refused pickles


def test_format_1_indexes_still_load_and_refuse_pickles(tmp_path, monkeypatch):
    """Indexes of format 1 (scores.npz) load; a pickle inside is refused."""
    src = Path(__file__).parents[1] / "data" / "bm25_index_v1_old_defaults"
    root = tmp_path / "v1"
    shutil.copytree(src, root)
    assert BM25Retriever.load(root).retrieve("capital city of France", k=1)[0].id == "paris"
    npz = next(root.glob("v-*")) / "scores.npz"
    marker = tmp_path / "PWNED"
    npz.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(IndexFormatError, match=re.escape(str(npz))):
        BM25Retriever.load(root)
    assert not marker.exists()


def test_saved_indexes_hold_no_pickles(saved):
    allowed = {".json", ".jsonl", ".npy", ".faiss"}
    for root, _ in saved.values():
        files = [p for p in root.rglob("*") if p.is_file()]
        assert files and {p.suffix for p in files} <= allowed
        for p in files:
            assert p.read_bytes()[:2] != b"\x80\x04", p  # no pickle protocol header


# --------------------------------------------------------------------------- versions and kinds


@pytest.mark.parametrize("kind", ["bm25", "dense"])
@pytest.mark.parametrize("version, msg", [(3, "format version 3"), (0, "format version 0"), ("1", "format version 1"),
                                          (None, "format version None")])
def test_other_format_versions_fail_clearly(saved, tmp_path, kind, version, msg):
    root, data_dir, load = _copy(saved, kind, tmp_path)
    for f in (root / "manifest.json", data_dir / "params.json"):  # both agree: a whole index of that version
        d = json.loads(f.read_text())
        d["format_version"] = version
        f.write_text(json.dumps(d))
    with pytest.raises(IndexFormatError, match=msg) as info:
        load(root)
    assert "rebuild the index with this version" in str(info.value) and str(root) in str(info.value)


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_params_disagreeing_with_the_manifest(saved, tmp_path, kind):
    root, data_dir, load = _copy(saved, kind, tmp_path)
    d = json.loads((data_dir / "params.json").read_text())
    (data_dir / "params.json").write_text(json.dumps({**d, "format_version": 7}))
    with pytest.raises(IndexFormatError, match="does not match its manifest"):
        load(root)


def test_wrong_kind_and_legacy_layouts(saved, tmp_path):
    bm25_root, _, bm25_load = _copy(saved, "bm25", tmp_path)
    if "dense" in saved:
        dense_root, _, dense_load = _copy(saved, "dense", tmp_path)
        with pytest.raises(IndexFormatError, match="holds a 'dense' index, not 'bm25'"):
            bm25_load(dense_root)
        with pytest.raises(IndexFormatError, match="holds a 'bm25' index, not 'dense'"):
            dense_load(bm25_root)
    legacy = tmp_path / "legacy"  # a pre-manifest index: one pickle file
    legacy.mkdir()
    marker = tmp_path / "PWNED"
    (legacy / "bm25.pkl").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(FileNotFoundError, match="not a ragprune index folder"):
        BM25Retriever.load(legacy)
    assert not marker.exists()
    (legacy / "manifest.json").write_text(json.dumps({"format": "something-else", "version": 3}))
    with pytest.raises(IndexFormatError, match="not a ragprune manifest"):
        BM25Retriever.load(legacy)


def test_dense_index_loaded_with_a_model_of_another_dimension(saved, tmp_path):
    if "dense" not in saved:
        pytest.skip("dense extra not installed")
    from ragprune import DenseRetriever

    class Wider(FakeEncoder):
        dim = 48

    root, _, _ = _copy(saved, "dense", tmp_path)
    r = DenseRetriever.load(root, model=Wider())
    with pytest.raises(ValueError, match="48-d embeddings but the index holds 32-d"):
        r.retrieve("cell", k=2)  # used to be a bare AssertionError from faiss

    class Declares(Wider):
        def get_embedding_dimension(self):
            return self.dim

    with pytest.raises(ValueError, match="load it with the model it was built with"):
        DenseRetriever.load(root, model=Declares())
