import json
import subprocess
import sys

import pytest

from ragprune.cli import main
from ragprune.text import count_tokens


@pytest.fixture()
def corpus(tmp_path, toy_docs):
    p = tmp_path / "corpus.jsonl"
    p.write_text("\n".join(json.dumps(d) for d in toy_docs) + "\n")
    return p


def test_index_and_search(corpus, tmp_path, capsys):
    assert main(["index", str(corpus), str(tmp_path / "idx"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "what causes scurvy", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == "scurvy" and len(hits) == 2


def test_exit_codes(tmp_path, capsys, corpus):
    assert main(["search", str(tmp_path / "none"), "q"]) == 2
    assert "no index folder" in capsys.readouterr().err
    main(["index", str(corpus), str(tmp_path / "idx"), "--quiet"])
    assert main(["search", str(tmp_path / "idx"), "   "]) == 2
    assert "query is empty" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "idx"), "q", "-k", "0"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert main(["prune", "q", str(tmp_path)]) == 2  # a folder, not a file
    (tmp_path / "latin1.jsonl").write_bytes('{"_id": "a", "text": "Clásica"}\n'.encode("latin-1"))
    assert main(["index", str(tmp_path / "latin1.jsonl"), str(tmp_path / "idx2"), "--quiet"]) == 2
    assert "latin1.jsonl is not UTF-8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "q", "-", "--html", "--text"])


def test_prune_text_reports_what_the_budget_kept(tmp_path, capsys):
    from ragprune.text import split_sentences

    text = ("Scurvy is caused by a lack of vitamin C in the diet. Sailors on long voyages had no fresh fruit. "
            "Lemons and limes prevent it. The ship's cat slept all day on the deck.")
    sentences = split_sentences(text)
    (tmp_path / "t.txt").write_text(text)
    assert main(["prune", "what causes scurvy", str(tmp_path / "t.txt"), "--text", "--threshold", "0",
                 "--max-tokens", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] and count_tokens(out["text"]) <= 12 and not out["truncated"]
    assert 0 < len(out["kept"]) < len(sentences) and out["compression"] > 0.5
    assert out["text"] == " ".join(sentences[j] for j in out["kept"])


def test_prune_text_is_the_librarys_budget_with_backfill(tmp_path, capsys):
    """The text branch is ProvencePruner + fit_context (the Pipeline's budget step): a strict
    threshold keeps nothing, and the budget is backfilled exactly as the library does."""
    from ragprune import Document, ProvencePruner
    from ragprune.pipeline import fit_context

    text = ("Scurvy is caused by a lack of vitamin C in the diet. Sailors on long voyages had no fresh fruit. "
            "Lemons and limes prevent it. The ship's cat slept all day on the deck.")
    (tmp_path / "t.txt").write_text(text)
    query = "what causes scurvy"
    pruner = ProvencePruner(threshold=1.0)
    pruned = pruner.prune(query, [Document(id="input", text=text)])
    assert pruned[0].kept == ()  # the pruner alone keeps nothing
    for budget in (15, 25):
        lib = fit_context(query, pruned, budget, pruner=pruner, headers=False)
        assert main(["prune", query, str(tmp_path / "t.txt"), "--text", "--threshold", "1",
                     "--max-tokens", str(budget), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["text"] == lib.text != "" and out["tokens"] == lib.tokens <= budget
        assert out["kept"] == list(lib.documents[0].kept) and out["backfilled"] == len(out["kept"]) > 0
        assert out["compression"] == pytest.approx(lib.stats["compression"])
    assert main(["prune", query, str(tmp_path / "t.txt"), "--text", "--threshold", "1", "--max-tokens", "25",
                 "--json", "--no-backfill"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == "" and out["kept"] == [] and out["backfilled"] == 0


def test_prune_html_from_stdin_as_a_script(tmp_path):
    html = "<html><body><h1>Bellagio</h1><p>It was built in 1998.</p><p>Other things here.</p></body></html>"
    r = subprocess.run([sys.executable, "-m", "ragprune", "prune", "When was it built?", "-", "--json",
                        "--max-tokens", "30"], input=html.encode(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["kind"] == "html" and "1998" in out["text"]


def test_eval_delegates(tmp_path, capsys):
    assert main(["eval", "beir", "--data", str(tmp_path / "missing")]) == 2
