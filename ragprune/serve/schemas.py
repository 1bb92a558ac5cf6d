"""Request and response bodies of ``ragprune serve`` (pydantic models; the OpenAPI schema at /docs).

Wire formats follow the clients that already exist, so a user changes a base URL, not code:

* Cohere rerank, ``POST /v1/rerank`` and ``POST /v2/rerank``: ``model``, ``query``,
  ``documents`` (strings, or objects with ``text``; ``rank_fields`` picks other fields),
  ``top_n``, ``return_documents``, ``max_tokens_per_doc`` -> ``id``,
  ``results[{index, relevance_score, document{text}?}]``, ``meta{api_version, billed_units}``.
* Jina rerank shares ``/v1/rerank``: its body (``model``, ``query``, ``documents``, ``top_n``,
  ``return_documents``) is a subset of Cohere's, and the v1 reply adds Jina's ``model`` and
  ``usage{total_tokens}`` next to Cohere's fields (clients of either ignore the other's fields).
* text-embeddings-inference, ``POST /rerank``: ``query``, ``texts``, ``truncate``,
  ``raw_scores``, ``return_text`` -> ``[{index, score, text?}]`` best first.
* ragprune's own ``/prune``, ``/context`` and ``/retrieve``.

Relevance scores: ``relevance_score`` (Cohere/Jina) and TEI's ``score`` without ``raw_scores``
are ``sigmoid(model_score)`` in [0, 1], the probability reading of a cross-encoder logit; TEI's
``raw_scores=true`` returns the model's own score (the logit). The order is the same either way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "ErrorResponse", "RerankDocumentIn", "CohereRerankRequest", "RerankDocumentOut", "CohereResult",
    "ApiVersion", "BilledUnits", "CohereMeta", "JinaUsage", "CohereV1RerankResponse", "CohereV2RerankResponse",
    "TEIRerankRequest", "TEIRank", "PruneDocumentIn", "PruneRequest", "PrunedResult", "PruneResponse",
    "RetrieveRequest", "RetrievedDocument", "RetrieveResponse", "ContextRequest", "ContextDocument",
    "ContextResponse", "HealthResponse",
]

# Requests: fields we do not use are ignored (clients send priority, truncation...); types are strict
# (0 is not a bool, "3" is not an int), so what the schema rejects the server rejects too.
_IGNORE = ConfigDict(extra="ignore", strict=True)


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 3.0 is one (it reaches Python as a float), 3.5 and "3" are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: An integer >= 1 as JSON Schema defines integers (strict otherwise: no strings, no bools).
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


class ErrorResponse(BaseModel):
    """Every error body: ``message`` (Cohere clients read it), ``error_type`` (as TEI names it) and,
    for a malformed body, the list of problems in ``detail``."""

    message: str
    error_type: str
    detail: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------- Cohere / Jina rerank
class RerankDocumentIn(BaseModel):
    """A document given as an object: ``text``, or other fields chosen with ``rank_fields``."""

    model_config = ConfigDict(extra="allow")
    text: str = None  # type: ignore[assignment]  # optional, but not null when given


class CohereRerankRequest(BaseModel):
    """Cohere's rerank body (v1 and v2), which Jina's body is a subset of."""

    # without rank_fields, an object document needs its 'text'
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={
        "if": {"not": {"required": ["rank_fields"]}},
        "then": {"properties": {"documents": {"items": {"anyOf": [{"type": "string"},
                                                                  {"type": "object", "required": ["text"]}]}}}}})
    model: str | None = Field(None, description="Accepted and echoed; the server's loaded reranker answers.")
    query: str = Field(..., min_length=1, description="The search query.")
    documents: list[Union[str, RerankDocumentIn]] = Field(  # noqa: UP007 (pydantic keeps the order)
        ..., description="Texts, or objects with 'text' (or the fields in rank_fields).")
    top_n: PositiveInt | None = Field(None, description="Return the best top_n results (all when absent).")
    return_documents: bool | None = Field(None, description="Include each document's text (default false).")
    max_tokens_per_doc: PositiveInt | None = Field(None, description="Cut each document to this many tokens "
                                           "(ragprune's word-and-punctuation count) before scoring.")
    rank_fields: list[str] = Field(None, min_length=1,  # type: ignore[assignment]  # not null when given
                                          description="For object documents: the fields to rank on, joined as "
                                                      "'field: value' lines (default: 'text').")


class RerankDocumentOut(BaseModel):
    """The document of a result, when asked for."""

    text: str


class CohereResult(BaseModel):
    """One ranked document: its position in the request, its relevance in [0, 1]."""

    index: int
    relevance_score: float
    document: RerankDocumentOut | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = Field(..., description="One per query and started block of 100 documents, as Cohere bills.")


class CohereMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class JinaUsage(BaseModel):
    total_tokens: int = Field(..., description="Query and document tokens (ragprune's word-and-punctuation count).")


class CohereV2RerankResponse(BaseModel):
    """Cohere's v2 rerank reply."""

    id: str
    results: list[CohereResult]
    meta: CohereMeta


