"""eval/common.py: the options every eval script shares and the guard on results files."""

from __future__ import annotations

import argparse
import json

import pytest

from eval import common
from ragprune import cli


def _args(**kw):
    base = {"json": None, "plot": None, "force": False, "limit": 10, "llm": "m", "llm_cache": None, "threads": 2}
    return argparse.Namespace(**{**base, **kw})


def test_settings_leave_out_outputs_caches_and_threads_and_read_old_names():
    s = common.settings_of(_args(json="x.json", llm_cache="c.jsonl"))
    assert s == {"limit": 10, "llm": "m"}
    assert common.settings_of(_args(), keep=("threads",))["threads"] == 2
    # a results file of an older script version: --questions / --reader / --cache
    assert common._differences({"questions": 10, "reader": "m", "cache": "old.jsonl"}, s) == []
    assert common._differences({"limit": 10, "llm": "m"}, {**s, "llm_model": None}) == []  # a new, unset option


def test_check_outputs(tmp_path, capsys):
    out = tmp_path / "r.json"
    common.check_outputs(_args(json=out))  # no file yet
    common.save_results(_args(json=out), {"metrics": 1})
    assert json.loads(out.read_text()) == {"metrics": 1, "settings": {"limit": 10, "llm": "m"}}
    assert not list(tmp_path.glob("*.tmp"))
    common.check_outputs(_args(json=out, threads=1))  # the same run (threads do not change results)
    with pytest.raises(ValueError, match=r"different run \(limit: 10 -> 5\).*--force"):
        common.check_outputs(_args(json=out, limit=5))
    common.check_outputs(_args(json=out, limit=5, force=True))
    out.write_text("not json")
    with pytest.raises(ValueError, match="not a results file"):
        common.check_outputs(_args(json=out))
    out.write_text(json.dumps({"metrics": 1}))  # written before settings were recorded
    common.check_outputs(_args(json=out, limit=5))
    assert "records no settings" in capsys.readouterr().err
    png = tmp_path / "p.png"
    png.write_bytes(b"x")
    with pytest.raises(ValueError, match="--force"):
        common.check_outputs(_args(plot=png))
    common.check_outputs(_args(plot=png, json=tmp_path / "new.json"))  # --json decides


def test_limit_must_be_positive():
    p = argparse.ArgumentParser()
    common.add_limit_arg(p, "--questions")
    assert p.parse_args(["--questions", "3"]).limit == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--limit", "0"])


def _help(argv, capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", *argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("suite", [s for s in cli.EVAL_SUITES if s != "speed"] + ["speed rerank"])
def test_every_script_spells_the_shared_options_the_same(suite, capsys):
    text = _help(suite.split(), capsys)
    assert "--json FILE" in text and "--force, --overwrite" in text
    for old in ("--questions", "--max-queries", "--pairs", "--queries"):
        if old in text:
            assert f"--limit N, {old} N" in text
    if "--llm-backend" in text:
        assert "--llm-cache" in text and "--llm-threads" in text and "--llm-model" in text
    assert "--data DATA" in text or "--shared SHARED" in text
