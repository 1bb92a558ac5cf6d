"""Dynamic batching: concurrent requests coalesced into one model call, off the event loop.

A :class:`DynamicBatcher` owns a bounded queue and one worker thread. Requests are queued by
:meth:`~DynamicBatcher.submit`; a collector task takes the first waiting request, waits at most
``max_wait_ms`` for more, stops at ``max_batch_size`` items (counted by ``size``, e.g. the
request's number of documents; a request is never split) and runs the batch function on the
worker thread, so the event loop keeps accepting connections while the model works. When the
queue is full, :meth:`~DynamicBatcher.submit` raises :class:`QueueFullError` at once (the
server answers 503 with Retry-After): memory stays bounded under overload.

A batch function that raises is retried one request at a time, so a request that fails only
fails itself. A request whose client went away (its task cancelled) is dropped from the batch
if it has not started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._validate import check_number, check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["DynamicBatcher", "QueueFullError", "BatchObserver"]

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The batcher's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, name: str, max_queue: int, retry_after: int) -> None:
        super().__init__(f"the {name} queue is full ({max_queue} requests waiting); retry after {retry_after} s.")
        self.retry_after = retry_after


#: Called after every batch with ``(name, requests, items, seconds)`` (e.g. Prometheus metrics).
BatchObserver = Callable[[str, int, int, float], None]


@dataclass
class _Job(Generic[T]):
    item: T
    size: int
    future: asyncio.Future[Any]


class DynamicBatcher(Generic[T, R]):
    """Coalesce concurrent calls of ``fn`` into batches run on one worker thread.

    Args:
        fn: Batch function: a list of items -> one result per item, in order. Runs in a
            worker thread (it may block: a model forward pass).
        name: Label for logs, metrics and errors (``"rerank"``).
        max_batch_size: Most units per batch (see ``size``); a single larger item runs alone.
        max_wait_ms: How long the first item waits for others, in ms (0: no waiting).
        max_queue: Most items waiting; one more raises :class:`QueueFullError`.
        size: Units an item counts for (default 1 per item).
        retry_after: Seconds a :class:`QueueFullError` suggests waiting.
        observer: Called after each batch with ``(name, requests, units, seconds)``.

    Raises:
        TypeError/ValueError: a limit that is not a positive number.

    Example:
        >>> async def demo():
        ...     b = DynamicBatcher(lambda xs: [x * 2 for x in xs], name="double")
        ...     await b.start()
        ...     out = await asyncio.gather(*(b.submit(i) for i in range(5)))
        ...     await b.stop()
        ...     return out
        >>> asyncio.run(demo())
        [0, 2, 4, 6, 8]
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, name: str, max_batch_size: int = 64,
                 max_wait_ms: float = 5.0, max_queue: int = 256, size: Callable[[T], int] | None = None,
                 retry_after: int = 1, observer: BatchObserver | None = None) -> None:
        owner = "DynamicBatcher"
        if not callable(fn):
            raise TypeError(f"{owner}: fn must be callable (list of items -> list of results).")
        self.fn, self.name = fn, str(name)
        self.max_batch_size = check_positive_int(max_batch_size, "max_batch_size", owner)
        self.max_wait = check_number(max_wait_ms, "max_wait_ms", owner, low=0.0) / 1000.0
        self.max_queue = check_positive_int(max_queue, "max_queue", owner)
        self.retry_after = check_positive_int(retry_after, "retry_after", owner)
        self._size = size or (lambda item: 1)
        self._observer = observer
        self._pending: deque[_Job[T]] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Start the collector task and the worker thread (call inside the running loop)."""
        if self._task is not None:
            return
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ragprune-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"ragprune-batcher-{self.name}")

    async def stop(self) -> None:
        """Stop collecting; waiting requests fail with a RuntimeError, a running batch finishes."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError(f"the {self.name} batcher stopped (server shutting down)."))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _prune_abandoned(self) -> None:
        if any(j.future.done() for j in self._pending):
            self._pending = deque(j for j in self._pending if not j.future.done())

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch; abandoned ones do not count)."""
        return sum(not j.future.done() for j in self._pending)

    # ------------------------------------------------------------------ requests
    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Cancelling the caller (a client that went away) withdraws a request that has not
        started: it leaves the queue and takes no model time.

        Returns:
            What ``fn`` returned for this item.

        Raises:
            QueueFullError: ``max_queue`` requests are already waiting.
            RuntimeError: the batcher is not started.
            Exception: whatever ``fn`` raised for this item alone.
        """
        if self._arrived is None or self._task is None:
            raise RuntimeError(f"DynamicBatcher {self.name!r}: not started; await start() first.")
        self._prune_abandoned()
        if len(self._pending) >= self.max_queue:
            raise QueueFullError(self.name, self.max_queue, self.retry_after)
        job = _Job(item, max(1, int(self._size(item))), asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._arrived.set()
        return await job.future  # cancelled with the caller's task: the job is skipped if not started

    async def _wait_arrival(self, timeout: float | None) -> bool:
        """Wait until a job is pending; False when ``timeout`` (seconds) passes first."""
        assert self._arrived is not None
        self._prune_abandoned()
        while not self._pending:
            self._arrived.clear()
            if timeout is None:
                await self._arrived.wait()
            else:
                try:
                    await asyncio.wait_for(self._arrived.wait(), max(0.0, timeout))
                except asyncio.TimeoutError:
                    return False
            self._prune_abandoned()
        return True

    async def _gather(self) -> list[_Job[T]]:
        """The next batch: the first waiting job, then whatever joins within ``max_wait``."""
        await self._wait_arrival(None)
        first = self._pending.popleft()
        batch, units = [first], first.size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while units < self.max_batch_size:
            if not self._pending and (self.max_wait <= 0 or not await self._wait_arrival(deadline - loop.time())):
                break
            if units + self._pending[0].size > self.max_batch_size:
                break  # it starts the next batch
            job = self._pending.popleft()
            batch.append(job)
            units += job.size
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [j for j in await self._gather() if not j.future.done()]  # drop cancelled callers
            if not batch:
                continue
            start = time.perf_counter()
            running = loop.run_in_executor(self._executor, self._run, [j.item for j in batch])
            try:
                results = await asyncio.shield(running)
            except asyncio.CancelledError:  # stop(): the batch on the worker finishes and is answered
                self._deliver(batch, await running)
                raise
            self._deliver(batch, results)
            if self._observer is not None:
                try:
                    self._observer(self.name, len(batch), sum(j.size for j in batch), time.perf_counter() - start)
                except Exception:  # metrics never break serving
                    logger.exception("batch observer failed")

    @staticmethod
    def _deliver(batch: list[_Job[T]], results: list[tuple[bool, Any]]) -> None:
        for j, (ok, value) in zip(batch, results):
            if j.future.done():  # the caller went away meanwhile
                continue
            if ok:
                j.future.set_result(value)
            else:
                j.future.set_exception(value)

    def _run(self, items: list[T]) -> list[tuple[bool, Any]]:
        """Run ``fn`` on the batch; when it fails, on each item alone (failures stay per item)."""
        try:
            out = list(self.fn(items))
            if len(out) != len(items):
                raise RuntimeError(f"batch function {self.name!r} returned {len(out)} results for {len(items)} items.")
            return [(True, r) for r in out]
        except Exception as batch_error:
            if len(items) == 1:
                return [(False, batch_error)]
        results: list[tuple[bool, Any]] = []
        for item in items:
            try:
                results.append((True, list(self.fn([item]))[0]))
            except Exception as e:
                results.append((False, e))
        return results