class CohereV1RerankResponse(CohereV2RerankResponse):
    """Cohere's v1 rerank reply plus Jina's ``model`` and ``usage`` (one route serves both)."""

    model: str
    usage: JinaUsage


# ---------------------------------------------------------------- text-embeddings-inference
class TEIRerankRequest(BaseModel):
    """text-embeddings-inference's ``/rerank`` body."""

    model_config = _IGNORE
    query: str = Field(..., min_length=1)
    texts: list[str]
    truncate: bool = Field(False, description="Accepted; ragprune always truncates to the model's max_length.")
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    raw_scores: bool = Field(False, description="The model's own score (logit) instead of sigmoid(logit).")
    return_text: bool = False


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


# ---------------------------------------------------------------- ragprune: prune
class PruneDocumentIn(BaseModel):
    """A document to prune: its text, an optional id (echoed) and title."""

    model_config = _IGNORE
    id: str | None = None
    text: str
    title: str = ""


class PruneRequest(BaseModel):
    """``/prune``: sentence-level pruning of the given documents for one query."""

    query: str = Field(..., min_length=1)
    model_config = ConfigDict(extra="ignore", strict=True,
                              json_schema_extra={"oneOf": [{"required": ["documents"]}, {"required": ["texts"]}]})
    # not nullable: give one of the two lists, not both (the schema's oneOf says so too)
    documents: list[Union[str, PruneDocumentIn]] = Field(  # noqa: UP007
        None, description="Texts or {id, text, title} objects (give this or 'texts').")  # type: ignore[assignment]
    texts: list[str] = Field(None, description="Plain texts (TEI style; give this or 'documents').")  # type: ignore[assignment]
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Keep a sentence whose score is >= this "
                                    "(default: the pruner's own threshold).")
    max_tokens: PositiveInt | None = Field(None, description="Fit all documents into one budget, as the Pipeline "
                                   "does (kept sentences first, then the best dropped ones).")

    @model_validator(mode="after")
    def _one_list(self) -> PruneRequest:
        if (self.documents is None) == (self.texts is None):
            raise ValueError("give exactly one of 'documents' and 'texts'")
        return self


class PrunedResult(BaseModel):
    """One pruned document, in request order."""

    index: int
    id: str
    pruned_text: str
    kept: list[int] = Field(..., description="Indices of the kept sentences in 'sentences'.")
    sentences: list[str]
    sentence_scores: list[float]
    compression: float = Field(..., description="Share of the document's tokens removed, in [0, 1].")
    score: float = Field(..., description="The pruner's relevance score of the whole document (its ranking head).")


class PruneResponse(BaseModel):
    results: list[PrunedResult]
    text: str = Field(..., description="The kept texts of all documents joined by blank lines.")
    tokens: int
    truncated: bool = Field(..., description="With max_tokens: the best sentence alone was over budget and was cut.")


# ---------------------------------------------------------------- ragprune: retrieve / context
class RetrieveRequest(BaseModel):
    model_config = _IGNORE
    query: str = Field(..., min_length=1)
    k: PositiveInt = Field(10)


class RetrievedDocument(BaseModel):
    id: str
    score: float
    title: str
    text: str


class RetrieveResponse(BaseModel):
    results: list[RetrievedDocument]


class ContextRequest(BaseModel):
    """``/context``: the Pipeline over the loaded index (retrieve -> rerank -> prune -> budget)."""

    model_config = _IGNORE
    query: str = Field(..., min_length=1)
    max_tokens: PositiveInt = Field(1000)
    candidates: PositiveInt = Field(100, description="Documents retrieved (the reranker's input).")
    top_k: PositiveInt = Field(10, description="Documents pruned and budgeted.")


class ContextDocument(BaseModel):
    id: str
    title: str
    text: str = Field(..., description="The document's kept text.")
    kept: list[int]
    score: float


class ContextResponse(BaseModel):
    query: str
    text: str
    tokens: int
    truncated: bool
    documents: list[ContextDocument]
    stats: dict[str, float]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    reranker: str
    pruner: str
    index: str | None
    queue_depth: dict[str, int]
