"""Model names resolve like transformers resolves them: folders, shipped names, Hugging Face ids.

Every test lays out its own Hugging Face cache (``models--org--name/blobs``,
``snapshots/<commit>/`` with symlinks into the blobs, ``refs/main``) and runs offline: no test
downloads anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from ragprune.models import ModelNotFoundError, hf_cache_dir, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def lay_out_hf_cache(cache: Path, repo_id: str, source: Path, *, commit: str = COMMIT,
                     ref: str | None = "main", edit_config=None) -> Path:
    """Copy the files of ``source`` into ``cache`` the way huggingface_hub stores a snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in source.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.name == "config.json" and edit_config is not None:
            data = json.dumps(edit_config(json.loads(data))).encode()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / f.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(f.relative_to(source).parts) + 1)) / "blobs" / blob.name)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def offline(monkeypatch, tmp_path):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return cache


def test_hf_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub2"))
    assert hf_cache_dir() == tmp_path / "hub2"


def test_local_folder_wins_over_everything(tmp_path, offline):
    folder = tmp_path / "org" / "name"
    folder.mkdir(parents=True)
    assert resolve_model(folder) == folder
    assert resolve_model(str(folder)) == folder


def test_shipped_names_come_from_the_installed_package():
    ragprune_models = pytest.importorskip("ragprune_models")
    path = resolve_model("ragprune-reranker")
    assert path == ragprune_models.get_model_path("ragprune-reranker-minilm-l6")
    assert (path / "config.json").is_file() and (resolve_model("RAGPRUNE-PROVENCE") / "provence.json").is_file()


def test_hf_id_resolves_from_the_cache_offline(tmp_path, offline):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "bert"}')
    (src / "sub").mkdir()
    (src / "sub" / "x.txt").write_text("x")
    snap = lay_out_hf_cache(offline, "org/model", src)
    lay_out_hf_cache(offline, "org/model", src, commit=OTHER, ref=None)
    assert resolve_model("org/model") == snap
    assert (resolve_model("org/model") / "sub" / "x.txt").read_text() == "x"
    assert resolve_model("org/model", revision=OTHER) == snap.parent / OTHER
    # an explicit cache folder and local_files_only=True work without the environment
    assert resolve_model("org/model", cache_dir=offline, local_files_only=True) == snap


def test_hf_id_not_cached_offline_names_the_id_and_the_fix(offline):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("org/absent", owner="CrossEncoderReranker")
    msg = str(e.value)
    assert "CrossEncoderReranker" in msg and "'org/absent'" in msg and str(offline) in msg
    assert "HF_HUB_OFFLINE=1" in msg and "hf download org/absent" in msg


def test_hf_unknown_revision_offline_is_a_clear_error(tmp_path, offline):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    lay_out_hf_cache(offline, "org/model", src)
    with pytest.raises(ModelNotFoundError, match="at revision 'v9'"):
        resolve_model("org/model", revision="v9")


def test_local_files_only_overrides_an_online_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        resolve_model("org/absent", cache_dir=tmp_path, local_files_only=True)


def test_bad_names_and_options_are_clear_errors(offline):
    with pytest.raises(ModelNotFoundError, match="neither a shipped name"):
        resolve_model("no/such/folder")
    with pytest.raises(ModelNotFoundError, match="empty"):
        resolve_model("  ")
    with pytest.raises(ValueError, match="revision must be"):
        resolve_model("org/model", revision="")
    with pytest.raises(TypeError, match="local_files_only must be"):
        resolve_model("org/model", local_files_only="yes")


# ------------------------------------------------------------------ the loaders
torch_needed = pytest.mark.skipif(not __import__("importlib").util.find_spec("transformers"),
                                  reason="needs the rerank extra")


@torch_needed
def test_cross_encoder_from_a_hf_id(tmp_path, offline):
    from ragprune import CrossEncoderReranker
    from tests.test_cross_encoder import make_tiny_cross_encoder

    src = make_tiny_cross_encoder(tmp_path / "tiny")
    snap = lay_out_hf_cache(offline, "cross-encoder/tiny-test", src)
    ce = CrossEncoderReranker("cross-encoder/tiny-test")
    assert ce.path == snap
    local = CrossEncoderReranker(src)
    docs = ["Paris is the capital of France.", "Cats purr."]
    assert [h.score for h in ce.rerank("capital", docs)] == pytest.approx([h.score for h in local.rerank("capital", docs)])


@torch_needed
def test_cross_encoder_hf_id_with_remote_code_is_refused(tmp_path, offline):
    from ragprune import CrossEncoderReranker
    from tests.test_cross_encoder import make_tiny_cross_encoder

    src = make_tiny_cross_encoder(tmp_path / "tiny")
    lay_out_hf_cache(offline, "org/custom", src,
                     edit_config=lambda c: {**c, "auto_map": {"AutoModel": "modeling.Custom"}})
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        CrossEncoderReranker("org/custom")


@torch_needed
def test_provence_pruner_from_a_hf_id(tmp_path, offline):
    pytest.importorskip("ragprune_models")
    from ragprune import ProvencePruner

    src = resolve_model("ragprune-provence")
    snap = lay_out_hf_cache(offline, "someone/provence-copy", src)
    pruner = ProvencePruner("someone/provence-copy", revision=COMMIT)
    assert pruner.path == snap
    out = pruner.prune("what causes scurvy", ["Scurvy is caused by a lack of vitamin C. Cats purr loudly."])
    assert list(out[0].kept) == [0]


def test_dense_retriever_from_a_hf_id_saves_and_reloads_the_revision(tmp_path, offline):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from ragprune import DenseRetriever

    try:
        minilm = resolve_model("minilm")
    except ModelNotFoundError:
        pytest.skip("MiniLM is not installed")
    lay_out_hf_cache(offline, "org/mini", minilm, commit=OTHER, ref=None)  # only reachable by revision
    docs = ["Paris is the capital of France.", "Cats purr.", "Scurvy comes from a lack of vitamin C."]
    with pytest.raises(ModelNotFoundError, match="'org/mini'"):
        DenseRetriever.from_documents(docs, model="org/mini")
    dense = DenseRetriever.from_documents(docs, model="org/mini", revision=OTHER)
    assert dense.retrieve("vitamin C deficiency", k=1)[0].document.id == "2"
    dense.save(tmp_path / "idx")
    again = DenseRetriever.load(tmp_path / "idx")
    assert again.model_revision == OTHER
    assert again.retrieve("vitamin C deficiency", k=1)[0].document.id == "2"
    shutil.rmtree(offline / "models--org--mini")
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        DenseRetriever.load(tmp_path / "idx")
