"""LLM backends behind one small protocol: pick a label, or generate a short answer.

Every backend implements :class:`LLMBackend`:

* ``generate(prompt, max_tokens)`` -> :class:`LLMReply` (greedy text and token counts);
* ``choose(prompt, labels, answer_prefix)`` -> :class:`LLMReply` whose ``label_logprobs``
  holds the log-probability of each label (e.g. ``"A"``/``"B"``) when the backend can see
  token probabilities, and whose ``text`` is the generated answer otherwise.
  :func:`pick_label` turns either form into a label or ``None`` (unparseable).

Backends:

* :class:`TransformersLLM`: a local Hugging Face causal LM folder or a ``.gguf`` file
  (through transformers' ``gguf_file``; dequantized to float32); one forward pass per choice.
* :class:`OpenAICompatibleLLM`: any OpenAI-compatible HTTP server (vLLM, llama.cpp server,
  Ollama, ...): ``base_url``, ``model``, the API key from an environment variable, timeouts,
  bounded retries with exponential backoff, logprobs when the server returns them and
  parsing of the generated text otherwise.
* :class:`LlamaCppLLM`: a GGUF file run in-process by llama.cpp (the ``xllamacpp`` wheel),
  the fastest way to use the small GGUF models on a CPU.
* :class:`CallableLLM`: wraps ``fn(prompt) -> str``, for users' own clients and for tests.
* :class:`CachedLLM`: wraps any backend with a persistent JSONL cache of its replies, so a
  benchmark rerun (another PRP gate, another prompt order) only pays for new prompts.

Short model names (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``, ``smollm2-135m``,
``gemma-3-270m``; :data:`GGUF_MODELS`) resolve to the GGUF files that
``shared/models/fetch_models.py`` puts in the model cache. The Qwen models are the Coder
instruct models; their older names ``qwen2.5-1.5b``/``qwen1.5b`` and ``qwen2.5-0.5b``/``qwen0.5b``
still resolve, with a ``DeprecationWarning`` (:data:`DEPRECATED_MODEL_NAMES`). Nothing is
downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._validate import check_number, check_positive_int
from ..models import ModelNotFoundError, models_dir

__all__ = [
    "LLMBackend",
    "LLMReply",
    "LLMError",
    "LLMUnavailableError",
    "LLMResponseError",
    "CallableLLM",
    "CachedLLM",
    "TransformersLLM",
    "OpenAICompatibleLLM",
    "LlamaCppLLM",
    "load_llm",
    "resolve_gguf",
    "GGUF_MODELS",
    "DEPRECATED_MODEL_NAMES",
    "pick_label",
]

logger = logging.getLogger(__name__)

#: Short names -> (cache folder, file) as written by shared/models/fetch_models.py.
GGUF_MODELS = {
    "qwen2.5-coder-1.5b": ("qwen1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    "qwen2.5-coder-0.5b": ("qwen0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    "smollm2-135m": ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2": ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": ("gemma270m", "gemma-3-270m-q4_k_m.gguf"),
    "gemma270m": ("gemma270m", "gemma-3-270m-q4_k_m.gguf"),
}
#: Older short names that hid which model they are -> the current name (still accepted, with a
#: DeprecationWarning, so eval caches, results and commands that use them keep working).
DEPRECATED_MODEL_NAMES = {
    "qwen2.5-1.5b": "qwen2.5-coder-1.5b",
    "qwen1.5b": "qwen2.5-coder-1.5b",
    "qwen2.5-0.5b": "qwen2.5-coder-0.5b",
    "qwen0.5b": "qwen2.5-coder-0.5b",
}


class LLMError(RuntimeError):
    """An LLM backend could not produce a reply."""


class LLMUnavailableError(LLMError):
    """The server could not be reached, or kept failing, after the allowed retries."""


class LLMResponseError(LLMError):
    """The backend answered, but the answer is not usable (bad JSON, no choices, wrong type)."""


@dataclass(frozen=True)
class LLMReply:
    """One LLM answer.

    Attributes:
        text: Generated text ('' when only probabilities were computed).
        label_logprobs: ``label -> log-probability`` at the answer position, when known.
        prompt_tokens: Tokens in the prompt (0 when the backend does not say).
        completion_tokens: Tokens generated.
    """

    text: str = ""
    label_logprobs: Mapping[str, float] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    raw: Any = field(default=None, repr=False, compare=False)


def pick_label(reply: LLMReply, labels: Sequence[str]) -> str | None:
    """The label a reply chose, or ``None`` when it chose none of them.

    Log-probabilities win when present (ties -> ``None``); otherwise the text is searched for
    ``"Passage X"``, then for a bare label (``"A"``, ``"B."``), and exactly one label must be found.
    """
    lp = reply.label_logprobs
    if lp:
        known = {lab: lp[lab] for lab in labels if lab in lp and math.isfinite(lp[lab])}
        if known:
            best = max(known.values())
            winners = [lab for lab, v in known.items() if v == best]
            if len(winners) == 1 and (len(known) == len(labels) or best > math.log(0.5)):
                return winners[0]
    text = reply.text.strip() if isinstance(reply.text, str) else ""
    if not text:
        return None
    alts = "|".join(re.escape(lab) for lab in labels)
    for pattern, flags in ((rf"\bpassage\s*[\"'(\[]?({alts})\b", re.IGNORECASE), (rf"^\W*({alts})\W*$", 0),
                           (rf"^\W*({alts})\b(?!\s+\w)", 0)):
        found = {f.upper() if f.upper() in labels else f for f in re.findall(pattern, text, flags=flags)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


class LLMBackend(ABC):
    """The protocol every LLM backend implements (thread-safe unless documented otherwise)."""

    name: str = "llm"

    @abstractmethod
    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        """Greedy answer to ``prompt`` (a user message; chat templates are applied inside)."""

    def choose(self, prompt: str, labels: Sequence[str], *, answer_prefix: str = "") -> LLMReply:
        """Ask ``prompt`` and report which of ``labels`` the model prefers.

        ``answer_prefix`` is the text the answer is expected to start with before the label
        (``"Passage "`` for PRP); backends that score tokens place it after the prompt.
        The default implementation generates a few tokens and leaves parsing to
        :func:`pick_label`.
        """
        return self.generate(prompt, max_tokens=max(4, len(answer_prefix.split()) + 3))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ----------------------------------------------------------------------------------------
# Plain callable


class CallableLLM(LLMBackend):
    """Wrap ``fn(prompt) -> str`` (any client the user already has) as a backend.

    Example:
        >>> llm = CallableLLM(lambda prompt: "Passage A")
        >>> pick_label(llm.choose("which?", ["A", "B"]), ["A", "B"])
        'A'
    """

    def __init__(self, fn: Callable[[str], str], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableLLM: fn must be callable (prompt -> str), got {type(fn).__name__}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        out = self.fn(prompt)
        if not isinstance(out, str):
            raise LLMResponseError(f"CallableLLM({self.name}): fn returned {type(out).__name__}, expected str.")
        return LLMReply(text=out, prompt_tokens=len(prompt.split()), completion_tokens=len(out.split()))


# ----------------------------------------------------------------------------------------
# Persistent reply cache


class CachedLLM(LLMBackend):
    """Wrap a backend with a JSONL cache of its replies, keyed by model, call and prompt.

    Greedy decoding is deterministic, so the same prompt to the same model gets the same reply:
    a rerun of a benchmark reads it from ``path`` instead of asking again. Each line holds the
    key, the reply (text, label log-probabilities, token counts) and the seconds the original
    call took; ``hits``, ``misses`` and ``seconds_saved`` count what this instance did. Lines
    that do not parse (a run killed mid-write) are skipped, never fatal.

    Args:
        llm: The backend that answers cache misses.
        path: JSONL file; created (with its folder) on the first miss.
        name: Model identity in the key (default ``llm.name``): change it when the weights change.

    Example:
        >>> import tempfile, os
        >>> calls = []
        >>> inner = CallableLLM(lambda p: calls.append(p) or "Passage A", name="toy")
        >>> llm = CachedLLM(inner, os.path.join(tempfile.mkdtemp(), "replies.jsonl"))
        >>> _ = llm.generate("q"); _ = llm.generate("q")
        >>> len(calls), llm.hits, llm.misses
        (1, 1, 1)
    """

    def __init__(self, llm: LLMBackend, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        if not isinstance(llm, LLMBackend):
            raise TypeError(f"CachedLLM: llm must be an LLMBackend, got {type(llm).__name__}.")
        self.llm, self.path = llm, Path(path)
        self.name = name or getattr(llm, "name", type(llm).__name__)
        self.hits = self.misses = 0
        self.seconds_saved = 0.0
        self._lock = threading.Lock()
        self._store: dict[str, dict[str, Any]] = {}
        if self.path.is_dir():
            raise IsADirectoryError(f"CachedLLM: {self.path} is a folder; give a .jsonl file path.")
        if self.path.exists():
            # errors="replace": a byte cut mid-character by a kill spoils its line only
            for line in self.path.read_bytes().decode("utf-8", errors="replace").splitlines():
                rec = _cache_record(line)
                if rec is not None:
                    self._store[rec["key"]] = rec

    def __repr__(self) -> str:
        return f"CachedLLM({self.llm!r}, {str(self.path)!r})"

    def _key(self, kind: str, prompt: str, extra: Any) -> str:
        blob = json.dumps([self.name, kind, extra, prompt], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cached(self, key: str, ask: Callable[[], LLMReply]) -> LLMReply:
        with self._lock:
            rec = self._store.get(key)
            if rec is not None:
                self.hits += 1
                self.seconds_saved += float(rec.get("seconds", 0.0))
        if rec is not None:
            lp = rec.get("label_logprobs")
            return LLMReply(text=rec["text"], label_logprobs=dict(lp) if lp is not None else None,
                            prompt_tokens=rec["prompt_tokens"], completion_tokens=rec["completion_tokens"])
        start = time.perf_counter()
        reply = ask()  # errors propagate and are not cached
        rec = {"key": key, "text": reply.text,
               "label_logprobs": dict(reply.label_logprobs) if reply.label_logprobs is not None else None,
               "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
               "seconds": round(time.perf_counter() - start, 4)}
        with self._lock:
            self.misses += 1
            self._store[key] = rec
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            except OSError as e:
                raise OSError(f"CachedLLM: cannot write the cache file {self.path} ({e}); "
                              "give a path in a writable folder.") from e
        return reply

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        return self._cached(self._key("generate", prompt, max_tokens),
                            lambda: self.llm.generate(prompt, max_tokens=max_tokens))

    def choose(self, prompt: str, labels: Sequence[str], *, answer_prefix: str = "") -> LLMReply:
        return self._cached(self._key("choose", prompt, [list(labels), answer_prefix]),
                            lambda: self.llm.choose(prompt, labels, answer_prefix=answer_prefix))


def _cache_record(line: str) -> dict[str, Any] | None:
    """A :class:`CachedLLM` line as a record with well-typed fields, or None if it is damaged."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or not isinstance(rec.get("text", ""), str):
        return None
    lp = rec.get("label_logprobs")
    if lp is not None and not (isinstance(lp, dict) and all(isinstance(v, (int, float)) for v in lp.values())):
        return None
    counts = [rec.get(k, 0) for k in ("prompt_tokens", "completion_tokens")]
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return None
    seconds = rec.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        seconds = 0.0
    return {**rec, "text": rec.get("text", ""), "prompt_tokens": counts[0], "completion_tokens": counts[1],
            "seconds": float(seconds)}


