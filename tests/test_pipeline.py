import threading

import pytest

from ragprune import BM25Retriever, Document
from ragprune.budget import Unit, fill_budget
from ragprune.pipeline import Context, Pipeline
from ragprune.prune.baselines import LeadPruner
from ragprune.text import count_tokens


def test_fill_budget_greedy_by_score_then_document_order():
    units = [Unit(0, 0, "a b c", 1.0), Unit(0, 1, "d e", 3.0), Unit(1, 0, "f g h i", 2.0), Unit(1, 1, "j", 0.5)]
    out = fill_budget(units, 6)
    # picks d e (3.0, 2 tok), f g h i (2.0, 4 tok) -> full; j (1 tok) does not fit any more
    assert [(u.group, u.position) for u in out.units] == [(0, 1), (1, 0)]
    assert out.tokens == 6 and not out.truncated
    out = fill_budget(units, 7)  # a b c does not fit (3), j still does
    assert [(u.group, u.position) for u in out.units] == [(0, 1), (1, 0), (1, 1)]


def test_fill_budget_truncates_best_unit_when_nothing_fits():
    out = fill_budget([Unit(0, 0, "one two three four five six", 1.0), Unit(1, 0, "x y z w v u t", 0.5)], 3)
    assert out.truncated and out.units[0].text == "one two three" and out.tokens == 3


def test_fill_budget_cuts_inside_a_long_word_and_ranks_nan_last():
    out = fill_budget([Unit(0, 0, "a,b,c,d,e,f,g", 1.0)], 3)
    assert out.truncated and out.units[0].text and count_tokens(out.units[0].text) <= 3
    units = [Unit(0, 0, "a b", 1.0), Unit(0, 1, "c d", float("nan")), Unit(0, 2, "e f", 2.0)]
    assert [u.position for u in fill_budget(units, 4).units] == [0, 2]


def test_fill_budget_group_cost_and_errors():
    units = [Unit(0, 0, "a b", 2.0), Unit(1, 0, "c d", 1.0)]
    out = fill_budget(units, 5, group_cost={0: 1, 1: 1})
    assert [u.group for u in out.units] == [0]  # second group would need 2 + 1 header tokens
    assert fill_budget([], 5).units == ()
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        fill_budget(units, 0)


@pytest.fixture()
def pipe(toy_docs):
    return Pipeline(BM25Retriever.from_documents(toy_docs), pruner=LeadPruner(k=1), max_tokens=60, top_k=3)


def test_pipeline_run(pipe):
    ctx = pipe.run("what causes scurvy")
    assert isinstance(ctx, Context)
    assert ctx.text.startswith("[scurvy] Scurvy\n")
    assert ctx.tokens == count_tokens(ctx.text) <= 60
    assert ctx.documents[0].id == "scurvy"
    for k in ("seconds_retrieve", "seconds_rerank", "seconds_prune", "seconds_budget", "tokens_candidates",
              "tokens_final", "compression"):
        assert k in ctx.stats
    assert 0 <= ctx.stats["compression"] <= 1


def test_pipeline_every_stage_optional_and_small_budget(toy_docs):
    bm25 = BM25Retriever.from_documents(toy_docs)
    ctx = Pipeline(bm25, max_tokens=1000, top_k=2).run("capital of France")
    assert "[paris] Paris" in ctx.text and not ctx.truncated
    tiny = Pipeline(bm25, max_tokens=6, top_k=2).run("capital of France")
    assert tiny.truncated and tiny.text and tiny.tokens <= 6


def test_pipeline_run_many_matches_run_and_threads(pipe):
    qs = ["what causes scurvy", "capital of Germany", "purring cats"]
    many = pipe.run_many(qs)
    assert [c.text for c in many] == [pipe.run(q).text for q in qs]
    results, errs = {}, []

    def work(i):
        try:
            results[i] = [pipe.run(q).text for q in qs]
        except Exception as e:  # pragma: no cover
            errs.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs and all(r == [c.text for c in many] for r in results.values())


def test_pipeline_bad_input(pipe, toy_docs):
    with pytest.raises(ValueError, match="query is empty"):
        pipe.run(" ")
    with pytest.raises(TypeError, match="retriever must have retrieve_many"):
        Pipeline("bm25")
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        Pipeline(BM25Retriever.from_documents(toy_docs), max_tokens=0)
    assert pipe.run_many([]) == []
    with pytest.raises(TypeError, match="token_counter returned None"):
        Pipeline(BM25Retriever.from_documents(toy_docs), token_counter=lambda t: None).run("capital")


