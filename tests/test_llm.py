"""LLM backends: label parsing, the OpenAI-compatible client (replies, retries, faults)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")

from ragprune.models import ModelNotFoundError  # noqa: E402
from ragprune.rerank.llm import (  # noqa: E402
    CallableLLM,
    LLMError,
    LLMReply,
    LLMResponseError,
    LLMUnavailableError,
    OpenAICompatibleLLM,
    load_llm,
    pick_label,
    resolve_gguf,
)

LABELS = ("A", "B")


@pytest.mark.parametrize(
    ("text", "label"),
    [("Passage A", "A"), ("passage b is more relevant", "B"), ("B", "B"), ("A.", "A"), ('Output: Passage "B"', "B"),
     ("A passage about cats", None), ("Passage A and Passage B", None), ("", None), ("no idea", None)],
)
def test_pick_label_from_text(text: str, label: str | None) -> None:
    assert pick_label(LLMReply(text=text), LABELS) == label


def test_pick_label_prefers_logprobs() -> None:
    assert pick_label(LLMReply(text="Passage B", label_logprobs={"A": -0.1, "B": -2.3}), LABELS) == "A"
    assert pick_label(LLMReply(label_logprobs={"A": -0.7, "B": -0.7}), LABELS) is None
    assert pick_label(LLMReply(label_logprobs={"B": -0.05}), LABELS) == "B"  # only one label, and it is likely
    assert pick_label(LLMReply(label_logprobs={"B": -3.0}), LABELS) is None


def test_callable_llm() -> None:
    llm = CallableLLM(lambda p: "Passage B")
    assert pick_label(llm.choose("q", LABELS), LABELS) == "B"
    assert llm.generate("q").text == "Passage B"
    with pytest.raises(TypeError):
        CallableLLM("not callable")  # type: ignore[arg-type]
    with pytest.raises(LLMResponseError):
        CallableLLM(lambda p: None).generate("q")  # type: ignore[arg-type,return-value]


def completion(text: str = "Passage A", logprobs: list | None = None) -> dict:
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice], "usage": {"prompt_tokens": 50, "completion_tokens": 2}}


def mock_client(handler, **kwargs) -> OpenAICompatibleLLM:
    kwargs.setdefault("backoff", 0.0)
    return OpenAICompatibleLLM("http://llm.test/v1", "m", transport=httpx.MockTransport(handler), **kwargs)


def test_logprobs_reply_is_read_at_the_label_token() -> None:
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        lp = [{"token": "Passage", "logprob": -0.01, "top_logprobs": []},
              {"token": " B", "logprob": -0.2, "top_logprobs": [{"token": " B", "logprob": -0.2},
                                                                {"token": " A", "logprob": -1.8}]}]
        return httpx.Response(200, json=completion("Passage B", lp))

    llm = mock_client(handler)
    reply = llm.choose("which?", LABELS, answer_prefix="Passage ")
    assert reply.label_logprobs == {"B": -0.2, "A": -1.8}
    assert pick_label(reply, LABELS) == "B"
    assert (reply.prompt_tokens, reply.completion_tokens) == (50, 2)
    body = seen[0]
    assert body["logprobs"] is True and body["temperature"] == 0.0 and body["model"] == "m"
    assert body["messages"] == [{"role": "user", "content": "which?"}]


def test_text_reply_without_logprobs() -> None:
    llm = mock_client(lambda r: httpx.Response(200, json=completion("Passage A")))
    assert pick_label(llm.choose("q", LABELS), LABELS) == "A"
    assert llm.generate("q", max_tokens=8).text == "Passage A"


def test_api_key_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sekret")
    headers = []

    def handler(request):
        headers.append(request.headers.get("authorization"))
        return httpx.Response(200, json=completion())

    mock_client(handler, api_key_env="MY_LLM_KEY").generate("q")
    mock_client(handler, api_key_env="UNSET_VAR_FOR_TEST").generate("q")
    assert headers == ["Bearer sekret", None]


def test_retries_5xx_and_429_then_succeeds() -> None:
    statuses = iter([500, 429, 200])
    calls = []

    def handler(request):
        calls.append(1)
        status = next(statuses)
        if status == 200:
            return httpx.Response(200, json=completion())
        return httpx.Response(status, text="busy", headers={"retry-after": "0"})

    assert mock_client(handler, max_retries=2).generate("q").text == "Passage A"
    assert len(calls) == 3


def test_persistent_500_gives_up_after_bounded_retries() -> None:
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(500, text="internal error")

    with pytest.raises(LLMUnavailableError, match="3 attempts.*HTTP 500"):
        mock_client(handler, max_retries=2).generate("q")
    assert len(calls) == 3


def test_client_errors_fail_at_once() -> None:
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(404, text="no such model")

    with pytest.raises(LLMError, match="404"):
        mock_client(handler).generate("q")
    assert len(calls) == 1


def test_server_rejecting_logprobs_falls_back_to_text() -> None:
    def handler(request):
        if json.loads(request.content).get("logprobs"):
            return httpx.Response(400, text="logprobs not supported")
        return httpx.Response(200, json=completion("Passage B"))

    llm = mock_client(handler)
    assert pick_label(llm.choose("q", LABELS), LABELS) == "B"
    assert llm.logprobs is False


@pytest.mark.parametrize(
    "response",
    [httpx.Response(200, text="<html>not json</html>"), httpx.Response(200, json={"choices": []}),
     httpx.Response(200, json={"error": "x"}), httpx.Response(200, json=[1, 2]),
     httpx.Response(200, json={"choices": [{"message": {"content": 7}}]})],
)
def test_malformed_replies_raise_response_error(response) -> None:
    with pytest.raises(LLMResponseError):
        mock_client(lambda r: response).generate("q")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_port_is_a_clear_error() -> None:
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=2, max_retries=1, backoff=0.01)
    start = time.perf_counter()
    with pytest.raises(LLMUnavailableError, match="could not connect"):
        llm.generate("q")
    assert time.perf_counter() - start < 10


def test_silent_server_times_out() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # accept, never answer
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = server.getsockname()[1]
        llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", timeout=0.5, max_retries=1, backoff=0.01)
        start = time.perf_counter()
        with pytest.raises(LLMUnavailableError, match="timed out"):
            llm.generate("q")
        assert time.perf_counter() - start < 10
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        server.close()


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAICompatibleLLM("localhost:8000", "m")
    for bad in ("http://", "http://[::1/v1", "https://:80/v1"):
        with pytest.raises(ValueError, match="not a valid URL"):
            OpenAICompatibleLLM(bad, "m")
    with pytest.raises(ValueError, match="timeout"):
        OpenAICompatibleLLM("http://x/v1", "m", timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        OpenAICompatibleLLM("http://x/v1", "m", max_retries=-1)
    with pytest.raises(ValueError, match="backend"):
        load_llm("x", backend="magic")
    assert isinstance(load_llm("http://127.0.0.1:1/v1", model="m"), OpenAICompatibleLLM)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        load_llm("x", threads=0)
    assert isinstance(load_llm("http://127.0.0.1:1/v1", model="m", threads=1), OpenAICompatibleLLM)  # ignored


def test_missing_model_files_name_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAGPRUNE_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="fetch_models.py qwen1.5b"):
        resolve_gguf("qwen2.5-coder-1.5b")
    with pytest.raises(ModelNotFoundError, match="no model file"):
        resolve_gguf(tmp_path / "nope.gguf")


def test_cached_llm_replays_replies_from_disk(tmp_path) -> None:
    from ragprune.rerank.llm import CachedLLM, LLMBackend, LLMReply

    class Counting(LLMBackend):
        name = "counting"

        def __init__(self) -> None:
            self.calls = 0

        def generate(self, prompt, *, max_tokens=32):
            self.calls += 1
            return LLMReply(text=f"answer to {prompt}", prompt_tokens=3, completion_tokens=2)

        def choose(self, prompt, labels, *, answer_prefix=""):
            self.calls += 1
            return LLMReply(text="", label_logprobs={"A": -0.1, "B": -2.5}, prompt_tokens=7)

    path = tmp_path / "sub" / "replies.jsonl"
    inner = Counting()
    llm = CachedLLM(inner, path)
    first = llm.choose("which?", ["A", "B"], answer_prefix="Passage ")
    assert llm.choose("which?", ["A", "B"], answer_prefix="Passage ") == first
    assert llm.generate("q").text == "answer to q" and llm.generate("q", max_tokens=5).text == "answer to q"
    assert inner.calls == 3 and (llm.hits, llm.misses) == (1, 3)
    # a new instance reads the file; a torn last line (killed run, even mid-character) and a
    # record with wrong field types are skipped
    with open(path, "ab") as f:
        f.write(b'{"key": "bad", "text": "x", "prompt_tokens": "x"}\n{"key": "trunc \xc3')
    again_inner = Counting()
    again = CachedLLM(again_inner, path)
    reply = again.choose("which?", ["A", "B"], answer_prefix="Passage ")
    assert reply.label_logprobs == {"A": -0.1, "B": -2.5} and reply.prompt_tokens == 7
    assert again_inner.calls == 0 and again.hits == 1
    # another model name, labels or prompt is a miss
    assert CachedLLM(Counting(), path, name="other").choose("which?", ["A", "B"]).prompt_tokens == 7
    other = CachedLLM(again_inner, path)
    other.choose("which?", ["B", "A"], answer_prefix="Passage ")
    assert again_inner.calls == 1
    # errors are raised, not cached
    failing = CachedLLM(CallableLLM(lambda p: 1, name="bad"), tmp_path / "bad.jsonl")  # type: ignore[arg-type,return-value]
    with pytest.raises(LLMResponseError):
        failing.generate("x")
    assert not (tmp_path / "bad.jsonl").exists()
    with pytest.raises(IsADirectoryError):
        CachedLLM(inner, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="cannot write the cache file"):
        CachedLLM(inner, tmp_path / "file" / "replies.jsonl").generate("q")
    with pytest.raises(TypeError):
        CachedLLM(lambda p: p, path)  # type: ignore[arg-type]


def test_short_names_say_they_are_coder_models_and_old_names_still_work(tmp_path, monkeypatch) -> None:
    import warnings

    from ragprune.rerank.llm import DEPRECATED_MODEL_NAMES, GGUF_MODELS

    monkeypatch.setenv("RAGPRUNE_MODELS_DIR", str(tmp_path))
    for size in ("1.5b", "0.5b"):
        folder, file = GGUF_MODELS[f"qwen2.5-coder-{size}"]
        assert "coder" in file
        (tmp_path / folder).mkdir()
        (tmp_path / folder / file).write_bytes(b"GGUF")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the new name resolves silently
            new = resolve_gguf(f"qwen2.5-coder-{size}")
        for old in (f"qwen2.5-{size}", f"qwen{size}", f"Qwen2.5-{size.upper()}"):
            with pytest.warns(DeprecationWarning, match=f"deprecated.*use 'qwen2.5-coder-{size}'"):
                assert resolve_gguf(old) == new
    assert not set(DEPRECATED_MODEL_NAMES) & set(GGUF_MODELS)  # no misleading name is a current one
    assert set(DEPRECATED_MODEL_NAMES.values()) <= set(GGUF_MODELS)
