"""``ragprune serve`` against real uvicorn server processes (``python -m ragprune serve --port N``).

Two servers, each started once per module: ``server`` with the shipped reranker and pruner, a
BM25 index of the toy corpus, an API key and small limits; ``slow_server`` with a deliberately
slow reranker (``tests.serve_helpers:slow_reranker``), a queue of one request and batching off,
for backpressure and disconnects. Clients: the official ``cohere`` SDK, ``langchain-cohere``,
httpx and schemathesis.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from tests.conftest import TOY  # noqa: E402
from tests.serve_helpers import ServerProcess  # noqa: E402

KEY = "test-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = ["--max-documents", "40", "--max-request-bytes", "20000", "--max-query-chars", "200"]
DOCS = ["Paris is the capital and largest city of France.",
        "Scurvy is a disease caused by a lack of vitamin C in the diet.",
        "Cats are small domesticated carnivorous mammals that purr.",
        "Sailors on long voyages suffered from scurvy until citrus fruit was carried aboard."]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ragprune import BM25Retriever
    from ragprune.models import resolve_model

    try:
        resolve_model("ragprune-reranker"), resolve_model("ragprune-provence")
    except Exception as e:  # the companion wheel is not installed
        pytest.skip(f"shipped models not installed ({e})")
    root = tmp_path_factory.mktemp("serve")
    BM25Retriever.from_documents(TOY).save(root / "index")
    proc = ServerProcess(["--index", str(root / "index"), "--api-key-env", "RAGPRUNE_TEST_KEY", *LIMITS],
                         env={"RAGPRUNE_TEST_KEY": KEY}, log=root / "server.log")
    try:
        yield proc.wait_ready()
    finally:
        _assert_clean_exit(proc)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow")
    proc = ServerProcess(["--reranker", "tests.serve_helpers:slow_reranker", "--pruner",
                          "tests.serve_helpers:lead_pruner", "--max-queue", "1", "--max-batch-size", "1",
                          "--max-wait-ms", "0"], env={"RAGPRUNE_TEST_DELAY_S": "0.5"}, log=root / "server.log")
    try:
        yield proc.wait_ready()
    finally:
        _assert_clean_exit(proc)


def _assert_clean_exit(proc):
    """SIGTERM: uvicorn finishes in-flight requests, runs the shutdown, then re-raises the signal."""
    code = proc.stop()
    assert code in (0, -signal.SIGTERM), proc.log_text()
    assert "Traceback" not in proc.log_text(), proc.log_text()


def post(server, path, body, headers=AUTH, **kw):
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60, **kw)


# ---------------------------------------------------------------- ecosystem clients
def test_cohere_sdk_v2_and_v1(server):
    cohere = pytest.importorskip("cohere")
    query = "what causes scurvy"
    v2 = cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(model="ragprune", query=query, documents=DOCS,
                                                                   top_n=3)
    assert len(v2.results) == 3
    assert v2.results[0].index == 1  # the shipped reranker puts the scurvy definition first
    scores = [r.relevance_score for r in v2.results]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= x <= 1.0 for x in scores)
    assert v2.meta.api_version.version == "2" and v2.meta.billed_units.search_units == 1
    v1 = cohere.Client(api_key=KEY, base_url=server.url).rerank(model="ragprune", query=query, documents=DOCS,
                                                                 return_documents=True)
    assert [r.index for r in v1.results][:3] == [r.index for r in v2.results]
    assert [r.document.text for r in v1.results] == [DOCS[r.index] for r in v1.results]
    assert v1.meta.api_version.version == "1"


def test_cohere_sdk_wrong_key_is_refused(server):
    cohere = pytest.importorskip("cohere")
    from cohere.core.api_error import ApiError

    with pytest.raises(ApiError) as err:
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model="m", query="q", documents=["a"])
    assert err.value.status_code == 401


def test_langchain_cohere_rerank_in_compression_retriever(server):
    pytest.importorskip("langchain_cohere")
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_cohere import CohereRerank

    from ragprune import BM25Retriever
    from ragprune.integrations.langchain import RagpruneRetriever

    base = RagpruneRetriever(engine=BM25Retriever.from_documents(TOY), k=5)
    rerank = CohereRerank(cohere_api_key=KEY, base_url=server.url, model="ragprune", top_n=2)
    retriever = ContextualCompressionRetriever(base_compressor=rerank, base_retriever=base)
    docs = retriever.invoke("the capital of France")
    assert 1 <= len(docs) <= 2
    assert "France" in docs[0].page_content
    assert 0.0 <= docs[0].metadata["relevance_score"] <= 1.0


def test_jina_body_on_v1(server):
    body = {"model": "jina-reranker-v2-base-multilingual", "query": "what causes scurvy",
            "documents": [{"text": d} for d in DOCS], "top_n": 2, "return_documents": True}
    r = post(server, "/v1/rerank", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == body["model"] and out["usage"]["total_tokens"] > 0
    assert [x["document"]["text"] for x in out["results"]] == [DOCS[x["index"]] for x in out["results"]]
    assert len(out["results"]) == 2


def test_cohere_rank_fields_and_max_tokens_per_doc(server):
    docs = [{"title": "Scurvy", "body": "A disease from lack of vitamin C."}, {"title": "Paris", "body": "A city."}]
    r = post(server, "/v1/rerank", {"query": "vitamin C deficiency", "documents": docs, "rank_fields": ["title", "body"]})
    assert r.status_code == 200, r.text
    assert {x["index"] for x in r.json()["results"]} == {0, 1}
    short = post(server, "/v2/rerank", {"query": "scurvy", "documents": DOCS, "max_tokens_per_doc": 3,
                                        "return_documents": True}).json()
    assert {x["document"]["text"] for x in short["results"]} == {DOCS[i] for i in range(4)}  # echoes the input
    missing = post(server, "/v2/rerank", {"query": "q", "documents": [{"title": "no text"}]})
    assert missing.status_code == 422 and "without 'text'" in missing.json()["message"]


# ---------------------------------------------------------------- TEI, prune, index routes
def test_tei_rerank(server):
    body = {"query": "what causes scurvy", "texts": DOCS}
    plain = post(server, "/rerank", body).json()
    raw = post(server, "/rerank", {**body, "raw_scores": True, "return_text": True}).json()
    assert [x["index"] for x in plain] == [x["index"] for x in raw]
    assert plain[0]["index"] == 1 and "text" not in plain[0]
    assert [x["text"] for x in raw] == [DOCS[x["index"]] for x in raw]
    import math

    for p, r in zip(plain, raw):
        assert p["score"] == pytest.approx(1 / (1 + math.exp(-r["score"])), abs=1e-9)
    v2 = post(server, "/v2/rerank", {"query": body["query"], "documents": DOCS}).json()
    assert [x["index"] for x in v2["results"]] == [x["index"] for x in plain]
    assert post(server, "/rerank", {"query": "q", "texts": []}).json() == []


def test_prune(server):
    doc = ("Scurvy is a disease caused by a lack of vitamin C. The Eiffel Tower is in Paris. "
           "Cats like to sleep in the sun.")
    r = post(server, "/prune", {"query": "what causes scurvy", "documents": [{"id": "a", "text": doc}, DOCS[0]]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["id"] for x in out["results"]] == ["a", "1"] and [x["index"] for x in out["results"]] == [0, 1]
    first = out["results"][0]
    assert "vitamin C" in first["pruned_text"] and "Cats" not in first["pruned_text"]
    assert first["pruned_text"] == " ".join(first["sentences"][i] for i in first["kept"])
    assert len(first["sentence_scores"]) == len(first["sentences"]) and 0 < first["compression"] < 1
    assert all(isinstance(x["score"], float) for x in out["results"])
    everything = post(server, "/prune", {"query": "scurvy", "texts": [doc], "threshold": 0.0}).json()["results"][0]
    assert everything["kept"] == list(range(len(everything["sentences"]))) and everything["compression"] == 0.0
    nothing = post(server, "/prune", {"query": "scurvy", "texts": [doc], "threshold": 1.0}).json()
    assert nothing["results"][0]["kept"] == [] and nothing["text"] == ""
    budget = post(server, "/prune", {"query": "what causes scurvy", "texts": [doc, DOCS[1]], "max_tokens": 12}).json()
    assert 0 < budget["tokens"] <= 12
    both = post(server, "/prune", {"query": "q", "texts": ["a"], "documents": ["b"]})
    assert both.status_code == 422 and "exactly one" in both.json()["message"]


def test_retrieve_and_context(server):
    hits = post(server, "/retrieve", {"query": "capital of France", "k": 2}).json()["results"]
    assert len(hits) == 2 and hits[0]["id"] == "paris"
    ctx = post(server, "/context", {"query": "capital of France", "max_tokens": 30, "candidates": 5,
                                    "top_k": 2}).json()
    assert ctx["tokens"] <= 30 and ctx["documents"] and ctx["documents"][0]["id"] in {"paris", "berlin"}
    assert ctx["text"].startswith(f"[{ctx['documents'][0]['id']}]")
    assert {"seconds_retrieve", "tokens_final", "compression"} <= set(ctx["stats"])
    too_many = post(server, "/context", {"query": "q", "candidates": 41})
    assert too_many.status_code == 422 and "--max-documents" in too_many.json()["message"]


# ---------------------------------------------------------------- limits, keys, ops
def test_limits_answer_clear_json(server):
    r = post(server, "/v2/rerank", {"query": "q", "documents": ["d"] * 41})
    assert r.status_code == 413 and r.json()["error_type"] == "too_many_documents"
    assert "41 documents" in r.json()["message"] and "--max-documents" in r.json()["message"]
    r = post(server, "/rerank", {"query": "q", "texts": ["x" * 1000] * 30})  # ~30 kB > 20000 bytes
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"
    chunked = httpx.post(f"{server.url}/prune", headers={**AUTH, "Content-Type": "application/json"},
                         content=iter([b'{"query": "q", "texts": ["', b"y" * 25000, b'"]}']), timeout=30)
    assert chunked.status_code == 413  # no Content-Length: counted while reading
    r = post(server, "/prune", {"query": "q" * 201, "texts": ["a"]})
    assert r.status_code == 422 and r.json()["error_type"] == "query_too_long" and "201" in r.json()["message"]
    r = post(server, "/v2/rerank", {"query": "   ", "documents": ["a"]})
    assert r.status_code == 422 and "empty" in r.json()["message"]
    r = httpx.post(f"{server.url}/v2/rerank", headers={**AUTH, "Content-Type": "application/json"},
                   content=b"{not json", timeout=30)
    assert r.status_code == 422 and r.json()["error_type"] == "validation" and r.json()["detail"]
    r = post(server, "/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0})
    assert r.status_code == 422 and "top_n" in r.json()["message"]


def test_api_key(server):
    body = {"query": "q", "documents": ["a"]}
    assert post(server, "/v2/rerank", body, headers={}).status_code == 401
    wrong = post(server, "/v2/rerank", body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.json()["error_type"] == "unauthorized"
    assert post(server, "/v2/rerank", body, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # probes need no key
    assert post(server, "/v2/rerank", body).status_code == 200


def test_no_cors_by_default(server):
    r = httpx.options(f"{server.url}/v2/rerank", headers={"Origin": "https://evil.example",
                                                          "Access-Control-Request-Method": "POST"}, timeout=10)
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}


def test_health_metrics_and_openapi(server):
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and "CrossEncoderReranker" in health["reranker"]
    assert set(health["queue_depth"]) == {"rerank", "prune", "context", "retrieve"}
    post(server, "/v2/rerank", {"query": "q", "documents": DOCS})
    text = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=10).text
    for name in ("ragprune_requests_total", "ragprune_request_seconds_bucket", "ragprune_batch_documents_bucket",
                 "ragprune_batch_requests_bucket", "ragprune_queue_depth"):
        assert name in text
    assert 'ragprune_requests_total{route="/v2/rerank",status="200"}' in text
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/prune", "/context", "/retrieve", "/health",
            "/metrics"} <= set(spec["paths"])
    assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200


@pytest.mark.slow
def test_concurrent_clients_get_sequential_results(server):
    queries = [f"{w} question {i}" for i, w in enumerate(["scurvy", "capital", "cats", "sailors"] * 8)]
    bodies = [{"query": q, "documents": DOCS[i % 4:] + DOCS[: i % 4]} for i, q in enumerate(queries)]
    sequential = [post(server, "/v2/rerank", b).json()["results"] for b in bodies]
    barrier = threading.Barrier(32)

    def call(body):
        barrier.wait()
        return post(server, "/v2/rerank", body).json()["results"]

    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(call, bodies))
    for seq, conc in zip(sequential, concurrent):
        assert [r["index"] for r in conc] == [r["index"] for r in seq]
        # batches pad pairs to a common length: the same scores up to float rounding
        assert [r["relevance_score"] for r in conc] == pytest.approx([r["relevance_score"] for r in seq], abs=1e-6)


# ---------------------------------------------------------------- backpressure and disconnects
def test_full_queue_answers_503_with_retry_after(slow_server):
    barrier = threading.Barrier(8)

    def call(i):
        barrier.wait()
        return post(slow_server, "/v2/rerank", {"query": f"word {i}", "documents": ["word one", "two"]}, headers={})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, range(8)))
    codes = sorted(r.status_code for r in replies)
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 1, codes
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1" and busy.json()["error_type"] == "overloaded"
    assert post(slow_server, "/v2/rerank", {"query": "word", "documents": ["word"]}, headers={}).status_code == 200


def _raw_request(url: str, path: str, body: bytes, send_all: bool = True) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + (body if send_all else body[: len(body) // 2]))
    # the socket closes here, before the reply (or before the whole body) arrived


def test_client_disconnect_mid_request(slow_server):
    body = json.dumps({"query": "word", "documents": ["word a", "b"]}).encode()
    for _ in range(3):
        _raw_request(slow_server.url, "/v2/rerank", body)  # disconnect while the model runs
    _raw_request(slow_server.url, "/v2/rerank", body, send_all=False)  # disconnect mid-body
    for _ in range(20):  # a polite client: retries a 503 after its Retry-After
        ok = post(slow_server, "/v2/rerank", {"query": "word", "documents": ["word a", "b"]}, headers={})
        if ok.status_code != 503:
            break
        time.sleep(float(ok.headers["Retry-After"]))
    assert ok.status_code == 200 and ok.json()["results"][0]["index"] == 0
    health = httpx.get(f"{slow_server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["queue_depth"]["rerank"] == 0  # abandoned requests left the queue
    metrics = httpx.get(f"{slow_server.url}/metrics", timeout=10).text
    assert 'ragprune_requests_total{route="/v2/rerank",status="499"}' in metrics  # withdrawn, not run


# ---------------------------------------------------------------- schemathesis
@pytest.mark.slow
def test_schemathesis_finds_no_server_error(server, tmp_path):
    pytest.importorskip("schemathesis")
    cmd = [str(Path(sys.executable).parent / "st"), "run", f"{server.url}/openapi.json", "--checks",
           "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
           "positive_data_acceptance", "--max-examples", "8", "--phases", "examples,fuzzing", "--workers", "1",
           "--header", f"Authorization: Bearer {KEY}", "--request-timeout", "60", "--seed", "1",
           "--no-color"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    assert server.proc.poll() is None  # still serving


# ---------------------------------------------------------------- import hygiene, CLI
def test_import_ragprune_does_not_import_fastapi():
    code = "import sys, ragprune; ragprune.Pipeline; import ragprune.serve; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_extra_names_it():
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "try:\n    import ragprune.serve.app\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'ragprune[serve]'" in out.stdout


def test_serve_help_documents_every_option():
    out = subprocess.run([sys.executable, "-m", "ragprune", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for opt in ("--host", "--port", "--reranker", "--pruner", "--index", "--max-batch-size", "--max-wait-ms",
                "--max-queue", "--max-documents", "--max-request-bytes", "--max-query-chars", "--api-key-env",
                "--cors-origin"):
        assert opt in out
    assert "127.0.0.1" in out


def test_serve_refuses_unset_key_env():
    run = subprocess.run([sys.executable, "-m", "ragprune", "serve", "--api-key-env", "RAGPRUNE_SURELY_UNSET_VAR",
                          "--reranker", "tests.serve_helpers:slow_reranker"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "RAGPRUNE_SURELY_UNSET_VAR" in run.stderr


def test_sigterm_finishes_in_flight_requests(tmp_path):
    proc = ServerProcess(["--reranker", "tests.serve_helpers:slow_reranker", "--pruner", "tests.serve_helpers:lead_pruner",
                          "--max-batch-size", "1"], env={"RAGPRUNE_TEST_DELAY_S": "0.5"}, log=tmp_path / "server.log")
    proc.wait_ready()
    body = {"query": "word", "documents": ["word a", "b"]}
    with ThreadPoolExecutor(2) as pool:
        replies = [pool.submit(post, proc, "/v2/rerank", body, {}) for _ in range(2)]
        deadline = time.monotonic() + 60
        while httpx.get(f"{proc.url}/health", timeout=10).json()["queue_depth"]["rerank"] < 1:
            assert time.monotonic() < deadline  # one request runs, the other waits in the queue
            time.sleep(0.01)
        proc.proc.send_signal(signal.SIGTERM)  # shut down with both in flight
        codes = [r.result().status_code for r in replies]
    assert codes == [200, 200]
    _assert_clean_exit(proc)
