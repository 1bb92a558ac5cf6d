"""backend="onnx": same scores as torch (fp32), a cached export keyed by the weights, atomic files."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from ragprune import CrossEncoderReranker, Document, ProvencePruner  # noqa: E402
from ragprune._runtime import checkpoint_digest, onnx_dir  # noqa: E402

from .test_cross_encoder import make_tiny_cross_encoder  # noqa: E402

DOCS = [Document(id="a", title="Scurvy", text="Scurvy is caused by a lack of vitamin C. Sailors got it."),
        Document(id="b", text="Cats sleep most of the day. They purr."),
        Document(id="c", text="Paris is the capital of France. " * 40)]  # longer than max_length


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGPRUNE_ONNX_DIR", str(tmp_path / "onnx"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny")


@pytest.fixture(scope="module")
def tiny_provence(tmp_path_factory):
    from ragprune.prune.provence import init_provence, save_provence

    root = tmp_path_factory.mktemp("prov")
    tok, model = init_provence(make_tiny_cross_encoder(root / "ce", seed=3))
    return save_provence(model, tok, root / "provence")


def test_cross_encoder_onnx_matches_torch(tiny):
    q = ["what causes scurvy"] * 3
    ref = CrossEncoderReranker(tiny, max_length=64).score(q, DOCS)
    onnx = CrossEncoderReranker(tiny, max_length=64, backend="onnx", batch_size=2)
    assert onnx.model is None and "backend='onnx'" in repr(onnx)
    assert onnx.score(q, DOCS) == pytest.approx(ref, abs=1e-4)
    files = list(onnx_dir().glob("tiny-*/model.onnx"))
    assert len(files) == 1 and not list(onnx_dir().rglob("*.tmp"))
    # the int8 export sits beside the fp32 one and ranks like it on a clear case
    q8 = CrossEncoderReranker(tiny, max_length=64, backend="onnx", quantize="int8")
    assert (files[0].parent / "model.int8.onnx").is_file()
    assert q8.score(q, DOCS) == pytest.approx(ref, abs=0.2)


def test_two_label_checkpoint_on_onnx(tmp_path):
    path = make_tiny_cross_encoder(tmp_path / "two", num_labels=2, seed=5)
    ref = CrossEncoderReranker(path).score(["q", "q"], DOCS[:2])
    assert CrossEncoderReranker(path, backend="onnx").score(["q", "q"], DOCS[:2]) == pytest.approx(ref, abs=1e-4)


def test_export_is_cached_and_keyed_by_the_weights(tmp_path):
    path = make_tiny_cross_encoder(tmp_path / "m", seed=1)
    CrossEncoderReranker(path, backend="onnx")
    first = sorted(onnx_dir().glob("m-*"))
    mtime = (first[0] / "model.onnx").stat().st_mtime_ns
    CrossEncoderReranker(path, backend="onnx")  # reused, not exported again
    assert sorted(onnx_dir().glob("m-*")) == first and (first[0] / "model.onnx").stat().st_mtime_ns == mtime
    digest = checkpoint_digest(path, "cross-encoder")
    make_tiny_cross_encoder(path, seed=2)  # new weights in the same folder: a new export
    assert checkpoint_digest(path, "cross-encoder") != digest
    ref = CrossEncoderReranker(path).score(["q"], DOCS[:1])
    assert CrossEncoderReranker(path, backend="onnx").score(["q"], DOCS[:1]) == pytest.approx(ref, abs=1e-4)
    assert len(list(onnx_dir().glob("m-*"))) == 2


def test_corrupt_cached_export_names_the_folder(tmp_path):
    path = make_tiny_cross_encoder(tmp_path / "bad", seed=4)
    CrossEncoderReranker(path, backend="onnx")
    (file,) = onnx_dir().glob("bad-*/model.onnx")
    file.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="delete .*bad-"):
        CrossEncoderReranker(path, backend="onnx")


def test_bad_backend_options(tiny):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        CrossEncoderReranker(tiny, backend="tensorrt")
    with pytest.raises(ValueError, match="backend='onnx' runs on CPU"):
        CrossEncoderReranker(tiny, backend="onnx", device="cuda")


def test_provence_onnx_matches_torch(tiny_provence):
    kw = dict(threshold=0.5, max_length=64, stride=8, batch_size=2)
    ref = ProvencePruner(tiny_provence, **kw)
    onnx = ProvencePruner(tiny_provence, backend="onnx", **kw)
    a, b = ref.prune("what causes scurvy", DOCS), onnx.prune("what causes scurvy", DOCS)
    for x, y in zip(a, b):  # several windows for the long document: the window merge is shared
        np.testing.assert_allclose(y.sentence_scores, x.sentence_scores, atol=1e-5)
        assert y.text == x.text
    assert onnx.score(["q"] * 3, DOCS) == pytest.approx(ref.score(["q"] * 3, DOCS), abs=1e-4)


def test_serve_loads_named_models_on_the_onnx_backend(tiny, tiny_provence):
    pytest.importorskip("fastapi")
    from ragprune.cli import build_parser
    from ragprune.serve.app import load_pruner, load_reranker

    args = build_parser().parse_args(["serve", "--backend", "onnx", "--quantize", "int8"])
    assert (args.backend, args.quantize) == ("onnx", "int8")
    ce = load_reranker(str(tiny), backend="onnx", quantize="int8")
    assert (ce.backend, ce.quantize) == ("onnx", "int8")
    assert load_pruner(str(tiny_provence), backend="onnx").backend == "onnx"
