"""Text utilities shared by every stage: sentence splitting, token counting, BM25 analysis.

Each piece is a small protocol with a default implementation, so callers can inject their own
(a spaCy splitter, a tiktoken counter, a language-specific analyzer).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "SentenceSplitter",
    "TokenCounter",
    "split_sentences",
    "sentence_spans",
    "count_tokens",
    "HFTokenCounter",
    "Analyzer",
    "LUCENE_STOPWORDS",
]


# --------------------------------------------------------------------------------------------
# Sentence splitting
# --------------------------------------------------------------------------------------------


@runtime_checkable
class SentenceSplitter(Protocol):
    """Anything that maps a text to character spans ``[(start, end), ...]`` of its sentences.

    Spans must be in order, non-overlapping and inside ``text``; gaps (whitespace) are allowed.
    """

    def __call__(self, text: str) -> list[tuple[int, int]]: ...


_FALLBACK_SENT = re.compile(r"[^.!?\n]+(?:[.!?]+[\"')\]]*|\n|$)")


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    """Shrink ``[s, e)`` past leading and trailing whitespace."""
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _regex_spans(text: str) -> list[tuple[int, int]]:
    spans = [_trim(text, m.start(), m.end()) for m in _FALLBACK_SENT.finditer(text)]
    return [(s, e) for s, e in spans if e > s]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentences with blingfire and return character spans.

    Newlines always end a sentence (lists and headings are not glued together). Falls back to
    a punctuation regex when blingfire's offsets do not line up with the text.

    Example:
        >>> sentence_spans("Paris is big. It is in France.")
        [(0, 13), (14, 30)]
    """
    if not isinstance(text, str):
        raise TypeError(f"sentence_spans: text must be a str, got {type(text).__name__}.")
    spans: list[tuple[int, int]] = []
    for line_start, line in _lines(text):
        spans.extend((line_start + s, line_start + e) for s, e in _blingfire_spans(line))
    return spans


def _lines(text: str) -> Iterable[tuple[int, str]]:
    pos = 0
    for line in text.split("\n"):
        if line.strip():
            yield pos, line
        pos += len(line) + 1


# blingfire's Python wrapper maps offsets with a per-byte Python loop and allocates ~18 bytes of
# buffers per input byte: a multi-megabyte line takes tens of seconds and hundreds of MB.
_BLINGFIRE_MAX_LINE = 100_000


def _blingfire_spans(line: str) -> list[tuple[int, int]]:
    if len(line) > _BLINGFIRE_MAX_LINE:
        return _regex_spans(line)
    try:
        import blingfire
    except ImportError:  # pragma: no cover - blingfire is a core dependency
        return _regex_spans(line)
    try:
        _, offsets = blingfire.text_to_sentences_and_offsets(line)
    except Exception:  # pragma: no cover - defensive: odd unicode
        return _regex_spans(line)
    spans = []
    prev = 0
    for s, e in offsets:
        if not (prev <= s < e <= len(line)):
            return _regex_spans(line)
        s, e = _trim(line, s, e)
        if e > s:
            spans.append((s, e))
            prev = e
    return spans or _regex_spans(line)


def split_sentences(text: str, splitter: SentenceSplitter | None = None) -> list[str]:
    """Return the sentences of ``text`` (stripped), using ``splitter`` or the default."""
    spans = (splitter or sentence_spans)(text)
    return [text[s:e] for s, e in spans]


# --------------------------------------------------------------------------------------------
# Token counting (budgets)
# --------------------------------------------------------------------------------------------


@runtime_checkable
class TokenCounter(Protocol):
    """Anything that returns the number of tokens in a text (used by every budget)."""

    def __call__(self, text: str) -> int: ...


_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SURROGATE = re.compile("[\ud800-\udfff]")


