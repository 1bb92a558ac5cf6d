"""Small helpers shared by the reliability tests (also imported by their subprocess scripts)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

WORDS = ("vitamin scurvy sailor lime citrus capital france paris berlin germany river city cat dog purr "
         "python language code model protein cell gene virus vaccine ocean ship storm island bridge tower "
         "hotel fountain garden museum music piano violin theory energy quantum particle star planet moon").split()


def make_corpus(n_docs: int = 300, seed: int = 0) -> list[dict[str, str]]:
    """A deterministic BEIR-style corpus of short multi-sentence documents."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                 for _ in range(rng.randint(1, 5))]
        docs.append({"_id": f"d{i}", "title": rng.choice(WORDS).title(), "text": " ".join(sents)})
    return docs


def make_queries(n: int = 50, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) for _ in range(n)]


class FakeEncoder:
    """A deterministic stand-in for a sentence-transformers model: hashed bag-of-words vectors.

    Cheap enough to use in subprocesses and threads; DenseRetriever only needs ``encode``.
    """

    dim = 32

    def encode(self, texts: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, **_: Any) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "replace"), digest_size=4).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 8) % 2 else -1.0
            out[i, 0] += 1e-3  # never an all-zero vector
        if normalize_embeddings:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def run_bounded(fn: Callable[[], Any], timeout: float, what: str = "call") -> Any:
    """Run ``fn`` in a daemon thread; fail the test if it does not return within ``timeout`` s.

    Exceptions raised by ``fn`` are re-raised in the caller.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{what} did not finish within {timeout:.0f} s (hang or super-linear blow-up)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# Exceptions that mean "a library bug leaked out" rather than "the caller got a clear error".
UNRELATED = (IndexError, KeyError, AttributeError, ZeroDivisionError, AssertionError, RecursionError,
             UnicodeError, OverflowError, NameError, LookupError)


def call_or_clear_error(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Call ``fn``; return ``(result, None)``, or ``(None, error)`` for a clear ValueError/TypeError.

    Any other exception (or a ValueError that is really a UnicodeError, a KeyError dressed up as a
    LookupError, ...) fails the test with the original traceback.
    """
    try:
        return fn(), None
    except (ValueError, TypeError) as e:
        if isinstance(e, UNRELATED) or not str(e):
            raise AssertionError(f"unclear {type(e).__name__}: {e!r}") from e
        return None, e
