"""eval.bright: the BRIGHT benchmark in its official Hugging Face layout (tiny fixtures + real examples)."""

import csv
import gzip
import json
import math
import sys

import pytest

from eval.bright import (
    DOMAINS,
    BrightQuery,
    load_examples,
    main,
    retrieve_excluding,
    split_files,
)
from ragprune.rerank.llm import CallableLLM, LLMUnavailableError

pytest.importorskip("pytrec_eval")

R2, R6 = 1 / math.log2(3), 1 / math.log2(7)  # nDCG@10 of a single gold document at rank 2 / rank 6


def _write(folder, domain, rows, fmt):
    """One split file in the hub's layout: <domain>-00000-of-00001.parquet, <domain>.jsonl or .jsonl.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), folder / f"{domain}-00000-of-00001.parquet")
        return
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "jsonl.gz":
        with gzip.open(folder / f"{domain}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        (folder / f"{domain}.jsonl").write_text(text, encoding="utf-8")


def _ex(qid, query, gold, excluded=("N/A",), gold_long=("N/A",), reasoning=""):
    return {"query": query, "reasoning": reasoning, "id": qid, "excluded_ids": list(excluded),
            "gold_ids_long": list(gold_long), "gold_ids": list(gold), "gold_answer": "..."}


BIOLOGY_DOCS = [  # ex1 outranks the gold g1 for q1 unless it is excluded; g2 is 6th in corpus order
    {"id": "ex1", "content": "Chlorophyll and photosynthesis: plants use chlorophyll for photosynthesis."},
    {"id": "g1", "content": "Leaves of plants contain chlorophyll, a green pigment."},
    {"id": "n1", "content": "Volcanoes erupt lava and magma."},
    {"id": "n2", "content": "Bees pollinate flowers."},
    {"id": "n3", "content": "Rust is an iron oxide."},
    {"id": "g2", "content": "Ocean tides are caused by the gravity of the Moon."},
]
BIOLOGY_EXAMPLES = [
    _ex("q1", "How do plants use chlorophyll for photosynthesis?", ["g1"], excluded=["ex1"], gold_long=["L1"]),
    _ex("q2", "Why does the sea rise and fall twice a day?", ["g2"], gold_long=["L2"],
        reasoning="The document explains ocean tides and the gravity of the Moon."),
    _ex("q3", "A question without judgements", ["N/A"]),
    _ex("q1", "How do plants use chlorophyll for photosynthesis?", ["g1"], excluded=["ex1"], gold_long=["L1"]),
]
PONY_DOCS = [
    {"id": "Pony/p1.txt", "content": "Pony actors send asynchronous messages to each other."},
    {"id": "Pony/p2.txt", "content": "Reference capabilities: iso, val and ref control aliasing."},
    {"id": "Pony/p3.txt", "content": "Classes have fields and constructors."},
]
PONY_EXAMPLES = [
    _ex("0", "How do I send a message to an actor?", ["Pony/p1.txt"], excluded=[]),
    _ex("1", "Which reference capability is immutable, val or iso?", ["Pony/p2.txt"], excluded=[]),
]
LONG_BIOLOGY_DOCS = [
    {"id": "L1", "content": "Photosynthesis: plants use chlorophyll to turn light into sugar. " * 5},
    {"id": "L2", "content": "Tides. " + "The Moon pulls the oceans. " * 5},
    {"id": "L3", "content": "Iron oxide, rust, forms in moist air. " * 5},
]


@pytest.fixture()
def bright(tmp_path):
    """A BRIGHT snapshot: biology (jsonl), pony (jsonl.gz), leetcode without documents, robotics without examples."""
    root = tmp_path / "BRIGHT"
    _write(root / "examples", "biology", BIOLOGY_EXAMPLES, "jsonl")
    _write(root / "documents", "biology", BIOLOGY_DOCS, "jsonl")
    _write(root / "long_documents", "biology", LONG_BIOLOGY_DOCS, "jsonl")
    _write(root / "examples", "pony", PONY_EXAMPLES, "jsonl.gz")
    _write(root / "documents", "pony", PONY_DOCS, "jsonl.gz")
    _write(root / "long_documents", "pony", PONY_DOCS, "jsonl.gz")  # every gold_ids_long is N/A
    _write(root / "examples", "leetcode", [_ex("0", "two sum", ["leetcode/leetcode_1.txt"])], "jsonl")
    _write(root / "documents", "robotics", [{"id": "r1", "content": "ROS nodes"}], "jsonl")
    return root


def _run(root, tmp_path, *extra):
    out = tmp_path / "res.json"
    assert main(["--data", str(root), "--json", str(out), "--force", *extra]) == 0  # one file, many runs
    return json.loads(out.read_text())


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_excluded_ids_are_removed_before_scoring(tmp_path, fmt):
    root = tmp_path / f"b_{fmt}"
    _write(root / "examples", "biology", BIOLOGY_EXAMPLES, fmt)
    _write(root / "documents", "biology", BIOLOGY_DOCS, fmt)
    if fmt == "parquet":
        assert split_files(root, "documents", "biology")[0].name == "biology-00000-of-00001.parquet"
    res = _run(root, tmp_path, "--domain", "biology")
    kept = _run(root, tmp_path, "--domain", "biology", "--keep-excluded-ids")
    bio = res["domains"]["biology"]
    # q1: the excluded ex1 would be first; removed, the gold g1 moves to rank 1. q2: gold at rank 6.
    assert bio["metrics"]["ndcg@10"] == pytest.approx(round((1 + R6) / 2, 4))
    assert kept["domains"]["biology"]["metrics"]["ndcg@10"] == pytest.approx(round((R2 + R6) / 2, 4))
    assert bio["num_queries"] == 2 and bio["num_examples"] == 3 and bio["num_without_gold"] == 1
    assert bio["num_documents"] == 6
    assert res["excluded_ids"] == "removed" and kept["excluded_ids"].startswith("kept")


def test_exclusion_does_not_shorten_the_ranking(bright, tmp_path):
    # --top-k 1: q1 is retrieved 2 deep, ex1 dropped, g1 kept -> recall 1; q2's gold is at rank 6 -> 0.
    res = _run(bright, tmp_path, "--domain", "biology", "--top-k", "1")
    assert res["domains"]["biology"]["metrics"]["recall@100"] == pytest.approx(0.5)
    assert res["domains"]["biology"]["metrics"]["ndcg@10"] == pytest.approx(0.5)


def test_retrieve_excluding_bm25_and_hybrid():
    from ragprune import Document
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.retrieve.hybrid import HybridRetriever

    docs = [Document(id=d["id"], text=d["content"]) for d in BIOLOGY_DOCS]
    bm25 = BM25Retriever.from_documents(docs)
    q = ["plants chlorophyll photosynthesis"]
    assert [h.document.id for h in retrieve_excluding(bm25, q, [frozenset()], 2)[0]] == ["ex1", "g1"]
    hits = retrieve_excluding(bm25, q, [frozenset({"ex1", "not-in-corpus"})], 2)[0]
    assert [h.document.id for h in hits] == ["g1", "n1"]  # still 2 results
    hybrid = HybridRetriever([bm25, BM25Retriever.from_documents(docs, method="okapi")], depth=3)
    fused = retrieve_excluding(hybrid, q, [frozenset({"ex1"})], 4)[0]
    assert len(fused) == 4 and fused[0].document.id == "g1" and "ex1" not in {h.document.id for h in fused}


def test_all_domains_average_and_skips(bright, tmp_path, capsys):
    res = _run(bright, tmp_path, "--domain", "all")
    assert list(res["domains"]) == ["biology", "pony"]
    assert res["domains"]["pony"]["metrics"]["ndcg@10"] == pytest.approx(1.0)
    bio = res["domains"]["biology"]["metrics"]["ndcg@10"]
    assert res["average"]["ndcg@10"] == pytest.approx(round((bio + 1.0) / 2, 4))
    assert res["num_domains"] == 2 and res["num_queries"] == 4
    assert set(res["skipped"]) == set(DOMAINS) - {"biology", "pony"}
    assert res["skipped"]["leetcode"] == f"no documents in {bright / 'documents'}"
    assert res["skipped"]["robotics"] == f"no examples in {bright / 'examples'}"
    assert res["paper_bm25_ndcg@10_same_domains"] == pytest.approx((0.189 + 0.079) / 2)
    assert set(res) >= {"pipeline", "average", "num_queries", "seconds", "domains", "skipped"}
    out = capsys.readouterr().out
    assert "| biology | 2 | 6 |" in out and "| **average** (2 of 12 domains) | 4 |" in out
    assert f"skipped (no documents in {bright / 'documents'}): earth_science, economics, psychology, " in out
    assert f"skipped (no examples in {bright / 'examples'}): robotics" in out


def test_several_domains_and_max_queries(bright, tmp_path):
    res = _run(bright, tmp_path, "--domain", "pony", "biology", "--max-queries", "1")
    assert list(res["domains"]) == ["pony", "biology"] and res["skipped"] == {}
    assert res["domains"]["biology"]["num_queries"] == 1
    assert res["domains"]["biology"]["metrics"]["ndcg@10"] == pytest.approx(1.0)  # q1 only


def test_long_documents_switch(bright, tmp_path):
    res = _run(bright, tmp_path, "--domain", "all", "--long-documents")
    assert res["documents"] == "long_documents" and res["relevance"] == "gold_ids_long"
    bio = res["domains"]["biology"]
    assert bio["num_documents"] == 3 and bio["num_queries"] == 2
    # q1 -> L1 at rank 1; q2 has no term in common with any page: pages in corpus order, L2 second
    assert bio["metrics"]["ndcg@10"] == pytest.approx(round((1 + R2) / 2, 4))
    assert res["skipped"]["pony"] == "no query has gold_ids_long"
    assert list(res["domains"]) == ["biology"]


def test_jsonl_gz_and_real_style_ids(bright):
    qs = load_examples(split_files(bright, "examples", "pony"))
    assert [q.id for q in qs] == ["0", "1"] and qs[0].gold == ("Pony/p1.txt",) and qs[0].excluded == frozenset()


def test_repeated_ids_na_and_gold_overlap(tmp_path):
    rows = [_ex("a", "x", ["d1", "d1", "N/A"], excluded=["N/A"]), _ex("a", "x", ["d1", "d1", "N/A"], excluded=["N/A"]),
            _ex("a", "another query with the same id", ["d2"], excluded=["d2", "d3"])]
    _write(tmp_path / "examples", "biology", rows, "jsonl")
    qs = load_examples(split_files(tmp_path, "examples", "biology"))
    assert qs == [BrightQuery("a", "x", "", ("d1",), frozenset()),
                  BrightQuery("a#2", "another query with the same id", "", ("d2",), frozenset({"d3"}))]
    _write(tmp_path / "bad" / "examples", "biology", [{"id": "1", "gold_ids": []}], "jsonl")
    with pytest.raises(ValueError, match="row 1 has no 'query'"):
        load_examples(split_files(tmp_path / "bad", "examples", "biology"))


def test_gold_reasoning_is_appended(bright, tmp_path):
    res = _run(bright, tmp_path, "--domain", "biology", "--use-gold-reasoning")
    assert res["domains"]["biology"]["metrics"]["ndcg@10"] == pytest.approx(1.0)  # q2 now finds g2
    assert res["pipeline"].startswith("query+gold_reasoning | bm25")


def _fake_llm(calls):
    def fn(prompt):
        calls.append(prompt)
        return "Ocean tides: the gravity of the Moon." if "sea rise" in prompt else ""
    return CallableLLM(fn, name="fake")


@pytest.mark.parametrize("flag", ["--llm-cache", "--expansion-cache"])  # --expansion-cache: the older name
def test_llm_query_expansion_with_cache(bright, tmp_path, monkeypatch, flag):
    calls, seen = [], []

    def fake_load_llm(spec, backend="auto", **kwargs):
        seen.append((spec, backend, kwargs))
        return _fake_llm(calls)

    monkeypatch.setattr("ragprune.rerank.llm.load_llm", fake_load_llm)
    cache = tmp_path / "exp.jsonl"
    args = ["--domain", "biology", "--expand-query-with-llm", "http://localhost:9/v1", "--llm-model", "m",
            flag, str(cache)]
    res = _run(bright, tmp_path, *args)
    assert seen == [("http://localhost:9/v1", "auto", {"model": "m"})]
    assert res["domains"]["biology"]["metrics"]["ndcg@10"] == pytest.approx(1.0)  # (1 + 1) / 2
    assert res["llm_calls"] == 2 and len(calls) == 2
    assert "Identify the essential problem" in calls[0] and "\n" not in calls[0].split("\n\n")[0]
    assert "llm_reasoning(CallableLLM('fake'))" in res["pipeline"]
    assert len(cache.read_text().splitlines()) == 2
    again = _run(bright, tmp_path, *args)  # resumed from the cache: no new LLM call
    assert again["llm_calls"] == 0 and len(calls) == 2 and again["domains"] == {
        "biology": {**res["domains"]["biology"], "seconds": again["domains"]["biology"]["seconds"]}}


def test_llm_expansion_replace_mode_and_failure(bright, tmp_path, monkeypatch, capsys):
    import eval.bright as eb

    calls = []
    args = eb.parse_args(["--data", str(bright), "--domain", "biology", "--expansion-mode", "replace"])
    res = eb.run(args, llm=_fake_llm(calls))
    # q1's LLM answer is empty -> the original query is kept; q2 is replaced by the reasoning
    assert res["domains"]["biology"]["metrics"]["ndcg@10"] == pytest.approx(1.0)
    assert res["pipeline"].startswith("llm_reasoning(")

    def down(prompt):
        raise LLMUnavailableError("server at http://localhost:9 is down")

    monkeypatch.setattr("ragprune.rerank.llm.load_llm", lambda spec, **kw: CallableLLM(down))
    assert main(["--data", str(bright), "--domain", "biology", "--expand-query-with-llm", "x"]) == 2
    assert "is down" in capsys.readouterr().err


def test_bad_inputs(bright, tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--domain", "biology"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(bright), "--domain", "chemistry"])
    assert e.value.code == 2 and "invalid choice: 'chemistry'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(bright), "--use-gold-reasoning", "--expand-query-with-llm", "x"])
    capsys.readouterr()
    assert main(["--data", str(bright), "--domain", "leetcode"]) == 2
    err = capsys.readouterr().err
    assert "no BRIGHT documents for leetcode" in err and "documents/leetcode-00000-of-00001.parquet" in err
    assert main(["--data", str(tmp_path), "--domain", "biology"]) == 2  # no examples/ folder
    assert "has no examples/ folder" in capsys.readouterr().err


def test_parquet_without_pyarrow_names_the_fix(tmp_path, monkeypatch, capsys):
    _write(tmp_path / "examples", "biology", BIOLOGY_EXAMPLES, "jsonl")
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "biology-00000-of-00001.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["--data", str(tmp_path), "--domain", "biology"]) == 2
    assert "pip install pyarrow" in capsys.readouterr().err


# ---------------------------------------------------------------- the real BRIGHT examples (no documents)

REAL_COUNTS = {"biology": 103, "earth_science": 116, "economics": 103, "psychology": 101, "robotics": 101,
               "stackoverflow": 117, "sustainable_living": 108, "leetcode": 142, "pony": 112, "aops": 111,
               "theoremqa_questions": 194, "theoremqa_theorems": 76}


@pytest.fixture(scope="module")
def real_bright(shared_data):
    folder = shared_data / "bright"
    if not (folder / "examples").is_dir():
        pytest.skip(f"no BRIGHT examples at {folder}")
    return folder


def _qrels(path):
    out = {}
    with open(path, encoding="utf-8", newline="") as f:
        for qid, _, doc, grade in csv.reader(f, delimiter="\t"):
            if int(grade) > 0:
                out.setdefault(qid, set()).add(doc)
    return out


@pytest.mark.parametrize("domain", DOMAINS)
def test_real_examples_parse_and_match_qrels(real_bright, domain):
    qs = load_examples(split_files(real_bright, "examples", domain))
    assert len(qs) == REAL_COUNTS[domain] and all(q.gold for q in qs)
    assert {q.id: set(q.gold) for q in qs} == _qrels(real_bright / "qrels" / f"{domain}.tsv")
    assert all("N/A" not in q.excluded and not (q.excluded & set(q.gold)) for q in qs)
    if domain == "biology":
        assert all(q.excluded == frozenset() and q.reasoning for q in qs)
    if domain == "aops":  # the same problem and its near-duplicates are excluded
        assert max(len(q.excluded) for q in qs) > 10_000


def test_real_long_gold_for_stackexchange_only(real_bright):
    assert all(q.gold for q in load_examples(split_files(real_bright, "examples", "pony"), long_documents=True))
    assert not any(q.gold for q in load_examples(split_files(real_bright, "examples", "leetcode"), long_documents=True))


def test_real_folder_without_documents_exits_2(real_bright, capsys):
    assert main(["--data", str(real_bright), "--domain", "all"]) == 2
    err = capsys.readouterr().err
    assert "no BRIGHT documents" in err and "xlangai/BRIGHT" in err and "documents/<domain>-00000-of-00001.parquet" in err
