"""Components and a process fixture for the ``ragprune serve`` tests (tests/test_serve.py).

The factories are loaded by the server subprocess through ``--reranker tests.serve_helpers:NAME``
(``module:factory``); they read their settings from environment variables the test sets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ragprune.prune.baselines import LeadPruner
from ragprune.rerank.base import PointwiseReranker
from ragprune.types import Document

ROOT = Path(__file__).resolve().parents[1]


class SlowOverlapReranker(PointwiseReranker):
    """Word overlap with the query, after sleeping ``RAGPRUNE_TEST_DELAY_S`` seconds per batch:
    a model slow enough to fill the queue, without loading one."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def _score(self, queries: list[str], docs: list[Document]) -> list[float]:
        time.sleep(self.delay)
        return [float(len(set(q.lower().split()) & set(d.text.lower().split()))) for q, d in zip(queries, docs)]


def slow_reranker() -> SlowOverlapReranker:
    return SlowOverlapReranker(float(os.environ.get("RAGPRUNE_TEST_DELAY_S", "1.0")))


def lead_pruner() -> LeadPruner:
    return LeadPruner(k=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m ragprune serve --port N ARGS`` in a subprocess, ready once /health answers."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(ROOT), **(env or {})}
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self._out = out
        self.proc = subprocess.Popen([sys.executable, "-m", "ragprune", "serve", "--port", str(self.port),
                                      "--log-level", "warning", *args], cwd=ROOT, env=full_env, stdout=out,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown), then wait; kill only if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out is not subprocess.DEVNULL:
            self._out.close()
        return self.proc.returncode
