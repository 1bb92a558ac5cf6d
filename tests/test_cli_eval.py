"""`ragprune eval SUITE ...` runs the workbench's `python -m eval.SUITE ...` for every suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragprune import cli

ROOT = Path(__file__).resolve().parents[1]
NOT_SUITES = {"__init__", "common", "pruning_data"}  # the workbench's shared modules


def test_every_eval_script_is_a_suite():
    scripts = {p.stem for p in (ROOT / "eval").glob("*.py")} - NOT_SUITES
    assert set(cli.EVAL_SUITES) == scripts


@pytest.mark.parametrize("suite", cli.EVAL_SUITES)
def test_suite_help_is_the_scripts_own(suite, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", suite, "--help"])
    assert e.value.code == 0
    assert f"python -m eval.{suite}" in capsys.readouterr().out


def test_eval_runs_the_same_code_as_python_m(tmp_path, capsys):
    data = tmp_path / "tiny"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": i, "text": t}) for i, t in
                                                 [("d1", "scurvy comes from a lack of vitamin C"), ("d2", "Paris")]))
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what causes scurvy"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    out = tmp_path / "r.json"
    assert cli.main(["eval", "beir", "--data", str(data), "--limit", "1", "--json", str(out)]) == 0
    from eval.beir import main

    out2 = tmp_path / "r2.json"
    assert main(["--data", str(data), "--max-queries", "1", "--json", str(out2)]) == 0
    a, b = json.loads(out.read_text()), json.loads(out2.read_text())
    assert a["metrics"] == b["metrics"] and a["settings"] == b["settings"] and a["num_queries"] == 1
    assert cli.main(["eval", "beir", "--data", str(tmp_path / "missing")]) == 2  # the script's own exit code
    assert "is not a folder" in capsys.readouterr().err


def test_without_a_checkout_the_error_names_python_m(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_workbench_root", lambda: None)
    assert cli.main(["eval", "pruning_misses", "--limit", "3"]) == cli.EXIT_FAIL
    err = capsys.readouterr().err
    assert "python -m eval.pruning_misses" in err and "source checkout" in err


def test_unknown_suite_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "nope"])
    assert e.value.code == 2 and "lexical_sweep" in capsys.readouterr().err