def test_documents_keep_original_sentence_order(toy_docs):
    docs = [Document(id="a", text="First fact about tea. Second fact about tea. Third fact about coffee.")]
    ctx = Pipeline(BM25Retriever.from_documents(docs), max_tokens=1000).run("tea")
    assert ctx.documents[0].text == docs[0].text


def test_pipeline_backfills_unused_budget_by_sentence_score():
    from ragprune.prune.baselines import BM25SentencePruner

    docs = [Document(id="a", text="Tea grows in India. Lions hunt at night. Tea is brewed with hot water."),
            Document(id="b", text="Tea comes from the leaves of a shrub. The moon orbits the earth.")]
    bm25 = BM25Retriever.from_documents(docs)
    never = BM25SentencePruner(threshold=1e9)  # keeps nothing, but scores every sentence
    strict = Pipeline(bm25, pruner=never, max_tokens=1000, backfill=False).run("tea leaves")
    assert strict.documents == () and strict.text == "" and strict.stats["backfilled_sentences"] == 0
    full = Pipeline(bm25, pruner=never, max_tokens=1000).run("tea leaves")
    assert full.stats["backfilled_sentences"] == 5 and full.stats["compression"] == 0.0
    # a small budget takes the top document's best-scored sentence, not its first one
    top = bm25.retrieve("tea water", k=1)[0].id
    one = Pipeline(bm25, pruner=never, max_tokens=10).run("tea water")
    assert [d.id for d in one.documents] == [top] == ["a"]
    assert one.documents[0].kept == (2,)  # "Tea is brewed with hot water." outscores the first sentence
    # kept sentences always go before backfilled ones, whatever their score
    lead = Pipeline(bm25, pruner=LeadPruner(k=1), max_tokens=14).run("tea leaves")
    assert all(d.kept == (0,) for d in lead.documents)
    with pytest.raises(TypeError, match="backfill must be True, False or 'kept-documents'"):
        Pipeline(bm25, backfill="yes")


def test_pipeline_backfill_kept_documents_only():
    from ragprune.prune.baselines import BM25SentencePruner

    docs = [Document(id="a", text="Tea grows in India. Lions hunt at night. Tea is brewed with hot water."),
            Document(id="b", text="The moon orbits the earth. Stars shine at night.")]
    bm25 = BM25Retriever.from_documents(docs)
    some = BM25SentencePruner(threshold=0.5)  # keeps the tea sentences of "a", nothing of "b"
    assert [p.kept for p in some.prune("tea water", docs)] == [(0, 2), ()]
    everywhere = Pipeline(bm25, pruner=some, max_tokens=1000).run("tea water")
    assert [d.id for d in everywhere.documents] == ["a", "b"]
    local = Pipeline(bm25, pruner=some, max_tokens=1000, backfill="kept-documents").run("tea water")
    assert [d.id for d in local.documents] == ["a"] and local.documents[0].kept == (0, 1, 2)
    assert local.stats["backfilled_sentences"] == 1
    # nothing kept anywhere: only the best-ranked document is backfilled
    never = BM25SentencePruner(threshold=1e9)
    top = Pipeline(bm25, pruner=never, max_tokens=1000, backfill="kept-documents").run("tea water")
    assert [d.id for d in top.documents] == ["a"] and top.documents[0].kept == (0, 1, 2)


def test_pruners_report_sentence_scores(toy_docs):
    out = LeadPruner(k=1).prune("capital", [Document(id="x", text="Tea is green. Coffee is black. Milk is white.")])[0]
    assert len(out.sentence_scores) == len(out.sentences) == 3 and out.kept == (0,)
    assert out.sentence_scores[0] > out.sentence_scores[2]


class _TitledScoreOrderPruner(LeadPruner):
    """Scores sentences by length, keeps them all, and assembles its text in score order after the
    document title: options the Pipeline must respect instead of rebuilding text its own way."""

    def score_sentences(self, query, docs, spans):
        import numpy as np

        return [np.array([float(b - a) for a, b in sp]) for sp in spans]

    def select(self, pruned, keep):
        from dataclasses import replace

        p = super().select(pruned, keep)
        order = sorted(p.kept, key=lambda j: -p.sentence_scores[j])
        body = " ".join(p.sentences[j] for j in order)
        return replace(p, text=f"{p.document.title}\n{body}" if body else p.document.title)


