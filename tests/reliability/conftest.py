"""Fixtures for the reliability suite: tiny random models, a synthetic corpus, a network guard.

Everything here is built locally in seconds (no downloads, no shared data), so the suite runs
in CI on two cores.
"""

from __future__ import annotations

import socket

import pytest

from .helpers import make_corpus, make_queries


@pytest.fixture(scope="session")
def corpus():
    return make_corpus(300)


@pytest.fixture(scope="session")
def queries():
    return make_queries(50)


@pytest.fixture(scope="session")
def tiny_ce_path(tmp_path_factory):
    """A 2-layer random BERT cross-encoder (the helper of tests/test_cross_encoder.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.test_cross_encoder import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("rel-ce") / "ce")


@pytest.fixture(scope="session")
def tiny_provence_path(tmp_path_factory, tiny_ce_path):
    """A random Provence checkpoint built on the tiny cross-encoder."""
    from ragprune.prune.provence import init_provence, save_provence

    tok, model = init_provence(tiny_ce_path)
    return save_provence(model, tok, tmp_path_factory.mktemp("rel-prov") / "provence")


@pytest.fixture(scope="session")
def tiny_ce(tiny_ce_path):
    from ragprune import CrossEncoderReranker

    return CrossEncoderReranker(tiny_ce_path, batch_size=16)


@pytest.fixture(scope="session")
def tiny_provence(tiny_provence_path):
    from ragprune import ProvencePruner

    return ProvencePruner(tiny_provence_path, threshold=0.5, max_length=64, stride=8)


@pytest.fixture()
def no_network(monkeypatch):
    """Python-level network guard: any connect or DNS lookup raises and is recorded."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if len(args) > 1 else args)
        raise OSError("network access attempted during a test that must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
