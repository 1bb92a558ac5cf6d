"""Thread safety: shared retrievers, pipelines and pruners give single-threaded answers.

What this protects: one BM25 retriever, one hybrid retriever (BM25 + FAISS dense), one full
Pipeline (BM25 -> cross-encoder -> Provence, tiny random models) and one HtmlPruner, each
shared by 8 threads that run 50 queries apiece (each thread in its own order, mixing single and
batched calls for the retrievers, with a tiny GIL switch interval to force interleaving), return
exactly, bit for bit, what the same calls return on one thread. No exception, no cross-talk
between queries.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from ragprune import BM25Retriever, HybridRetriever, Pipeline

from .helpers import FakeEncoder

N_THREADS = 8
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def fast_thread_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def hammer(call: Callable[[Any], Any], inputs: Sequence[Any], batch: Callable[[list], list] | None = None,
           threads: int = N_THREADS) -> list[dict[int, Any]]:
    """Run ``call`` on every input from ``threads`` threads at once (each in its own shuffled
    order, every third input through ``batch`` with its neighbour when given); return each
    thread's ``{input index: result}``."""
    barrier = threading.Barrier(threads)
    results: list[dict[int, Any]] = [{} for _ in range(threads)]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        order = list(range(len(inputs)))
        random.Random(t).shuffle(order)
        try:
            barrier.wait()
            i = 0
            while i < len(order):
                if batch is not None and i % 3 == 0 and i + 1 < len(order):
                    a, b = order[i], order[i + 1]
                    ra, rb = batch([inputs[a], inputs[b]])
                    results[t][a], results[t][b] = ra, rb
                    i += 2
                else:
                    results[t][order[i]] = call(inputs[order[i]])
                    i += 1
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(150)
    assert not any(th.is_alive() for th in pool), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def assert_all_equal(results: list[dict[int, Any]], expected: list[Any]) -> None:
    for t, got in enumerate(results):
        assert len(got) == len(expected)
        for i, want in enumerate(expected):
            assert got[i] == want, f"thread {t}, input {i}: {got[i]!r} != {want!r}"


@pytest.fixture(scope="module")
def bm25(corpus):
    return BM25Retriever.from_documents(corpus)


def test_bm25_shared_by_threads(bm25, queries):
    expected = [bm25.retrieve(q, k=10) for q in queries]
    results = hammer(lambda q: bm25.retrieve(q, k=10), queries, batch=lambda qs: bm25.retrieve_many(qs, k=10))
    assert_all_equal(results, expected)


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_hybrid_bm25_dense_shared_by_threads(bm25, corpus, queries, fusion):
    pytest.importorskip("faiss")
    from ragprune import DenseRetriever

    dense = DenseRetriever.from_documents(corpus, FakeEncoder(), batch_size=7)
    hybrid = HybridRetriever([bm25, dense], fusion=fusion, weights=[0.6, 0.4], depth=30)
    expected = [hybrid.retrieve(q, k=10) for q in queries]
    results = hammer(lambda q: hybrid.retrieve(q, k=10), queries, batch=lambda qs: hybrid.retrieve_many(qs, k=10))
    assert_all_equal(results, expected)


def test_pipeline_with_models_shared_by_threads(bm25, tiny_ce, tiny_provence, queries):
    # single runs only: a batch pads differently, which moves model scores in the last float bits
    pipe = Pipeline(bm25, tiny_ce, tiny_provence, max_tokens=120, candidates=8, top_k=3)
    expected = [_context_key(pipe.run(q)) for q in queries]
    assert_all_equal(hammer(lambda q: _context_key(pipe.run(q)), queries), expected)


def _context_key(ctx) -> tuple:
    """Everything in a Context except the timings."""
    return (ctx.query, ctx.text, ctx.documents, ctx.tokens, ctx.truncated,
            {k: v for k, v in ctx.stats.items() if not k.startswith("seconds_")})


def test_html_pruner_shared_by_threads(queries):
    from ragprune import HtmlPruner

    page = "".join(f"<h2>Part {i}</h2><p>{q} is discussed here.</p><table><tr><th>k</th></tr><tr><td>{q}</td></tr></table>"
                   for i, q in enumerate(queries))
    pruner = HtmlPruner(max_tokens=150, max_node_words=12)
    expected = [pruner.prune(q, page) for q in queries[:12]]
    assert_all_equal(hammer(lambda q: pruner.prune(q, page), queries[:12]), expected)
