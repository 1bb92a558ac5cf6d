"""Broken, foreign and hostile model folders fail early and clearly.

What this protects: CrossEncoderReranker, ProvencePruner and DenseRetriever, given a missing
folder, an empty folder, a config that is not a JSON object, a config of the wrong architecture,
a plain encoder where a trained head is needed, corrupt weights, missing tokenizer files, heads of
the wrong shape, or a checkpoint that asks for its own code (``auto_map``), raise
``ModelNotFoundError``/``ValueError`` naming the folder (and the fix where there is one). No
checkpoint code is ever executed: a module shipped in the folder that would write a marker file
when imported never runs. Also: the shipped-model aliases explain how to get the files when they
are missing. (tests/test_cross_encoder.py, tests/test_provence.py and tests/test_dense.py cover
the basic missing/empty/bad-JSON cases of one class each; this file covers the matrix.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragprune.models import ModelNotFoundError  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _ce(path):
    from ragprune import CrossEncoderReranker

    return CrossEncoderReranker(path)


def _provence(path):
    from ragprune import ProvencePruner

    return ProvencePruner(path)


def _dense(path):
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    from ragprune import DenseRetriever

    return DenseRetriever.from_documents(["a passage", "another one"], str(path))


LOADERS = {"cross-encoder": _ce, "provence": _provence, "dense": _dense}


@pytest.fixture()
def folder(tmp_path, tiny_ce_path, tiny_provence_path):
    """A copy of a working checkpoint for each loader, to be damaged by the test."""

    def make(kind: str) -> Path:
        src = tiny_provence_path if kind == "provence" else tiny_ce_path
        dst = tmp_path / f"{kind}-model"
        shutil.copytree(src, dst)
        return dst

    return make


def _expect_clear(kind: str, path: Path, exc=ValueError, match: str | None = None) -> str:
    with pytest.raises(exc) as info:
        LOADERS[kind](path)
    msg = str(info.value)
    assert str(path) in msg, msg
    if match:
        assert match in msg, msg
    return msg


@pytest.mark.parametrize("kind", list(LOADERS))
def test_missing_and_empty_folders(kind, tmp_path):
    _expect_clear(kind, tmp_path / "does-not-exist", ModelNotFoundError, "no model folder at")
    (tmp_path / "empty").mkdir()
    _expect_clear(kind, tmp_path / "empty")


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("config", ["null", "42", '"auto_map"', "[1, 2]", "{oops", "[" * 50_000])
def test_config_that_is_not_a_json_object(kind, folder, config):
    """CrossEncoderReranker used to raise a bare TypeError for a null or numeric config."""
    path = folder(kind)
    (path / "config.json").write_text(config)
    _expect_clear(kind, path)


@pytest.mark.parametrize("kind", ["provence"])
@pytest.mark.parametrize("meta", ["null", "[1, 2]", "7", "{broken"])
def test_provence_metadata_that_is_not_a_json_object(kind, folder, meta):
    """provence.json holding a JSON list or null used to raise AttributeError."""
    path = folder(kind)
    (path / "provence.json").write_text(meta)
    _expect_clear(kind, path)


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("config", [
    {"model_type": "vit", "architectures": ["ViTModel"], "image_size": 32},
    {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 1},
    {"model_type": "not-a-model"},
    {"architectures": ["BertForSequenceClassification"]},  # no model_type
])
def test_config_of_the_wrong_architecture(kind, folder, config):
    path = folder(kind)
    (path / "config.json").write_text(json.dumps(config))
    _expect_clear(kind, path)


def test_plain_encoder_is_not_a_cross_encoder(tmp_path):
    """A sentence-transformers encoder used to load as a cross-encoder with a random head."""
    from ragprune.models import resolve_model

    try:
        minilm = resolve_model("minilm")
    except ModelNotFoundError:
        pytest.skip("MiniLM not installed")
    _expect_clear("cross-encoder", minilm, match="no trained classification head")


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("damage", ["garbage weights", "truncated weights", "no weights", "no tokenizer"])
def test_damaged_checkpoint_files(kind, folder, damage):
    path = folder(kind)
    weights = path / "model.safetensors"
    if damage == "garbage weights":
        weights.write_bytes(b"\x00\x01not a safetensors file" * 100)
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:5000])
    elif damage == "no weights":
        weights.unlink()
    else:
        for f in path.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
                f.unlink()
    _expect_clear(kind, path)


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong shape"])
def test_provence_heads_damaged(folder, damage):
    import torch
    from safetensors.torch import save_file

    path = folder("provence")
    heads = path / "provence_heads.safetensors"
    if damage == "missing":
        heads.unlink()
    elif damage == "garbage":
        heads.write_bytes(b"garbage" * 50)
    else:
        save_file({"rank_head.weight": torch.zeros(1, 7), "rank_head.bias": torch.zeros(1),
                   "token_head.weight": torch.zeros(1, 7), "token_head.bias": torch.zeros(1)}, str(heads))
    _expect_clear("provence", path, match="could not load the Provence checkpoint")


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("where", ["config", "tokenizer_config"])
def test_remote_code_is_refused_and_never_run(kind, folder, tmp_path, where):
    path = folder(kind)
    marker = tmp_path / "PWNED"
    (path / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                                  "class Evil: pass\n")
    cfg_file = path / ("config.json" if where == "config" else "tokenizer_config.json")
    cfg = json.loads(cfg_file.read_text())
    cfg["auto_map"] = ({"AutoConfig": "evil.Evil", "AutoModel": "evil.Evil",
                        "AutoModelForSequenceClassification": "evil.Evil"} if where == "config"
                       else {"AutoTokenizer": ["evil.Evil", "evil.Evil"]})
    cfg_file.write_text(json.dumps(cfg))
    if where == "config":
        msg = _expect_clear(kind, path)
        assert "auto_map" in msg or "remote code" in msg, msg
    else:
        try:  # a tokenizer auto_map may be refused or ignored; either way its code must not run
            LOADERS[kind](path)
        except ValueError as e:
            assert str(path) in str(e)
    assert not marker.exists(), "checkpoint code was executed"


def test_shipped_aliases_explain_how_to_get_the_files(tmp_path, monkeypatch):
    import ragprune.models as models

    monkeypatch.setattr(models, "_shipped_folder", lambda name: None)  # as if ragprune-models were absent
    monkeypatch.setenv("RAGPRUNE_MODELS_DIR", str(tmp_path / "no-cache"))
    monkeypatch.setattr(models, "_packaged", lambda name: None)
    for kind, name in (("cross-encoder", "ragprune-reranker"), ("provence", "ragprune-provence")):
        with pytest.raises(ModelNotFoundError, match=r"pip install 'ragprune\[models\]'"):
            LOADERS[kind](name)
    pytest.importorskip("sentence_transformers")
    from ragprune.retrieve.dense import load_sentence_transformer

    with pytest.raises(ModelNotFoundError, match="fetch_models.py minilm"):
        load_sentence_transformer("minilm")
    with pytest.raises(TypeError, match="model must be a path or a name"):
        load_sentence_transformer(42)