# ----------------------------------------------------------------------------------------
# Local transformers model


def resolve_gguf(name_or_path: str | os.PathLike[str], owner: str = "ragprune") -> Path:
    """Path of a GGUF file (or model folder) from a path or one of the short names in ``GGUF_MODELS``.

    Args:
        name_or_path: An existing file or folder, or a short name (case-insensitive), e.g.
            ``"qwen2.5-coder-1.5b"``. A name in :data:`DEPRECATED_MODEL_NAMES` resolves to its
            current name with a ``DeprecationWarning``.
        owner: Class or function name for error messages.

    Returns:
        The path (a short name: its file in the model cache, :func:`ragprune.models.models_dir`).

    Raises:
        ModelNotFoundError: no such path or name, or the named model is not in the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path).lower()
    if name in DEPRECATED_MODEL_NAMES:
        new = DEPRECATED_MODEL_NAMES[name]
        warnings.warn(f"{owner}: the model name {name!r} is deprecated; it is {GGUF_MODELS[new][1]!r} (a Coder "
                      f"model): use {new!r}.", DeprecationWarning, stacklevel=2)
        name = new
    entry = GGUF_MODELS.get(name)
    if entry is None:
        raise ModelNotFoundError(
            f"{owner}: no model file or folder at {str(name_or_path)!r}; pass a local path or one of "
            f"{', '.join(sorted(GGUF_MODELS))}."
        )
    folder, file = entry
    candidate = models_dir() / folder / file
    if not candidate.is_file():
        raise ModelNotFoundError(
            f"{owner}: {name_or_path!r} is not in the model cache ({candidate}). Fetch it with "
            f"`python shared/models/fetch_models.py {folder}` (or set RAGPRUNE_MODELS_DIR)."
        )
    return candidate


def _chat_prompt(tokenizer: Any, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n"


class TransformersLLM(LLMBackend):
    """A local causal LM through transformers (a model folder, or a ``.gguf`` file).

    Args:
        model: Folder with a causal-LM checkpoint, a ``.gguf`` file, or a short name
            (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``, ``smollm2-135m``, ``gemma-3-270m``).
        device: torch device (``"cpu"`` default).
        max_input_tokens: Prompts are cut from the left beyond this (a warning is logged).
        trust_remote_code: Passed to transformers; never switched on implicitly.

    ``choose`` is one forward pass: the chat-formatted prompt plus ``answer_prefix``, then the
    next-token log-probabilities of each label (``" A"`` and ``"A"`` spellings merged).
    """

    def __init__(self, model: str | os.PathLike[str], *, device: str = "cpu", max_input_tokens: int = 4096,
                 trust_remote_code: bool = False) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("TransformersLLM needs torch and transformers: pip install 'ragprune[llm]'.") from e
        check_positive_int(max_input_tokens, "max_input_tokens", "TransformersLLM")
        path = resolve_gguf(model, "TransformersLLM")
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if path.is_file():
            if path.suffix != ".gguf":
                raise ValueError(f"TransformersLLM: {path} is a file but not a .gguf; pass a model folder or a GGUF file.")
            folder, kwargs["gguf_file"] = str(path.parent), path.name
        else:
            folder = str(path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).to(device).eval()
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(f"TransformersLLM: could not load a causal LM from {path}: {e}") from e
        self.torch, self.device, self.max_input_tokens = torch, device, max_input_tokens
        self.name = path.name
        self._lock = threading.Lock()
        self._label_ids: dict[tuple[str, ...], list[list[int]]] = {}

    def _encode(self, text: str) -> Any:
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        if ids.shape[1] > self.max_input_tokens:
            logger.warning("prompt of %d tokens cut to the last %d", ids.shape[1], self.max_input_tokens)
            ids = ids[:, -self.max_input_tokens:]
        return ids.to(self.device)

    def _ids_for(self, labels: Sequence[str]) -> list[list[int]]:
        key = tuple(labels)
        if key not in self._label_ids:
            out = []
            for lab in labels:
                ids = {self.tokenizer.encode(v, add_special_tokens=False)[0] for v in (lab, " " + lab)}
                out.append(sorted(ids))
            self._label_ids[key] = out
        return self._label_ids[key]

    def choose(self, prompt: str, labels: Sequence[str], *, answer_prefix: str = "") -> LLMReply:
        text = _chat_prompt(self.tokenizer, prompt) + answer_prefix.rstrip()
        ids = self._encode(text)
        with self._lock, self.torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, -1].float()
        logp = self.torch.log_softmax(logits, dim=-1)
        label_lp = {lab: float(self.torch.logsumexp(logp[idx], dim=0))
                    for lab, idx in zip(labels, self._ids_for(labels))}
        return LLMReply(label_logprobs=label_lp, prompt_tokens=int(ids.shape[1]), completion_tokens=0)

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        check_positive_int(max_tokens, "max_tokens", "TransformersLLM.generate")
        ids = self._encode(_chat_prompt(self.tokenizer, prompt))
        with self._lock, self.torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids),
                                      max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        return LLMReply(text=self.tokenizer.decode(new, skip_special_tokens=True),
                        prompt_tokens=int(ids.shape[1]), completion_tokens=int(new.shape[0]))


# ----------------------------------------------------------------------------------------
# OpenAI-compatible chat completions (HTTP server or in-process llama.cpp)


def _parse_chat_completion(body: Any, labels: Sequence[str] | None, owner: str) -> LLMReply:
    """Read an OpenAI chat-completion JSON object into an :class:`LLMReply`."""
    if not isinstance(body, Mapping):
        raise LLMResponseError(f"{owner}: expected a JSON object, got {type(body).__name__}.")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise LLMResponseError(f"{owner}: the reply has no choices: {json.dumps(body)[:200]}")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, Mapping) else None
    if text is None:
        text = choice.get("text", "")
    if not isinstance(text, str):
        raise LLMResponseError(f"{owner}: choice content is {type(text).__name__}, expected text.")
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    label_lp = _label_logprobs(choice.get("logprobs"), labels) if labels else None
    return LLMReply(text=text, label_logprobs=label_lp,
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0), raw=body)


def _label_logprobs(logprobs: Any, labels: Sequence[str]) -> dict[str, float] | None:
    """Label log-probabilities at the first generated token that is one of the labels."""
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list):
        return None
    for pos in content:
        if not isinstance(pos, Mapping) or str(pos.get("token", "")).strip() not in labels:
            continue
        out: dict[str, float] = {}
        for alt in pos.get("top_logprobs") or [pos]:
            if not isinstance(alt, Mapping):
                continue
            tok, lp = str(alt.get("token", "")).strip(), alt.get("logprob")
            if tok in labels and isinstance(lp, (int, float)):
                out[tok] = max(out.get(tok, -math.inf), float(lp))
        return out or None
    return None


def _chat_body(model: str | None, prompt: str, max_tokens: int, logprobs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                            "temperature": 0.0}
    if model:
        body["model"] = model
    if logprobs:
        body.update(logprobs=True, top_logprobs=5)
    return body


class OpenAICompatibleLLM(LLMBackend):
    """Any server with the OpenAI ``/v1/chat/completions`` API.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000/v1"`` (vLLM, llama.cpp server) or
            ``"http://localhost:11434/v1"`` (Ollama).
        model: Model name the server expects.
        api_key_env: Environment variable holding the API key (sent as a Bearer token when
            set; local servers usually need none). Keys are never taken from arguments or files.
        timeout: Seconds per HTTP request (connect and read).
        max_retries: Extra attempts after a connection error, a timeout, HTTP 429 or 5xx,
            with exponential backoff (``backoff * 2**attempt`` seconds, jittered, capped at 30 s;
            a ``Retry-After`` header is honoured up to the same cap). Other 4xx fail at once.
        logprobs: Ask for logprobs (falls back to text when the server rejects or omits them).

    Raises (from calls):
        LLMUnavailableError: the server could not be reached or kept failing.
        LLMResponseError: it answered with something that is not a chat completion.
    """

    def __init__(self, base_url: str, model: str | None = None, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 2, backoff: float = 0.5, logprobs: bool = True,
                 transport: Any = None) -> None:
        try:
            import httpx
        except ImportError as e:  # pragma: no cover
            raise ImportError("OpenAICompatibleLLM needs httpx: pip install 'ragprune[llm]'.") from e
        owner = "OpenAICompatibleLLM"
        if not isinstance(base_url, str) or not re.match(r"^https?://", base_url):
            raise ValueError(f"{owner}: base_url must start with http:// or https://, got {base_url!r}.")
        try:
            parsed = httpx.URL(base_url)
            ok = bool(parsed.host)
        except (httpx.InvalidURL, ValueError, TypeError):
            ok = False
        if not ok:
            raise ValueError(f"{owner}: base_url {base_url!r} is not a valid URL (scheme, host and optional "
                             "port, e.g. http://127.0.0.1:8000/v1).")
        check_number(timeout, "timeout", owner, low=0, low_open=True)
        check_number(backoff, "backoff", owner, low=0)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"{owner}: max_retries must be an int >= 0, got {max_retries!r}.")
        self.base_url = base_url.rstrip("/")
        self.model, self.timeout, self.max_retries, self.backoff = model, float(timeout), max_retries, float(backoff)
        self.logprobs = logprobs
        self.name = model or self.base_url
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._httpx = httpx
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout), headers=headers, transport=transport,
                                    follow_redirects=False, trust_env=False)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM({self.base_url!r}, model={self.model!r})"

    def _post(self, body: dict[str, Any]) -> Any:
        owner, url = "OpenAICompatibleLLM", f"{self.base_url}/chat/completions"
        httpx = self._httpx
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(30.0, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
            try:
                resp = self._client.post(url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g} s"
            except httpx.TransportError as e:
                last = f"could not connect ({type(e).__name__}: {e})"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except (json.JSONDecodeError, UnicodeDecodeError) as e:
                        raise LLMResponseError(f"{owner}: {url} returned invalid JSON ({e}): {resp.text[:200]!r}") from e
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    retry_after = resp.headers.get("retry-after", "")
                    if retry_after.replace(".", "", 1).isdigit():
                        wait = min(30.0, float(retry_after))
                else:
                    raise _HTTPClientError(resp.status_code, f"{owner}: {url} answered HTTP {resp.status_code}: "
                                           f"{resp.text[:300]}")
            if attempt < self.max_retries:
                logger.warning("%s: %s; retry %d/%d in %.1f s", url, last, attempt + 1, self.max_retries, wait)
                time.sleep(wait)
        raise LLMUnavailableError(
            f"{owner}: {url} failed after {self.max_retries + 1} attempts: {last}. Is the server running, and is "
            "base_url right (it usually ends in /v1)?"
        )

    def _chat(self, prompt: str, max_tokens: int, labels: Sequence[str] | None) -> LLMReply:
        want_lp = bool(labels) and self.logprobs
        try:
            body = self._post(_chat_body(self.model, prompt, max_tokens, want_lp))
        except _HTTPClientError as e:
            if want_lp and e.status == 400:  # the server rejects logprobs: use text from now on
                logger.warning("server rejected logprobs (%s); falling back to parsing generated text", e)
                self.logprobs = False
                body = self._post(_chat_body(self.model, prompt, max_tokens, False))
            else:
                raise LLMError(str(e)) from None
        return _parse_chat_completion(body, labels, "OpenAICompatibleLLM")

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        check_positive_int(max_tokens, "max_tokens", "OpenAICompatibleLLM.generate")
        return self._chat(prompt, max_tokens, None)

    def choose(self, prompt: str, labels: Sequence[str], *, answer_prefix: str = "") -> LLMReply:
        return self._chat(prompt, max(4, len(answer_prefix.split()) + 3), labels)


class _HTTPClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LlamaCppLLM(LLMBackend):
    """A GGUF model run in-process by llama.cpp (the prebuilt ``xllamacpp`` wheel).

    Same request and reply format as :class:`OpenAICompatibleLLM`, without a server.

    Args:
        model: ``.gguf`` path or short name (``qwen2.5-coder-1.5b``, ...).
        n_ctx: Context window in tokens.
        threads: CPU threads (default: all cores).
        verbose: Let llama.cpp print its own logs to stderr.
    """

    def __init__(self, model: str | os.PathLike[str], *, n_ctx: int = 4096, threads: int | None = None,
                 verbose: bool = False) -> None:
        try:
            import xllamacpp as xlc
        except ImportError as e:
            raise ImportError("LlamaCppLLM needs the xllamacpp wheel: pip install 'ragprune[llm]' "
                              "(or use TransformersLLM / OpenAICompatibleLLM).") from e
        check_positive_int(n_ctx, "n_ctx", "LlamaCppLLM")
        path = resolve_gguf(model, "LlamaCppLLM")
        if not path.is_file() or path.suffix != ".gguf":
            raise ValueError(f"LlamaCppLLM: expected a .gguf file, got {path}.")
        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.verbosity = -1 if not verbose else params.verbosity  # llama.cpp logs only when asked
        n = threads or os.cpu_count() or 1
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = n
        try:
            self._server = xlc.Server(params)
        except RuntimeError as e:  # llama.cpp says only "Failed to init server"
            raise ValueError(f"LlamaCppLLM: llama.cpp could not load {path} ({e}); is it a complete GGUF "
                             "model file? Fetch it again if it was cut short.") from e
        self._lock = threading.Lock()
        self.name = path.name

    def _chat(self, prompt: str, max_tokens: int, labels: Sequence[str] | None) -> LLMReply:
        with self._lock:
            body = self._server.handle_chat_completions(_chat_body(None, prompt, max_tokens, bool(labels)))
        if isinstance(body, Mapping) and "error" in body and "choices" not in body:
            raise LLMResponseError(f"LlamaCppLLM: llama.cpp returned an error: {body['error']}")
        return _parse_chat_completion(body, labels, "LlamaCppLLM")

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        check_positive_int(max_tokens, "max_tokens", "LlamaCppLLM.generate")
        return self._chat(prompt, max_tokens, None)

    def choose(self, prompt: str, labels: Sequence[str], *, answer_prefix: str = "") -> LLMReply:
        return self._chat(prompt, max(4, len(answer_prefix.split()) + 3), labels)


def load_llm(spec: str, *, backend: str = "auto", threads: int | None = None, **kwargs: Any) -> LLMBackend:
    """Build a backend from a string: an ``http(s)://`` URL, a ``.gguf`` path, a folder or a short name.

    ``backend``: ``"auto"`` (URL -> OpenAICompatibleLLM, otherwise LlamaCppLLM when xllamacpp is
    installed and the model is a GGUF, else TransformersLLM), ``"openai"``, ``"llamacpp"`` or
    ``"transformers"``. ``threads`` sets llama.cpp's CPU threads, or torch's for transformers
    (a process-wide setting); servers ignore it. Other keyword arguments go to the backend.
    """
    if backend not in ("auto", "openai", "llamacpp", "transformers"):
        raise ValueError(f"load_llm: unknown backend {backend!r}; expected auto, openai, llamacpp or transformers.")
    if threads is not None:
        check_positive_int(threads, "threads", "load_llm")
    if backend == "openai" or (backend == "auto" and re.match(r"^https?://", spec)):
        return OpenAICompatibleLLM(spec, **kwargs)
    if backend == "auto":
        path = resolve_gguf(spec, "load_llm")
        backend = "transformers"
        if path.suffix == ".gguf":
            try:
                import xllamacpp  # noqa: F401
            except ImportError:
                pass
            else:
                backend = "llamacpp"
        spec = str(path)
    if backend == "llamacpp":
        return LlamaCppLLM(spec, threads=threads, **kwargs)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return TransformersLLM(spec, **kwargs)
