"""Property-based fuzzing of every public entry point.

What this protects: whatever a caller passes (arbitrary unicode including lone surrogates, NUL,
zero-width and combining characters, empty or whitespace-only strings, megabyte strings, or
values of the wrong type), each entry point either returns a *valid* result (the invariants
below) or raises a clear ``ValueError``/``TypeError`` naming the problem. Never an unrelated
``IndexError``/``KeyError``/``AttributeError``/``ZeroDivisionError``/``UnicodeError``, and never a
hang (every test runs under a timeout).

Covered: BM25Retriever (from_documents/retrieve/retrieve_many/save/load), HybridRetriever,
sentence_spans/split_sentences/count_tokens/Analyzer, fill_budget, parse_html/clean_html/
build_blocks/rebuild/HtmlPruner.prune, the baseline pruners, ProvencePruner and
CrossEncoderReranker (tiny random models), Pipeline.run, and the CLI.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ragprune import BM25Retriever, Document, HybridRetriever, IndexFormatError, Pipeline
from ragprune.budget import Budgeted, Unit, fill_budget
from ragprune.prune.baselines import BM25SentencePruner, KeepAllPruner, LeadPruner, RandomPruner
from ragprune.retrieve.bm25 import METHODS
from ragprune.text import Analyzer, count_tokens, sentence_spans, split_sentences
from ragprune.types import PrunedDocument, ScoredDocument

from .helpers import WORDS, call_or_clear_error, run_bounded

pytestmark = pytest.mark.timeout(120)

# CI-sized; RAGPRUNE_FUZZ_SCALE=20 (say) runs 20x more examples for a deeper local or nightly hunt.
SCALE = float(os.environ.get("RAGPRUNE_FUZZ_SCALE", "1"))
FAST = settings(max_examples=int(40 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = settings(max_examples=int(12 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

ODD = ["", " ", "\n", "\t", ".", "!?", "...", "\x00", "\u200b", "\u00a0", "\u2028", "😀", "İ", "ß", "ﬃ",
       "e\u0301", "\ud800", "\udfff", "\ufeff", "<p>", "&amp;", "日本語", "١٢٣", "Dr.", "\r\n"]
all_chars = st.characters(exclude_categories=())  # includes lone surrogates
texts = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=all_chars, max_size=60),
    st.lists(st.sampled_from(WORDS + ODD), max_size=40).map(" ".join),
    st.lists(st.sampled_from(WORDS + ODD), max_size=40).map("".join),
)
queries = st.one_of(texts, st.sampled_from(WORDS))
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=8),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 st.just(object()), st.just(b""), st.just(1j))


def is_blank(q: object) -> bool:
    return isinstance(q, str) and not q.strip()


def check_hits(hits: list[ScoredDocument], k: int, docs: list[Document]) -> None:
    assert len(hits) == min(k, len(docs))
    ids = [h.id for h in hits]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= {d.id for d in docs}
    scores = [h.score for h in hits]
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


def check_pruned(p: PrunedDocument, doc: Document) -> None:
    assert p.document == doc
    assert list(p.kept) == sorted(set(p.kept))
    assert all(0 <= i < len(p.sentences) for i in p.kept)
    assert all(s and s in doc.text for s in p.sentences)
    assert 0.0 <= p.compression <= 1.0
    assert math.isfinite(p.score)


# --------------------------------------------------------------------------- BM25


@FAST
@given(docs=st.lists(texts, max_size=6), query=queries, k=st.integers(-2, 12), method=st.sampled_from(METHODS))
def test_bm25_arbitrary_corpus_and_query(docs, query, k, method):
    bm25, err = call_or_clear_error(lambda: BM25Retriever.from_documents(docs, method=method))
    if err is not None:
        assert not docs and "corpus is empty" in str(err)
        return
    hits, err = call_or_clear_error(lambda: bm25.retrieve(query, k=k))
    if err is not None:
        assert is_blank(query) or k < 1, err
        return
    check_hits(hits, k, bm25.documents)
    assert bm25.retrieve_many([query, query], k=k) == [hits, hits]


@FAST
@given(query=junk, k=junk)
def test_bm25_wrong_types_are_clear_errors(query, k):
    bm25 = _toy_bm25()
    with pytest.raises(TypeError, match=r"BM25Retriever\.retrieve: query must be a str"):
        bm25.retrieve(query, k=3)
    with pytest.raises((TypeError, ValueError), match=r"BM25Retriever\.retrieve: k must be"):
        bm25.retrieve("alpha", k=k) if not (isinstance(k, int) and not isinstance(k, bool) and k > 0) else _raise()
    out, err = call_or_clear_error(lambda: bm25.retrieve_many(query, k=k))
    if err is None:  # junk that is a valid batch, e.g. [] with k=1
        assert out == []
    else:
        assert "BM25Retriever.retrieve_many" in str(err), err


def _raise():
    raise ValueError("BM25Retriever.retrieve: k must be valid (skipped: k was a valid int)")


@FAST
@given(corpus=st.one_of(junk, st.lists(junk, min_size=1, max_size=3)))
def test_bm25_wrong_corpus_types(corpus):
    bm25, err = call_or_clear_error(lambda: BM25Retriever.from_documents(corpus))
    if err is None:  # e.g. a list of dicts without "text": empty documents are fine
        assert len(bm25) == len(corpus)
    else:
        assert "from_documents" in str(err) or "Document." in str(err), err


def test_bm25_single_mapping_or_document_is_not_a_corpus():
    """A lone dict used to be iterated as a corpus of its keys ("_id", "text")."""
    for one in ({"_id": "a", "text": "a passage"}, Document(id="a", text="x")):
        with pytest.raises(TypeError, match="wrap it in a list"):
            BM25Retriever.from_documents(one)


def test_numpy_integers_and_floats_are_accepted_infinities_are_not():
    np = pytest.importorskip("numpy")
    bm25 = BM25Retriever.from_documents(["alpha beta", "gamma"], k1=np.float32(1.2), b=np.float64(0.5))
    assert len(bm25.retrieve("alpha", k=np.int64(2))) == 2
    with pytest.raises(ValueError, match="k1 must be finite"):
        BM25Retriever.from_documents(["a"], k1=float("inf"))
    with pytest.raises(ValueError, match="weight must be finite"):
        HybridRetriever([bm25, bm25], weights=[float("inf"), 1.0])
    with pytest.raises(TypeError, match="weights must be a list"):
        HybridRetriever([bm25, bm25], weights=5)


@settings(max_examples=int(15 * SCALE), deadline=None)
@given(docs=st.lists(texts, min_size=1, max_size=4, unique_by=lambda t: t), query=queries)
def test_bm25_save_load_round_trips_any_text(tmp_path_factory, docs, query):
    """Lone surrogates in documents used to make save() die with UnicodeEncodeError."""
    bm25 = BM25Retriever.from_documents([Document(id=t, text=t, title=t[:3]) for t in docs])
    path = tmp_path_factory.mktemp("rt") / "idx"
    bm25.save(path)
    loaded = BM25Retriever.load(path)
    assert loaded.documents == bm25.documents
    if not is_blank(query):
        assert loaded.retrieve(query, k=3) == bm25.retrieve(query, k=3)


_TOY: list = []


def _toy_bm25() -> BM25Retriever:
    if not _TOY:
        _TOY.append(BM25Retriever.from_documents(["alpha beta", "gamma delta", "alpha"]))
    return _TOY[0]


# --------------------------------------------------------------------------- hybrid


@FAST
@given(docs=st.lists(texts, min_size=1, max_size=6), query=queries, k=st.integers(1, 8),
       fusion=st.sampled_from(["rrf", "convex"]), w=st.floats(0, 1), depth=st.integers(1, 5))
def test_hybrid_arbitrary_input(docs, query, k, fusion, w, depth):
    a = BM25Retriever.from_documents(docs)
    b = BM25Retriever.from_documents(docs, method="robertson")  # negative scores on purpose
    h = HybridRetriever([a, b], fusion=fusion, weights=[w, 1.0], depth=depth)
    hits, err = call_or_clear_error(lambda: h.retrieve(query, k=k))
    if err is not None:
        assert is_blank(query)
        return
    check_hits(hits, k, a.documents)


@FAST
@given(bad=junk)
def test_hybrid_wrong_types(bad):
    bm25 = _toy_bm25()
    for kwargs in ({"retrievers": bad}, {"retrievers": [bm25, bad]}, {"retrievers": [bm25, bm25], "weights": bad},
                   {"retrievers": [bm25, bm25], "rrf_k": bad}, {"retrievers": [bm25, bm25], "fusion": bad},
                   {"retrievers": [bm25, bm25], "depth": bad}):
        h, err = call_or_clear_error(lambda kwargs=kwargs: HybridRetriever(**kwargs))
        if err is None:  # the junk happened to be valid (weights=None, rrf_k=3, ...): it must work
            check_hits(h.retrieve("alpha", k=2), 2, bm25.documents)
        else:
            assert "HybridRetriever" in str(err), err


# --------------------------------------------------------------------------- text utilities


@FAST
@given(text=texts)
def test_sentence_spans_invariants(text):
    spans = sentence_spans(text)
    prev = 0
    for s, e in spans:
        assert prev <= s < e <= len(text)
        assert text[s:e] == text[s:e].strip()  # no leading/trailing whitespace
        prev = e
    assert split_sentences(text) == [text[s:e] for s, e in spans]
    assert isinstance(count_tokens(text), int) and count_tokens(text) >= 0
    assert all(isinstance(t, str) and t for t in Analyzer()(text))


@FAST
@given(bad=junk)
def test_text_utilities_reject_wrong_types(bad):
    with pytest.raises(TypeError, match="sentence_spans: text must be a str"):
        sentence_spans(bad)
    with pytest.raises(TypeError, match="count_tokens: text must be a str"):
        count_tokens(bad)


units_st = st.lists(st.builds(Unit, group=st.integers(0, 3), position=st.integers(0, 5), text=texts,
                              score=st.floats(allow_nan=True, allow_infinity=True)), max_size=8)


@FAST
@given(units=units_st, max_tokens=st.integers(1, 40),
       group_cost=st.one_of(st.none(), st.dictionaries(st.integers(0, 3), st.integers(0, 50), max_size=4)))
def test_fill_budget_never_exceeds_the_budget(units, max_tokens, group_cost):
    out = fill_budget(units, max_tokens, group_cost=group_cost)
    assert isinstance(out, Budgeted)
    cost = group_cost or {}
    used = sum(count_tokens(u.text) for u in out.units) + sum(cost.get(g, 0) for g in {u.group for u in out.units})
    assert out.tokens == used <= max_tokens
    groups = [u.group for u in out.units]
    assert groups == sorted(groups, key=groups.index)  # groups stay together
    for g in set(groups):
        pos = [u.position for u in out.units if u.group == g]
        assert pos == sorted(pos)
    if out.truncated:
        assert len(out.units) <= 1
        assert all(any(v.text.startswith(u.text) for v in units) for u in out.units)
    else:
        assert all(u in units for u in out.units)
        assert out.units or not units


def test_fill_budget_header_larger_than_budget_keeps_nothing():
    """A group cost alone over the budget used to produce an over-budget result."""
    out = fill_budget([Unit(0, 0, "one two three", 1.0)], 2, group_cost={0: 5})
    assert out == Budgeted((), 0, True)


@FAST
@given(units=st.one_of(junk, st.lists(junk, min_size=1, max_size=2)), max_tokens=st.one_of(junk, st.integers(1, 5)))
def test_fill_budget_wrong_types(units, max_tokens):
    assume(units != [] and units != b"")
    _, err = call_or_clear_error(lambda: fill_budget(units, max_tokens))
    assert err is not None and "fill_budget" in str(err)


# --------------------------------------------------------------------------- HTML

TAGS = ["p", "div", "span", "table", "tr", "td", "th", "ul", "li", "h1", "h2", "script", "style", "a", "b",
        "pre", "br", "hr", "nav", "footer", "caption", "section", "blockquote", "svg", "math", "template"]
pieces = st.one_of(
    st.sampled_from(TAGS).map(lambda t: f"<{t}>"),
    st.sampled_from(TAGS).map(lambda t: f"</{t}>"),
    st.sampled_from(['<div class="sidebar">', '<p style="display:none">', '<td colspan="2">', "<!--", "-->",
                     "<![CDATA[", "]]>", "<!DOCTYPE html>", "<?xml version='1.0'?>", "&nbsp;", "&#0;", "&#xD800;",
                     "&lol;", "&", "<", ">", '"', "<p", "</", "<html><body>"]),
    texts,
)
pages = st.lists(pieces, max_size=30).map("".join)


@FAST
@given(page=st.one_of(pages, texts, st.binary(max_size=200)), query=queries,
       max_tokens=st.integers(1, 120), mnw=st.integers(1, 20))
def test_html_pruner_arbitrary_pages(page, query, max_tokens, mnw):
    import lxml.html

    from ragprune import HtmlPruner
    from ragprune.types import PrunedHtml

    out, err = call_or_clear_error(lambda: HtmlPruner(max_tokens=max_tokens, max_node_words=mnw).prune(query, page))
    if err is not None:
        assert is_blank(query), err
        return
    assert isinstance(out, PrunedHtml)
    assert out.html.startswith("<body") and out.html.endswith("</body>")
    assert lxml.html.fromstring(out.html) is not None
    assert list(out.blocks) == sorted(set(out.blocks))
    assert 0.0 <= out.compression <= 1.0
    if not out.truncated and len(out.blocks) > 1:
        assert out.tokens <= max_tokens


@FAST
@given(page=st.one_of(pages, st.binary(max_size=200)), mnw=st.integers(1, 10), pick=st.randoms(use_true_random=False))
def test_clean_and_block_tree_invariants(page, mnw, pick):
    import lxml.html

    from ragprune.html.blocktree import build_blocks, element_text, rebuild
    from ragprune.html.clean import clean_html, clean_tree, parse_html

    assert clean_html(page).startswith("<body")
    body = clean_tree(parse_html(page))
    blocks = build_blocks(body, mnw)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    for b in blocks:
        assert b.text and b.words == len(b.text.split())
        if b.kind != "own_text":
            assert b.words <= mnw
    subset = [b for b in blocks if pick.random() < 0.5]
    out = rebuild(body, subset)
    assert lxml.html.tostring(out, encoding="unicode").startswith("<body")
    assert isinstance(element_text(out), str)


@FAST
@given(bad=junk)
def test_html_entry_points_reject_wrong_types(bad):
    from ragprune import HtmlPruner
    from ragprune.html.blocktree import build_blocks
    from ragprune.html.clean import clean_html, clean_tree, parse_html

    assume(not isinstance(bad, (bytes, str)))
    with pytest.raises(TypeError, match="html must be str or bytes"):
        clean_html(bad)
    with pytest.raises(TypeError, match="html must be str or bytes"):
        HtmlPruner().prune("q", bad)
    with pytest.raises(TypeError, match="build_blocks: body must be an lxml element"):
        build_blocks(bad)
    with pytest.raises(TypeError, match="clean_tree: root must be an lxml element"):
        clean_tree(bad)
    if not (isinstance(bad, int) and not isinstance(bad, bool) and bad > 0):
        body = clean_tree(parse_html("<p>x</p>"))
        with pytest.raises((TypeError, ValueError), match="max_node_words must be"):
            build_blocks(body, bad)
        with pytest.raises((TypeError, ValueError), match="max_tokens must be"):
            HtmlPruner(max_tokens=bad)


# --------------------------------------------------------------------------- pruners


@FAST
@given(docs=st.lists(texts, max_size=4), query=queries,
       make=st.sampled_from([KeepAllPruner, lambda: RandomPruner(0.5, seed=3), lambda: LeadPruner(k=2),
                             lambda: BM25SentencePruner(threshold=0.0)]))
def test_baseline_pruners_arbitrary_input(docs, query, make):
    pruner = make()
    docs_in = [Document(id=str(i), text=t) for i, t in enumerate(docs)]
    out, err = call_or_clear_error(lambda: pruner.prune(query, docs_in))
    if err is not None:
        assert is_blank(query), err
        return
    assert len(out) == len(docs_in)
    for p, d in zip(out, docs_in):
        check_pruned(p, d)
        assert p.text == " ".join(p.sentences[i] for i in p.kept)


@FAST
@given(bad=junk)
def test_pruners_reject_wrong_types(bad):
    with pytest.raises(TypeError, match=r"LeadPruner\.prune: (query must be|docs must be)"):
        LeadPruner().prune(bad, bad)


@MODEL
@given(docs=st.lists(texts, max_size=3), query=queries, title=texts)
def test_provence_tiny_model_arbitrary_input(tiny_provence, docs, query, title):
    docs_in = [Document(id=str(i), text=t, title=title if i == 0 else "") for i, t in enumerate(docs)]
    out, err = call_or_clear_error(lambda: tiny_provence.prune(query, docs_in))
    if err is not None:
        assert is_blank(query), err
        return
    assert [p.id for p in out] == [d.id for d in docs_in]
    for p, d in zip(out, docs_in):
        check_pruned(p, d)
        assert p.text == " ".join(p.sentences[i] for i in p.kept)


@MODEL
@given(docs=st.lists(texts, max_size=4), query=queries, k=st.one_of(st.none(), st.integers(-1, 5)))
def test_cross_encoder_tiny_model_arbitrary_input(tiny_ce, docs, query, k):
    docs_in = [Document(id=str(i), text=t) for i, t in enumerate(docs)]
    out, err = call_or_clear_error(lambda: tiny_ce.rerank(query, docs_in, k=k))
    if err is not None:
        assert is_blank(query) or (k is not None and k < 1), err
        return
    assert len(out) == (len(docs_in) if k is None else min(k, len(docs_in)))
    assert all(math.isfinite(h.score) for h in out)
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)


# --------------------------------------------------------------------------- pipeline


@FAST
@given(docs=st.lists(texts, min_size=1, max_size=6), query=queries, max_tokens=st.integers(1, 80),
       top_k=st.integers(1, 4))
def test_pipeline_bm25_lead_arbitrary_input(docs, query, max_tokens, top_k):
    pipe = Pipeline(BM25Retriever.from_documents(docs), pruner=LeadPruner(k=2), max_tokens=max_tokens, top_k=top_k)
    _check_pipeline(pipe, query, max_tokens)


@MODEL
@given(docs=st.lists(texts, min_size=1, max_size=4), query=queries, max_tokens=st.integers(1, 80))
def test_pipeline_with_tiny_models_arbitrary_input(tiny_ce, tiny_provence, docs, query, max_tokens):
    pipe = Pipeline(BM25Retriever.from_documents(docs), tiny_ce, tiny_provence, max_tokens=max_tokens, top_k=3)
    _check_pipeline(pipe, query, max_tokens)


def _check_pipeline(pipe: Pipeline, query: str, max_tokens: int) -> None:
    ctx, err = call_or_clear_error(lambda: pipe.run(query))
    if err is not None:
        assert is_blank(query), err
        return
    assert ctx.tokens == count_tokens(ctx.text) <= max_tokens
    ids = [d.id for d in ctx.documents]
    assert len(set(ids)) == len(ids)
    for d in ctx.documents:
        assert d.text in ctx.text
    assert 0.0 <= ctx.stats["compression"] <= 1.0
    assert all(math.isfinite(v) for v in ctx.stats.values())


@FAST
@given(bad=junk)
def test_pipeline_wrong_types(bad):
    bm25 = _toy_bm25()
    with pytest.raises(TypeError, match=r"Pipeline\.run: query must be"):
        Pipeline(bm25).run(bad)
    for kwargs in ({"max_tokens": bad}, {"top_k": bad}, {"candidates": bad}, {"token_counter": bad},
                   {"reranker": bad}, {"pruner": bad}, {"retriever": bad}):
        kwargs.setdefault("retriever", bm25)
        pipe, err = call_or_clear_error(lambda kwargs=kwargs: Pipeline(**kwargs))
        if err is None:  # valid by chance (max_tokens=7, pruner=None, ...): it must run
            _check_pipeline(pipe, "alpha", pipe.max_tokens)
        else:
            assert "Pipeline" in str(err), err


# --------------------------------------------------------------------------- huge strings


@pytest.mark.parametrize("name, text", [
    ("one 4 MB word", "a" * 4_000_000),
    ("2 MB of short words", "word " * 400_000),
    ("400k full stops", "." * 400_000),
    ("1M newlines", "\n" * 1_000_000),
    ("1M emoji", "😀" * 1_000_000),
    ("200k sentences", "Go. " * 200_000),
])
def test_huge_strings_are_handled_in_bounded_time(name, text):
    def work():
        assert count_tokens(text) >= 0
        spans = sentence_spans(text)
        assert all(0 <= s < e <= len(text) for s, e in spans[:10])
        bm25 = BM25Retriever.from_documents([text, "small doc about words"])
        hits = bm25.retrieve(text[:100_000] if text.strip() else "words", k=2)
        assert len(hits) == 2
        ctx = Pipeline(bm25, max_tokens=50, top_k=2).run("word a go")
        assert ctx.tokens <= 50

    run_bounded(work, 90, f"huge input {name!r}")


# --------------------------------------------------------------------------- CLI

OPTIONS = ["--json", "--quiet", "-k", "0", "-k", "-5", "-k", "x", "--max-tokens", "0", "--max-tokens", "nan",
           "--method", "bm26", "--k1", "nan", "--k1", "inf", "--b", "2", "--b", "-1", "--candidates", "0",
           "--threshold", "7", "--scorer", "tfidf", "--html", "--text", "--output-html", "--model", "", "--", "-"]


# What a real argv can hold: text, and undecodable bytes as surrogateescape code points.
argv_texts = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(WORDS + ODD[:15]), max_size=6).map(" ".join),
                       st.binary(max_size=12).map(os.fsdecode))


@settings(max_examples=int(40 * SCALE), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(["index", "search", "prune", "rerank", "eval", "bogus", ""]),
       args=st.lists(st.one_of(st.sampled_from(OPTIONS), st.sampled_from(["@CORPUS", "@IDX", "@MISSING",
                                                                         "@DIR", "@BADJSON", "@PAGE"]), argv_texts),
                     max_size=6),
       stdin=st.binary(max_size=50))
def test_cli_bad_arguments_exit_cleanly(cli_env, monkeypatch, cmd, args, stdin):
    """Random argument lists: the CLI returns 0/1/2 or exits via argparse, never a traceback."""
    from ragprune.cli import main

    # the streams of a real interpreter: strict stdout, backslashreplace stderr
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)

    assume(cmd != "eval" or not args or args[0] not in ("beir", "pruning", "html", "speed"))
    argv = ([cmd] if cmd else []) + [cli_env.get(a, a) for a in args]
    if cmd == "index":
        argv = [a if a != cli_env["@IDX"] else cli_env["@NEWIDX"] for a in argv]
    if cmd in ("prune", "rerank"):
        argv += ["--model", cli_env["@PROVENCE"] if cmd == "prune" else cli_env["@CE"]]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: usage errors exit with 2 (--help with 0)
        assert e.code in (0, 2)
        return
    err.flush()
    message = err.buffer.getvalue().decode("utf-8")
    assert rc in (0, 1, 2), rc
    assert "Traceback" not in message
    if rc:
        assert f"ragprune {cmd}: " in message, message


@pytest.fixture()
def cli_env(tmp_path_factory, tiny_provence_path, tiny_ce_path, monkeypatch):
    root = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(root)  # whatever random paths the CLI writes land here
    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": w, "text": f"{w} is a word"}) for w in WORDS[:20]))
    idx = root / "idx"
    BM25Retriever.from_documents([json.loads(line) for line in corpus.read_text().splitlines()]).save(idx)
    (root / "dir").mkdir(exist_ok=True)
    bad = root / "bad.jsonl"
    bad.write_text('[1, 2]\n"a string"\n{"_id": {"x": 1}, "text": 5}\n')
    page = root / "page.html"
    page.write_bytes(b"<html><body><p>hello world</p>\xff\xfe</body></html>")
    return {"@CORPUS": str(corpus), "@IDX": str(idx), "@NEWIDX": str(root / "new-idx"), "@MISSING": str(root / "nope"),
            "@DIR": str(root / "dir"), "@BADJSON": str(bad), "@PAGE": str(page),
            "@PROVENCE": str(tiny_provence_path), "@CE": str(tiny_ce_path)}


@pytest.mark.parametrize("argv_tail, code, msg", [
    (["index", "@BADJSON", "@NEWIDX"], 2, "is a JSON list, not an object"),
    (["index", "@MISSING", "@NEWIDX"], 2, "not found"),
    (["index", "@CORPUS", "@PAGE"], 2, "exists and is not a folder"),
    (["index", "@CORPUS", "@NEWIDX", "--k1", "inf"], 2, "k1 must be finite"),
    (["index", "@CORPUS", "@NEWIDX", "--method", "bm26"], 2, "unknown method"),
    (["search", "@DIR", "q"], 2, "has no manifest.json"),
    (["search", "@IDX", "q", "-k", "0"], 2, "-k must be >= 1"),
    (["prune", "q", "@MISSING", "--html"], 2, "No such file"),
    (["prune", "   ", "@PAGE", "--html"], 2, "query is empty"),
    (["prune", "q", "@PAGE", "--text", "--model", "@MISSING"], 2, "no model folder"),
    (["rerank", "@IDX", "q", "--model", "@DIR"], 2, "not a Hugging Face checkpoint folder"),
])
def test_cli_bad_input_messages(cli_env, capsys, argv_tail, code, msg):
    from ragprune.cli import main

    argv = [cli_env.get(a, a) for a in argv_tail]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert f"ragprune {argv[0]}: " in err and msg in err and "Traceback" not in err


def test_index_format_error_is_a_value_error():
    assert issubclass(IndexFormatError, ValueError)