def tokenizer_safe(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (same length, so offsets still match).

    Hugging Face tokenizers reject strings that are not valid Unicode.
    """
    return _SURROGATE.sub("\ufffd", text)


def count_tokens(text: str) -> int:
    """Default token counter: words and punctuation marks.

    A fast, dependency-free approximation; for English it is within ~15% of BPE/WordPiece
    counts. Inject :class:`HFTokenCounter` where the exact count of a model matters.
    """
    if not isinstance(text, str):
        raise TypeError(f"count_tokens: text must be a str, got {type(text).__name__}.")
    return len(_TOKEN_RE.findall(text))


def checked_counter(counter: TokenCounter, owner: str) -> TokenCounter:
    """``counter`` wrapped so that a count that is not an int >= 0 is a clear TypeError, not a
    failure deep inside budget arithmetic."""

    def count(text: str) -> int:
        n = counter(text)
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:  # numpy ints are fine
            raise TypeError(f"{owner}: token_counter returned {n!r}; it must return an int >= 0 for every text.")
        return int(n)

    return count


class HFTokenCounter:
    """Counts tokens with a Hugging Face tokenizer (exact budgets for a given reader LLM).

    Args:
        tokenizer: A ``transformers`` tokenizer instance, or a local folder (or a packaged model's
            short name, e.g. ``"minilm"``) to load one from; nothing is downloaded.

    Example:
        >>> counter = HFTokenCounter("/path/to/model")        # doctest: +SKIP
        >>> counter("How many tokens?")                        # doctest: +SKIP
        4
    """

    def __init__(self, tokenizer: Any) -> None:
        if isinstance(tokenizer, (str, os.PathLike)):
            try:
                from transformers import AutoTokenizer
            except ImportError as e:  # pragma: no cover
                raise ImportError("HFTokenCounter needs transformers: pip install 'ragprune[rerank]'") from e
            from .models import resolve_model

            path = resolve_model(tokenizer, owner="HFTokenCounter")  # a clear error, never a download
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ValueError(f"HFTokenCounter: no usable tokenizer files in {path} ({e}).") from e
        elif not callable(tokenizer):
            raise TypeError(f"HFTokenCounter: tokenizer must be a transformers tokenizer or a local path, "
                            f"got {type(tokenizer).__name__}.")
        self.tokenizer = tokenizer
        self._lock = threading.Lock()  # fast tokenizers are not safe to share between threads

    def __call__(self, text: str) -> int:
        with self._lock:
            return len(self.tokenizer(tokenizer_safe(text), add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------------------------
# BM25 analysis: lowercase -> word tokens -> stopwords -> Snowball stemming
# --------------------------------------------------------------------------------------------

# Lucene's EnglishAnalyzer default stop set (the one Pyserini's BEIR baselines use).
LUCENE_STOPWORDS: frozenset[str] = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with"]
)

_WORD_RE = re.compile(r"\w+", re.UNICODE)

StemmerName = Literal["english", "porter", "none"]


class Analyzer:
    """Turns text into index terms: lowercase, ``\\w+`` tokens, stopwords, Snowball stemming.

    Stemming results are cached per surface word, so analysing a large corpus costs one stemmer
    call per distinct word.

    Args:
        stemmer: PyStemmer algorithm name (``"english"`` = Snowball/Porter2, ``"porter"``) or
            ``"none"``.
        stopwords: Words dropped before stemming; ``None`` for Lucene's English stop set,
            an empty collection to keep every word.
        min_token_length: Tokens shorter than this are dropped.

    Example:
        >>> Analyzer()("The cats are running")
        ['cat', 'run']
    """

    def __init__(
        self,
        stemmer: StemmerName | str = "english",
        stopwords: Iterable[str] | None = None,
        min_token_length: int = 1,
    ) -> None:
        if stemmer is not None and not isinstance(stemmer, str):
            raise TypeError(f"Analyzer: stemmer must be an algorithm name (str) or 'none', got {type(stemmer).__name__}.")
        if isinstance(stopwords, (str, bytes)):
            raise TypeError("Analyzer: stopwords must be a collection of words, not one string (wrap it in a list).")
        words = LUCENE_STOPWORDS if stopwords is None else list(stopwords)
        if not all(isinstance(w, str) for w in words):
            raise TypeError("Analyzer: every stopword must be a str.")
        if isinstance(min_token_length, bool) or not isinstance(min_token_length, int) or min_token_length < 0:
            raise ValueError(f"Analyzer: min_token_length must be an int >= 0, got {min_token_length!r}.")
        self.stemmer_name = stemmer
        self.stopwords = frozenset(w.lower() for w in words)
        self.min_token_length = min_token_length
        self._stem = self._make_stemmer(stemmer)
        self._cache: dict[str, str] = {}  # word -> term, "" when dropped

    @staticmethod
    def _make_stemmer(name: str) -> Callable[[str], str] | None:
        if name in ("none", "", None):
            return None
        import Stemmer  # PyStemmer, a core dependency

        try:
            stemmer = Stemmer.Stemmer(name)
        except KeyError as e:
            raise ValueError(
                f"Analyzer: unknown stemmer {name!r}; use one of {sorted(Stemmer.algorithms())} or 'none'."
            ) from e
        return stemmer.stemWord

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings, enough to rebuild an identical analyzer."""
        return {
            "stemmer": self.stemmer_name,
            "stopwords": sorted(self.stopwords),
            "min_token_length": self.min_token_length,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Analyzer:
        """Rebuild from :meth:`config` output (KeyError/TypeError/ValueError when it is damaged)."""
        return cls(cfg["stemmer"], cfg["stopwords"], cfg["min_token_length"])

    def term(self, word: str) -> str | None:
        """The index term for one lowercase word, or None if it is dropped."""
        return self._cache.get(word) or self._miss(word) or None

    def _miss(self, word: str) -> str:
        """Analyse a word not in the cache; ``""`` when it is dropped (the cache stores that too)."""
        if word in self.stopwords or len(word) < self.min_token_length:
            out = ""
        else:
            out = self._stem(word) if self._stem else word
        if len(self._cache) < 2_000_000:  # bounded: hostile input cannot grow it forever
            self._cache[word] = out
        return out

    def __call__(self, text: str) -> list[str]:
        words = _WORD_RE.findall(text.lower())
        terms = list(map(self._cache.get, words))  # C-speed lookups; None marks a word not seen yet
        if None in terms:
            miss = self._miss
            terms = [t if t is not None else miss(w) for w, t in zip(words, terms)]
        return list(filter(None, terms))  # "" marks a dropped word

    def analyze_many(self, texts: Sequence[str]) -> list[list[str]]:
        return [self(t) for t in texts]
