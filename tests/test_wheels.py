"""The built wheels work without the checkout: install them into a fresh virtualenv, run from
another folder, and rerank and prune with the default (shipped) models.

The fresh virtualenv gets ragprune and ragprune-models from the wheels only. Its third-party
dependencies (torch, transformers, ...) are borrowed from the test environment through a
``.pth`` line (so the test needs no network and no second multi-GB torch); the checkout itself
is never on its path: the interpreter runs isolated (``-I``) from a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib.metadata as md, importlib.util, json, sys
    import ragprune, ragprune_models
    from ragprune import CrossEncoderReranker, ProvencePruner
    docs = ["Paris is the capital and largest city of France.",
            "Scurvy is a disease caused by a lack of vitamin C. Sailors on long voyages suffered from it.",
            "The cat sat on the mat and purred."]
    q = "what causes scurvy"
    ranked = CrossEncoderReranker().rerank(q, docs, k=3)
    pruner = ProvencePruner()
    pruned = pruner.prune(q, [docs[1]])[0]
    print(json.dumps({
        "ragprune": ragprune.__file__, "ragprune_models": ragprune_models.__file__,
        "reranker_path": str(CrossEncoderReranker().path), "pruner_path": str(pruner.path),
        "top": ranked[0].document.text, "pruned": pruned.text,
        "requires": md.requires("ragprune"),
        "workbench_importable": importlib.util.find_spec("eval") is not None,
    }))
""")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
          str(ROOT), str(ROOT / "models")], cwd=dist)
    found = {w.name.split("-")[0]: w for w in dist.glob("*.whl")}
    assert set(found) == {"ragprune", "ragprune_models"}, found
    return found


def test_library_wheel_holds_only_the_package(wheels):
    names = zipfile.ZipFile(wheels["ragprune"]).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"ragprune", "ragprune-0.1.0.dist-info"}, tops  # no eval/, models/, tests/
    assert not any(n.endswith((".safetensors", "pruning_data.py")) for n in names)


def test_models_wheel_holds_every_checkpoint_with_its_card(wheels):
    names = set(zipfile.ZipFile(wheels["ragprune_models"]).namelist())
    for model in ("ragprune-reranker-minilm-l6", "ragprune-reranker-minilm-l2", "ragprune-provence-minilm-l6"):
        for f in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
            assert f"ragprune_models/{model}/{f}" in names
    assert "ragprune_models/ragprune-provence-minilm-l6/provence_heads.safetensors" in names


def test_fresh_virtualenv_reranks_and_prunes_outside_the_checkout(wheels, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
          str(wheels["ragprune"]), str(wheels["ragprune_models"])], cwd=tmp_path)
    site = Path(_run([str(py), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    (site / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", RAGPRUNE_MODELS_DIR=str(tmp_path / "empty-cache"), OMP_NUM_THREADS="1")
    res = json.loads(_run([str(py), "-I", "-c", SCRIPT], cwd=work, env=env).stdout.strip().splitlines()[-1])
    for key in ("ragprune", "ragprune_models", "reranker_path", "pruner_path"):
        assert res[key].startswith(str(venv)), (key, res[key])  # nothing from the checkout
    assert "ragprune-reranker-minilm-l6" in res["reranker_path"]
    assert "ragprune-provence-minilm-l6" in res["pruner_path"]
    assert res["top"].startswith("Scurvy")
    assert "lack of vitamin C" in res["pruned"]
    assert 'ragprune-models==0.1.0; extra == "models"' in res["requires"]
    assert not res["workbench_importable"]
    # the CLI entry point is installed; eval suites point to the checkout's workbench
    cli = subprocess.run([str(venv / "bin" / "ragprune"), "eval", "pruning"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode != 0 and "python -m eval.pruning" in cli.stderr + cli.stdout
