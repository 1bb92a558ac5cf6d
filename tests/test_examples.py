"""Each script in examples/ runs as a user would run it: a fresh process, another working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, SHARED_DATA

EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_every_example_is_tested():
    tested = {"quickstart.py", "html_pruning.py", "pipeline_scifact.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_html_pruning(tmp_path):
    pytest.importorskip("lxml")
    out = run_example("html_pruning.py", cwd=tmp_path)
    kept = int(re.search(r"-> (\d+) tokens kept \(budget 80", out).group(1))
    assert 0 < kept <= 80
    text = out.split("--- text ---")[1].split("--- html ---")[0]
    assert "began in 1996" in text                  # the answer block survives
    assert "Ocean's Eleven" not in text             # an off-topic block does not
    for junk in ("trackVisitor", "Subscribe", "Log in", "All rights reserved"):
        assert junk not in out                      # scripts, forms, navigation, footer dropped
    assert out.split("--- html ---")[1].strip().startswith("<body>")


@pytest.mark.slow
def test_quickstart(tmp_path):
    pytest.importorskip("transformers")
    out = run_example("quickstart.py", cwd=tmp_path)
    bm25 = re.search(r"^BM25: +(.*)$", out, re.M).group(1)
    reranked = re.search(r"^reranked: +(.*)$", out, re.M).group(1)
    assert "eiffel" not in bm25 and "eiffel" not in reranked   # no query term: never a candidate
    assert reranked.startswith("[('scurvy'") or reranked.startswith("[('vitc'")
    assert reranked.count("('") == 3
    pruned = re.findall(r"^\[(\w+)\] kept sentences \[([\d, ]*)\] of (\d+), (\d+)% of tokens removed: '(.*)'$", out, re.M)
    assert len(pruned) == 3
    by_id = {doc: (kept, int(removed), text) for doc, kept, _, removed, text in pruned}
    kept, removed, text = by_id["scurvy"]
    assert "lack of vitamin C" in text              # the cause is kept ...
    assert 0 < removed < 100                        # ... and something was pruned away
    assert "Eiffel" not in out


@pytest.mark.slow
def test_pipeline_scifact(tmp_path):
    pytest.importorskip("transformers")
    data = SHARED_DATA / "beir_scifact"
    if not (data / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {data} (set RAGPRUNE_SHARED_DATA)")
    out = run_example("pipeline_scifact.py", "--data", str(data), "--queries", "2", "--max-tokens", "300", cwd=tmp_path)
    assert "indexed 5183 abstracts" in out
    claims = re.findall(r"^claim (\S+): ", out, re.M)
    assert claims == ["1", "3"]                     # the first two test claims with judgements
    contexts = re.findall(r"-> (\d+) in the context \((\d+)% removed\); relevant abstracts in the context: (.*)$", out, re.M)
    assert len(contexts) == 2
    for tokens, removed, _ in contexts:
        assert 0 < int(tokens) <= 300 and 0 < int(removed) < 100
    assert "'14717500'" in contexts[1][2]           # claim 3's judged-relevant abstract reaches the context
    assert "[14717500] Rare Variants Create Synthetic Genome-Wide Associations" in out


def test_pipeline_scifact_without_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "pipeline_scifact.py"), "--data", str(tmp_path / "nowhere")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pass --data DIR" in proc.stderr
