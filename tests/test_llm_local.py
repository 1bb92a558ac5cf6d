"""Real local LLMs (SmolLM2-135M GGUF): in-process llama.cpp, transformers, and a real
OpenAI-compatible HTTP server (llama.cpp's own, from the xllamacpp wheel) started by a fixture.

SmolLM2-135M is near random at ranking: these tests check that the plumbing works end to end
on a real model and a real server, not ranking quality (eval/beir.py measures that).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragprune.models import ModelNotFoundError
from ragprune.rerank.llm import (
    LlamaCppLLM,
    LLMUnavailableError,
    OpenAICompatibleLLM,
    TransformersLLM,
    pick_label,
    resolve_gguf,
)
from ragprune.rerank.pairwise import PRP_PROMPT, PairwiseReranker

LABELS = ("A", "B")
QUERY = "What is the capital of France?"
GOOD = "Paris is the capital and most populous city of France."
BAD = "The Great Wall of China is a series of fortifications in northern China."


@pytest.fixture(scope="module")
def smollm2():
    try:
        return resolve_gguf("smollm2-135m")
    except ModelNotFoundError as e:
        pytest.skip(str(e))


def _check_backend(llm) -> None:
    reply = llm.choose(PRP_PROMPT.format(query=QUERY, a=GOOD, b=BAD), LABELS, answer_prefix="Passage ")
    assert reply.label_logprobs is not None and set(reply.label_logprobs) <= set(LABELS)
    assert pick_label(reply, LABELS) in LABELS
    assert reply.prompt_tokens > 50
    gen = llm.generate("Name the capital of France in one word.", max_tokens=8)
    assert isinstance(gen.text, str) and gen.text.strip() and 0 < gen.completion_tokens <= 8
    out = PairwiseReranker(llm, method="allpair").rerank(QUERY, [GOOD, BAD, "Cats purr."])
    assert len(out) == 3 and out.stats.llm_calls == 6


def test_llamacpp_in_process(smollm2):
    pytest.importorskip("xllamacpp")
    llm = LlamaCppLLM(smollm2, n_ctx=1024, threads=1)
    _check_backend(llm)
    # deterministic: the same prompt gives the same answer
    p = PRP_PROMPT.format(query=QUERY, a=BAD, b=GOOD)
    assert llm.choose(p, LABELS).label_logprobs == pytest.approx(llm.choose(p, LABELS).label_logprobs, abs=1e-4)


def test_llamacpp_truncated_gguf_is_a_clear_error(smollm2, tmp_path):
    pytest.importorskip("xllamacpp")
    cut = tmp_path / "cut.gguf"
    with open(smollm2, "rb") as f:
        cut.write_bytes(f.read(1 << 20))  # the first MiB of a real model: a download cut short
    with pytest.raises(ValueError, match="could not load .*cut.gguf"):
        LlamaCppLLM(cut, n_ctx=256, threads=1)


def test_load_llm_picks_llamacpp_for_a_gguf_short_name(smollm2):
    pytest.importorskip("xllamacpp")
    from ragprune.rerank.llm import load_llm

    llm = load_llm("smollm2-135m", threads=1, n_ctx=1024)
    assert isinstance(llm, LlamaCppLLM)
    assert llm.generate("Say hi.", max_tokens=4).text.strip()


def test_transformers_gguf(smollm2):
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    _check_backend(TransformersLLM(smollm2))


def test_transformers_missing_or_wrong_files(tmp_path):
    with pytest.raises(ModelNotFoundError):
        TransformersLLM(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="gguf"):
        TransformersLLM(tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="could not load"):
        TransformersLLM(tmp_path / "empty")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(smollm2, tmp_path_factory):
    """llama.cpp's HTTP server (the prebuilt xllamacpp wheel, ``tests/llama_server.py``) serving
    SmolLM2 on 127.0.0.1 in its own process (stopped after the module)."""
    pytest.importorskip("xllamacpp", reason="xllamacpp comes with the llm extra (`make install`)")
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    script = Path(__file__).with_name("llama_server.py")
    cmd = [sys.executable, str(script), "--model", str(smollm2), "--port", str(port), "--threads", "1",
           "--ctx", "2048", "--alias", "smollm2"]
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    log_file = open(log, "wb")  # noqa: SIM115 - a file, not a pipe: llama.cpp logs a lot and a full pipe would block it
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "OPENAI_API_KEY": ""})
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama.cpp server did not come up within 120 s")
            time.sleep(0.5)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def test_openai_backend_against_real_server(llama_server):
    base, _ = llama_server
    llm = OpenAICompatibleLLM(base, "smollm2", timeout=120, max_retries=1)
    _check_backend(llm)


def test_eval_beir_prp_on_real_server_and_resume(llama_server, tmp_path):
    pytest.importorskip("pytrec_eval")
    from eval.beir import main
    from tests.test_eval_beir import _write_beir

    base, _ = llama_server
    docs = [{"_id": "paris", "title": "Paris", "text": GOOD}, {"_id": "wall", "title": "Wall", "text": BAD},
            {"_id": "cats", "title": "Cats", "text": "Cats are small domesticated mammals that purr and capital."}]
    _write_beir(tmp_path / "b", docs, [{"_id": "q1", "text": QUERY}], [("q1", "paris", 1)])
    out, cache = tmp_path / "r.json", tmp_path / "prp.jsonl"
    argv = ["--data", str(tmp_path / "b"), "--retriever", "bm25", "--top-k", "3", "--reranker", "prp",
            "--llm", base, "--llm-model", "smollm2", "--method", "sliding", "--prp-k", "1",
            "--prompt", "instruct", "--prp-cache", str(cache), "--json", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["prp"]["llm_calls_per_query"] == 4  # one pass over 3 candidates, both orders
    assert "first_stage_metrics" in res and "PairwiseReranker" in res["pipeline"]
    assert "prompt='instruct'" in res["pipeline"]  # the variant is recorded and keys the cache
    lines = cache.read_text().splitlines()
    assert len(lines) >= 1  # one line per LLM reply (CachedLLM)
    assert main(argv) == 0  # resumed from the cache: no new lines, same metrics
    assert cache.read_text().splitlines() == lines
    assert json.loads(out.read_text())["metrics"] == res["metrics"]


def test_eval_beir_prp_gate_and_reply_cache_on_real_server(llama_server, tmp_path):
    pytest.importorskip("pytrec_eval")
    from eval.beir import main
    from tests.test_eval_beir import _write_beir

    base, _ = llama_server
    docs = [{"_id": "wall", "title": "Wall", "text": BAD}, {"_id": "paris", "title": "Paris", "text": GOOD}]
    _write_beir(tmp_path / "b", docs, [{"_id": "q1", "text": QUERY}], [("q1", "paris", 1)])
    out, replies = tmp_path / "r.json", tmp_path / "replies.jsonl"
    argv = ["--data", str(tmp_path / "b"), "--retriever", "bm25", "--top-k", "2", "--reranker", "prp",
            "--llm", base, "--llm-model", "smollm2", "--method", "sliding", "--prp-k", "1", "--decision", "margin",
            "--min-margin", "1000", "--llm-cache", str(replies), "--json", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    # the server returns logprobs, so a huge gate ties every comparison: the BM25 order stays
    assert res["prp"]["gated_rate"] == 1.0 and res["metrics"] == res["first_stage_metrics"]
    assert res["prp"]["llm_cache_misses"] == 2 and len(replies.read_text().splitlines()) == 2
    assert main(argv) == 0  # same prompts again: answered from the reply cache, nothing sent
    again = json.loads(out.read_text())["prp"]
    assert (again["llm_cache_hits"], again["llm_cache_misses"]) == (2, 0)


def test_server_gone_is_a_clear_error(llama_server):
    base, proc = llama_server
    # last test of the module: stop the server and check the client's error
    proc.terminate()
    proc.wait(timeout=20)
    llm = OpenAICompatibleLLM(base, "smollm2", timeout=5, max_retries=1, backoff=0.01)
    with pytest.raises(LLMUnavailableError, match="could not connect"):
        llm.generate("hello")