def test_pipeline_uses_the_pruners_assembly_and_charges_its_title():
    docs = [Document(id="a", title="Tea facts", text="Tea. Tea grows on shrubs in India. Tea is hot.")]
    pruner = _TitledScoreOrderPruner(k=3)
    ctx = Pipeline(BM25Retriever.from_documents(docs), pruner=pruner, max_tokens=1000).run("tea")
    assert ctx.documents[0].text == "Tea facts\nTea grows on shrubs in India. Tea is hot. Tea."
    assert ctx.text == "[a] Tea facts\n" + ctx.documents[0].text
    # the title the pruner adds costs tokens: every budget is met by the real text
    for budget in range(8, 20):
        small = Pipeline(BM25Retriever.from_documents(docs), pruner=pruner, max_tokens=budget).run("tea")
        assert small.tokens == count_tokens(small.text) <= budget, budget


def test_pipeline_keeps_the_pruners_document_order():
    class Reversing(LeadPruner):  # a pruner that reorders documents (as ProvencePruner(reorder=True) does)
        def _prune_many(self, queries, docs):
            return [list(reversed(ds)) for ds in super()._prune_many(queries, docs)]

    docs = [Document(id="a", text="Tea tea tea grows."), Document(id="b", text="Tea is a drink.")]
    bm25 = BM25Retriever.from_documents(docs)
    order = [h.id for h in bm25.retrieve("tea", k=2)]
    ctx = Pipeline(bm25, pruner=Reversing(k=1), max_tokens=1000).run("tea")
    assert [d.id for d in ctx.documents] == order[::-1]


def test_pipeline_documents_carry_sentence_spans(toy_docs):
    ctx = Pipeline(BM25Retriever.from_documents(toy_docs), pruner=LeadPruner(k=2), max_tokens=40).run("scurvy")
    for d in ctx.documents:
        assert len(d.spans) == len(d.sentences) > 0
        assert all(d.document.text[a:b] == s for (a, b), s in zip(d.spans, d.sentences))
        assert d.text == " ".join(d.sentences[j] for j in d.kept)


def test_pipeline_refuses_pruned_documents_without_spans():
    from ragprune.types import PrunedDocument

    class NoSpans(LeadPruner):
        def _prune_many(self, queries, docs):
            return [[PrunedDocument(d, d.text, (0,), 1.0, 0.0, sentences=(d.text,)) for d in ds] for ds in docs]

        select = None  # a duck-typed pruner without the select() hook

    docs = [Document(id="a", text="Tea grows. It is green.")]
    with pytest.raises(ValueError, match="has no sentence spans"):
        Pipeline(BM25Retriever.from_documents(docs), pruner=NoSpans(k=1), max_tokens=100).run("tea")


def test_fit_context_is_the_pipelines_budget_step(toy_docs):
    from ragprune.pipeline import fit_context
    from ragprune.prune.baselines import BM25SentencePruner

    bm25 = BM25Retriever.from_documents(toy_docs)
    pruner = BM25SentencePruner(threshold=0.5)
    for budget in (10, 25, 60):
        for backfill in (True, False, "kept-documents"):
            ctx = Pipeline(bm25, pruner=pruner, max_tokens=budget, top_k=3, backfill=backfill).run("scurvy vitamin")
            pruned = pruner.prune("scurvy vitamin", bm25.retrieve("scurvy vitamin", k=3))
            fit = fit_context("scurvy vitamin", pruned, budget, pruner=pruner, backfill=backfill)
            assert (fit.text, fit.documents, fit.tokens, fit.truncated) == (ctx.text, ctx.documents, ctx.tokens,
                                                                            ctx.truncated)
    bare = fit_context("scurvy", pruned, 1000, headers=False)
    assert bare.text == "\n\n".join(d.text for d in bare.documents) and "[" not in bare.text
    with pytest.raises(TypeError, match="item 0 is a str"):
        fit_context("q", ["text"], 10)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        fit_context("q", pruned, 0)
    with pytest.raises(TypeError, match="backfill must be"):
        fit_context("q", pruned, 10, backfill="some")
