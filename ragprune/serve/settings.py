"""Server settings: limits, batching and access, validated once at start-up.

This module imports nothing beyond the standard library, so the command line can show its
defaults in ``ragprune serve --help`` without the ``serve`` extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._validate import check_number, check_positive_int

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """Limits, batching and access options of :func:`ragprune.serve.create_app`.

    Attributes:
        max_batch_size: Most (query, document) pairs one model call takes. Concurrent requests
            are coalesced up to this size; a request is never split, so a larger one runs alone
            (the model still splits it into its own forward batches). 1 turns batching off.
        max_wait_ms: How long the first request of a batch waits for others to join, in
            milliseconds (0: take only what is already queued).
        max_queue: Requests waiting per model queue; one more is answered 503 with Retry-After.
        max_documents: Most documents in one request (413 above it); also caps ``k``,
            ``candidates`` and ``top_k`` of ``/retrieve`` and ``/context``.
        max_request_bytes: Largest request body in bytes (413 above it).
        max_query_chars: Longest query in characters (422 above it).
        api_key: When set, every route but ``/health`` needs ``Authorization: Bearer <key>``.
        cors_origins: Origins allowed by CORS; empty (the default) adds no CORS headers at all.
        retry_after_s: Seconds sent in the Retry-After header of a 503.
        model_name: The name reported in responses (``model`` field of Jina-style replies).

    Raises:
        TypeError/ValueError: a limit that is not a positive number.

    Example:
        >>> ServeSettings(max_batch_size=32, max_wait_ms=2).max_queue
        256
    """

    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_documents: int = 1000
    max_request_bytes: int = 4_000_000
    max_query_chars: int = 4096
    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    retry_after_s: int = 1
    model_name: str = "ragprune"

    def __post_init__(self) -> None:
        owner = "ServeSettings"
        for name in ("max_batch_size", "max_queue", "max_documents", "max_request_bytes", "max_query_chars",
                     "retry_after_s"):
            check_positive_int(getattr(self, name), name, owner)
        object.__setattr__(self, "max_wait_ms", check_number(self.max_wait_ms, "max_wait_ms", owner, low=0.0))
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError(f"{owner}: api_key must be a non-empty string or None (no key).")
        if isinstance(self.cors_origins, str):
            raise TypeError(f"{owner}: cors_origins must be a list of origins, got a single str; wrap it in a list.")
        object.__setattr__(self, "cors_origins", tuple(str(o) for o in self.cors_origins))
