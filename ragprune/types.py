"""Typed results shared by every stage.

All results are frozen dataclasses: they can be passed between threads and stages without
anyone mutating them behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Union

__all__ = [
    "Document",
    "ScoredDocument",
    "PrunedDocument",
    "PrunedHtml",
    "DocumentLike",
    "as_documents",
]


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Document:
    """One retrievable unit: a passage, an abstract or a web page.

    Attributes:
        id: Unique identifier within a corpus (string).
        text: The body text (plain text, or raw HTML for the HTML pruner).
        title: Optional title; retrievers index ``title + " " + text``.
        metadata: Read-only mapping carried through every stage untouched.

    Example:
        >>> Document(id="d1", text="Paris is the capital of France.", title="Paris").full_text
        'Paris Paris is the capital of France.'
    """

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(
                f"Document.id must be a str, got {type(self.id).__name__}; convert ids with str()."
            )
        if not isinstance(self.text, str):
            raise TypeError(
                f"Document.text must be a str, got {type(self.text).__name__} for id={self.id!r}; "
                "decode bytes or convert values to text before indexing."
            )
        if not isinstance(self.title, str):
            raise TypeError(
                f"Document.title must be a str, got {type(self.title).__name__} for id={self.id!r}."
            )
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            raise TypeError(
                f"Document.metadata must be a mapping (dict), got {type(self.metadata).__name__} for id={self.id!r}."
            )
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))

    @property
    def full_text(self) -> str:
        """``title`` and ``text`` joined by a space (just ``text`` when there is no title)."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True)
class ScoredDocument:
    """A document with the score a retriever or reranker gave it (higher is better).

    Scores are comparable only within one result list of one stage.

    Attributes:
        document: The document, untouched.
        score: What the result list is ordered by. For a retriever, its score (e.g. BM25); for
            a reranker, its own score (``model_score``), or the fusion of ``model_score`` with
            ``first_stage_score`` when the reranker was built with ``first_stage_weight > 0``
            (then a value in [0, 1]). Its meaning depends on the stage's options, never on the
            type of the input.
        model_score: A reranker's own score of the document (e.g. the cross-encoder logit),
            whatever the fusion option; ``None`` on a retriever's output.
        first_stage_score: The score the candidate arrived with at the reranker (``None`` when
            it came as a plain ``Document``/str/dict, and on a retriever's output).
    """

    document: Document
    score: float
    model_score: float | None = None
    first_stage_score: float | None = None

    @property
    def id(self) -> str:
        return self.document.id


@dataclass(frozen=True)
class PrunedDocument:
    """A document reduced to the sentences worth reading.

    Attributes:
        document: The original, untouched document.
        text: The kept text (kept sentences joined in original order unless reordered).
        kept: Indices of the kept sentences in the document's sentence list.
        score: Relevance score of the whole document (from the ranking head or the reranker).
        compression: Fraction of tokens removed, in [0, 1] (0 = nothing removed).
        sentences: The sentence split the indices in ``kept`` refer to.
        sentence_scores: The pruner's keep score of each sentence (same order as
            ``sentences``; higher means more useful), or empty when the pruner has none. The
            :class:`~ragprune.Pipeline` uses them to fill a budget the kept sentences leave unused.
        spans: Character offsets ``(start, end)`` of each sentence in ``document.text`` (same
            order as ``sentences``; ``document.text[start:end] == sentences[i]``), so a sentence
            is located by its index, never by searching its text. Empty only for results built
            without a sentence split.

    Raises:
        ValueError: ``spans`` and ``sentences`` differ in length, or a span does not cut its
            sentence out of ``document.text``.
    """

    document: Document
    text: str
    kept: tuple[int, ...]
    score: float
    compression: float
    sentences: tuple[str, ...] = ()
    sentence_scores: tuple[float, ...] = ()
    spans: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.spans:
            return
        spans = tuple((int(a), int(b)) for a, b in self.spans)
        object.__setattr__(self, "spans", spans)
        if len(spans) != len(self.sentences):
            raise ValueError(f"PrunedDocument: {len(spans)} spans for {len(self.sentences)} sentences "
                             f"(id={self.document.id!r}); give one (start, end) per sentence.")
        text = self.document.text
        for i, ((a, b), sent) in enumerate(zip(spans, self.sentences)):
            if not 0 <= a <= b <= len(text) or text[a:b] != sent:
                raise ValueError(f"PrunedDocument: span {i} {(a, b)} does not cut sentence {i} out of the "
                                 f"document text (id={self.document.id!r}); spans are offsets in document.text.")

    @property
    def id(self) -> str:
        return self.document.id

    def sentence_span(self, index: int) -> tuple[int, int]:
        """Character offsets ``(start, end)`` of sentence ``index`` in ``document.text``.

        Raises:
            IndexError: no such sentence, or the result carries no spans.
        """
        if not self.spans:
            raise IndexError(f"PrunedDocument: {self.document.id!r} carries no sentence spans.")
        return self.spans[index]


