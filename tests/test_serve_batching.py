"""ragprune.serve.batching.DynamicBatcher in process: coalescing, limits, failures, withdrawal.

No test measures time: a blocking batch function holds the worker thread on an Event, so what
queues behind it is decided by the test, not by a clock.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("fastapi")

from ragprune.serve import ServeSettings  # noqa: E402
from ragprune.serve.batching import DynamicBatcher, QueueFullError  # noqa: E402


class Gate:
    """A batch function that records its batches and blocks until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(timeout=30)
        if -1 in items:
            raise ValueError("bad item -1")
        return [x * 10 for x in items]


async def _until(cond) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_concurrent_requests_share_a_batch_in_order():
    async def main():
        gate = Gate()
        b = DynamicBatcher(gate, name="t", max_batch_size=8, max_wait_ms=0, max_queue=16)
        await b.start()
        first = asyncio.ensure_future(b.submit(0))
        await _until(gate.entered.is_set)  # the worker is busy with [0]
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
        await _until(lambda: b.depth == 5)
        gate.release.set()
        out = await asyncio.gather(first, *rest)
        await b.stop()
        return gate.batches, out

    batches, out = asyncio.run(main())
    assert out == [0, 10, 20, 30, 40, 50]
    assert batches == [[0], [1, 2, 3, 4, 5]]  # the five that waited went in one batch


def test_max_batch_size_counts_units_and_never_splits_an_item():
    async def main():
        gate = Gate()
        b = DynamicBatcher(gate, name="t", max_batch_size=4, max_wait_ms=0, max_queue=16, size=lambda x: x)
        await b.start()
        first = asyncio.ensure_future(b.submit(1))
        await _until(gate.entered.is_set)
        rest = [asyncio.ensure_future(b.submit(x)) for x in (2, 2, 3, 9)]
        await _until(lambda: b.depth == 4)
        gate.release.set()
        await asyncio.gather(first, *rest)
        await b.stop()
        return gate.batches

    assert asyncio.run(main()) == [[1], [2, 2], [3], [9]]  # 9 > 4 runs alone


def test_full_queue_raises_and_a_failure_stays_with_its_item():
    async def main():
        gate = Gate()
        b = DynamicBatcher(gate, name="t", max_batch_size=8, max_wait_ms=0, max_queue=2, retry_after=3)
        await b.start()
        first = asyncio.ensure_future(b.submit(0))
        await _until(gate.entered.is_set)
        bad, good = asyncio.ensure_future(b.submit(-1)), asyncio.ensure_future(b.submit(7))
        await _until(lambda: b.depth == 2)
        with pytest.raises(QueueFullError) as full:
            await b.submit(8)
        assert full.value.retry_after == 3 and "queue is full" in str(full.value)
        gate.release.set()
        results = await asyncio.gather(first, bad, good, return_exceptions=True)
        await b.stop()
        return results, gate.batches

    (r0, r_bad, r_good), batches = asyncio.run(main())
    assert r0 == 0 and r_good == 70
    assert isinstance(r_bad, ValueError) and "bad item" in str(r_bad)
    assert batches[:2] == [[0], [-1, 7]] and sorted(batches[2:]) == [[-1], [7]]  # retried one by one


def test_a_cancelled_request_leaves_the_queue_and_is_not_run():
    async def main():
        gate = Gate()
        b = DynamicBatcher(gate, name="t", max_batch_size=8, max_wait_ms=0, max_queue=1)
        await b.start()
        first = asyncio.ensure_future(b.submit(0))
        await _until(gate.entered.is_set)
        gone = asyncio.ensure_future(b.submit(5))
        await _until(lambda: b.depth == 1)
        gone.cancel()  # the client went away
        await asyncio.sleep(0)
        assert b.depth == 0
        kept = asyncio.ensure_future(b.submit(6))  # its slot is free again
        gate.release.set()
        out = await asyncio.gather(first, kept)
        await b.stop()
        return out, gate.batches

    out, batches = asyncio.run(main())
    assert out == [0, 60] and [5] not in batches and all(5 not in bt for bt in batches)


def test_stop_fails_waiting_requests_and_submit_needs_start():
    async def main():
        gate = Gate()
        b = DynamicBatcher(gate, name="t", max_batch_size=1, max_wait_ms=0, max_queue=4)
        with pytest.raises(RuntimeError, match="not started"):
            await b.submit(1)
        await b.start()
        first = asyncio.ensure_future(b.submit(0))
        await _until(gate.entered.is_set)
        waiting = asyncio.ensure_future(b.submit(1))
        await _until(lambda: b.depth == 1)
        stopping = asyncio.ensure_future(b.stop())  # while [0] is still on the worker
        await asyncio.sleep(0.01)
        assert not stopping.done()  # stop waits for the running batch
        gate.release.set()
        await stopping
        return await asyncio.gather(first, waiting, return_exceptions=True)

    first, waiting = asyncio.run(main())
    assert first == 0  # the running batch finishes and is answered
    assert isinstance(waiting, RuntimeError) and "stopped" in str(waiting)


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        DynamicBatcher(lambda xs: xs, name="t", max_batch_size=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        DynamicBatcher(None, name="t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wait_ms must be >= 0"):
        ServeSettings(max_wait_ms=-1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        ServeSettings(cors_origins="https://a.example")  # type: ignore[arg-type]