@dataclass(frozen=True)
class PrunedHtml:
    """A web page reduced to the blocks worth reading.

    Attributes:
        html: The kept blocks rebuilt as valid HTML (a ``<body>`` element), in document order.
        text: Readable text of ``html`` (newlines between blocks, ``|`` between table cells).
        blocks: Indices of the kept blocks in the page's block tree.
        tokens: Tokens of ``html`` (the unit the budget counts, by the pruner's counter).
        compression: Fraction of the cleaned page's text tokens removed, in [0, 1].
        truncated: True when even the best block exceeded the budget and was cut.
    """

    html: str
    text: str
    blocks: tuple[int, ...]
    tokens: int
    compression: float
    truncated: bool = False


DocumentLike = Union[Document, str, Mapping[str, Any]]  # noqa: UP007 (runtime alias, py3.10)


def as_documents(items: Iterable[DocumentLike], *, owner: str = "ragprune", unique: bool = True,
                 start: int = 0) -> list[Document]:
    """Normalise user input into a list of :class:`Document`.

    Accepts ``Document`` objects, plain strings (ids become their position, ``"0"``, ``"1"``, ...)
    and BEIR-style mappings with ``_id``/``id``, ``text`` and optional ``title``. ``start`` is
    the position of the first item (for a corpus given in chunks).

    Raises:
        TypeError: an item is none of the accepted kinds, or its text is not a string.
        ValueError: the input is empty or (``unique``, for a corpus) two documents share an id.
    """
    if isinstance(items, (str, bytes, Mapping, Document)):
        raise TypeError(f"{owner}: expected a list of documents, got a single {type(items).__name__}; wrap it in a list.")
    if not isinstance(items, Iterable):
        raise TypeError(f"{owner}: expected a list of documents, got {type(items).__name__}.")
    docs: list[Document] = []
    for i, item in enumerate(items):
        if isinstance(item, Document):
            docs.append(item)
        elif isinstance(item, str):
            docs.append(Document(id=str(start + i), text=item))
        elif isinstance(item, Mapping):
            doc_id = item.get("_id", item.get("id"))
            doc_id = str(start + i) if doc_id is None else doc_id  # a null id counts as none: the position
            meta = item.get("metadata") or {}
            docs.append(
                Document(
                    id=str(doc_id),
                    text=item.get("text", ""),
                    title=item.get("title") or "",
                    metadata=meta if isinstance(meta, Mapping) else {"metadata": meta},
                )
            )
        else:
            raise TypeError(
                f"{owner}: document {i} is a {type(item).__name__}; expected Document, str or a "
                "mapping with 'text' (and optional '_id'/'id', 'title')."
            )
    if not docs:
        raise ValueError(f"{owner}: the corpus is empty; pass at least one document.")
    seen: set[str] = set()
    for d in docs if unique else ():
        if d.id in seen:
            raise ValueError(
                f"{owner}: duplicate document id {d.id!r}; ids must be unique within a corpus."
            )
        seen.add(d.id)
    return docs
