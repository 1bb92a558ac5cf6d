import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragprune import Document, ProvencePruner, PrunedDocument  # noqa: E402
from ragprune.prune.provence import init_provence, save_provence  # noqa: E402
from ragprune.prune.train import (  # noqa: E402
    PrunerTrainConfig,
    PruningExample,
    read_examples,
    token_labels,
    train_pruner,
    write_examples,
)
from ragprune.text import sentence_spans  # noqa: E402
from tests.test_cross_encoder import make_tiny_cross_encoder  # noqa: E402

TEXT = "Scurvy is caused by a lack of vitamin C in the diet. Paris is in France. Cats purr when happy."


@pytest.fixture(scope="module")
def tiny_provence(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    ce = make_tiny_cross_encoder(root / "ce")
    tok, model = init_provence(ce)
    return save_provence(model, tok, root / "provence")


@pytest.fixture(scope="module")
def pruner(tiny_provence):
    return ProvencePruner(tiny_provence, threshold=0.5, max_length=64, stride=8)


def test_prune_structure(pruner):
    out = pruner.prune("what causes scurvy", [Document(id="a", text=TEXT, title="Health"), "Second doc. Two."])
    assert [p.id for p in out] == ["a", "1"]
    p = out[0]
    assert isinstance(p, PrunedDocument)
    assert p.sentences == tuple(TEXT[s:e] for s, e in sentence_spans(TEXT))
    assert p.text == " ".join(p.sentences[i] for i in p.kept)
    assert list(p.kept) == sorted(p.kept)
    assert 0.0 <= p.compression <= 1.0


def test_threshold_extremes(tiny_provence):
    doc = [Document(id="a", text=TEXT)]
    keep_all = ProvencePruner(tiny_provence, threshold=0.0).prune("q", doc)[0]
    assert keep_all.kept == (0, 1, 2) and keep_all.compression == 0.0 and keep_all.text == " ".join(keep_all.sentences)
    drop_all = ProvencePruner(tiny_provence, threshold=1.0).prune("q", doc)[0]
    assert drop_all.kept == () and drop_all.text == "" and drop_all.compression == 1.0


def test_int8_quantization_close_to_fp32(tiny_provence):
    doc = [Document(id="a", text=TEXT)]
    fp32 = ProvencePruner(tiny_provence, threshold=0.0).sentence_scores("what causes scurvy", doc[0])
    int8 = ProvencePruner(tiny_provence, threshold=0.0, quantize="int8").sentence_scores("what causes scurvy", doc[0])
    assert fp32[0] == int8[0]  # same sentences
    assert np.allclose(fp32[1], int8[1], atol=0.05)


def test_long_context_is_windowed_not_cut(pruner):
    sents = [f"Sentence number {i} talks about topic {i % 7}." for i in range(120)]
    doc = Document(id="long", text=" ".join(sents))
    spans, scores, rank = pruner.sentence_scores("topic 3", doc)
    assert len(spans) == 120
    assert np.all(scores > 0)  # every sentence, also the last, was seen by the model
    assert np.isfinite(rank)


def test_smallest_window_with_a_long_query(tiny_provence):
    small = ProvencePruner(tiny_provence, max_length=32, stride=64)
    query = "what causes scurvy in sailors on long voyages across the southern ocean " * 3
    doc = Document(id="d", text=" ".join(f"Sailors ate no fruit on voyage {i}." for i in range(20)))
    spans, scores, _ = small.sentence_scores(query, doc)
    assert len(spans) == 20 and np.all(scores > 0)


def test_rank_score_and_reranker_protocol(pruner):
    docs = [Document(id="a", text=TEXT), Document(id="b", text="Unrelated words here.")]
    ranked = pruner.rerank("scurvy", docs)
    assert sorted(h.id for h in ranked) == ["a", "b"]
    pruned = pruner.prune("scurvy", docs)
    assert {p.id: p.score for p in pruned} == pytest.approx({h.id: h.score for h in ranked}, abs=1e-5)


def test_reorder_and_top_k(tiny_provence):
    docs = [Document(id=str(i), text=f"Passage {i} about things. More text {i}.") for i in range(4)]
    out = ProvencePruner(tiny_provence, reorder=True, top_k=2).prune("things", docs)
    assert len(out) == 2 and out[0].score >= out[1].score


def test_empty_title_only_and_one_sentence(pruner):
    empty = pruner.prune("q", [Document(id="e", text="")])[0]
    assert empty.text == "" and empty.kept == () and empty.compression == 0.0
    title_only = ProvencePruner(pruner.path, always_select_title=True).prune("q", [Document(id="t", text="", title="A title")])[0]
    assert title_only.text == "A title"
    one = ProvencePruner(pruner.path, threshold=0.0).prune("q", ["Just one sentence"])[0]
    assert one.kept == (0,)


def test_options_do_not_leak_and_input_untouched(tiny_provence):
    docs = [Document(id="a", text=TEXT)]
    a = ProvencePruner(tiny_provence, threshold=0.0)
    before = a.prune("q", docs)
    ProvencePruner(tiny_provence, threshold=1.0).prune("q", docs)
    assert a.prune("q", docs) == before
    assert docs[0].text == TEXT


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"threshold": 1.5}, ValueError, "threshold must be <= 1.0"),
    ({"threshold": -0.1}, ValueError, "threshold must be >= 0.0"),
    ({"threshold": "high"}, TypeError, "threshold must be a number"),
    ({"top_k": 0}, ValueError, "top_k must be >= 1"),
    ({"sentence_order": "random"}, ValueError, "unknown sentence_order"),
    ({"quantize": "int4"}, ValueError, "unknown quantize"),
    ({"max_length": 8}, ValueError, "at least 32 tokens"),
    ({"stride": -5}, ValueError, "stride must be an int >= 0"),
    ({"stride": "x"}, ValueError, "stride must be an int >= 0"),
    ({"quantize": "int8", "device": "cuda"}, ValueError, "CPU only"),
    ({"device": "bogus"}, ValueError, "unknown device 'bogus'"),
])
def test_bad_options(tiny_provence, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        ProvencePruner(tiny_provence, **kwargs)


def test_bad_checkpoint(tmp_path, tiny_provence):
    with pytest.raises(ValueError, match="not a ragprune Provence checkpoint"):
        ProvencePruner(make_tiny_cross_encoder(tmp_path / "ce"))
    meta = tiny_provence / "provence.json"
    saved = meta.read_text()
    try:
        meta.write_text(json.dumps({"format": "ragprune-provence", "version": 99}))
        with pytest.raises(ValueError, match="expected 'ragprune-provence' v1"):
            ProvencePruner(tiny_provence)
    finally:
        meta.write_text(saved)


def test_bad_queries(pruner):
    with pytest.raises(ValueError, match="query is empty"):
        pruner.prune("  ", [TEXT])
    with pytest.raises(TypeError, match="docs must be a list"):
        pruner.prune("q", TEXT)
    with pytest.raises(TypeError, match="queries must be a list of str"):
        pruner.prune_many(None, [[TEXT]])
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        pruner.infer(["q", "r"], [TEXT])
    assert len(pruner.score(["q"], [TEXT])) == 1  # plain strings are documents too


def test_token_labels():
    spans = [(0, 5), (6, 11)]
    offsets = np.array([[0, 0], [0, 3], [0, 0], [0, 4], [6, 8], [8, 11], [12, 13], [0, 0]])
    seq = [None, 0, None, 1, 1, 1, 1, None]
    # context = "T\n" + text: token at context offset 0..? text_offset=0 here
    lab = token_labels(offsets, seq, 0, spans, [1, 0])
    assert lab.tolist() == [-100, -100, -100, 1, 0, 0, 0, -100]
    # title tokens (before text_offset) are ignored
    assert token_labels(np.array([[0, 2], [3, 5]]), [1, 1], 3, [(0, 2)], [1]).tolist() == [-100, 1]


def _examples(n=8):
    spans = tuple(sentence_spans(TEXT))
    return [PruningExample(query="what causes scurvy", title="Health", text=TEXT, spans=spans,
                           labels=(1, 0, 0), relevant=1.0, source="t") if i % 2 == 0 else
            PruningExample(query="capital of France", title="", text=TEXT, spans=spans, labels=(0, 1, 0),
                           relevant=0.0, source="t") for i in range(n)]


def test_examples_round_trip(tmp_path):
    write_examples(tmp_path / "e.jsonl", _examples(3))
    assert read_examples(tmp_path / "e.jsonl") == _examples(3)
    with pytest.raises(ValueError, match="2 spans but 1 labels"):
        PruningExample("q", "", "a. b.", ((0, 2), (3, 5)), (1,), 1.0)


def test_smoke_training_learns_and_loads(tmp_path):
    ce = make_tiny_cross_encoder(tmp_path / "ce")
    cfg = PrunerTrainConfig(batch_size=4, max_length=48, max_steps=30, save_every=15, lr=3e-3, threads=1,
                            freeze_embeddings=False)
    final = train_pruner(_examples(), ce, tmp_path / "run", cfg, progress=False)
    assert (final / "provence.json").is_file()
    logged = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1]["loss"] < logged[0]["loss"]
    p = ProvencePruner(final, threshold=0.5)
    _, scores, _ = p.sentence_scores("what causes scurvy", Document(id="x", text=TEXT, title="Health"))
    assert scores[0] > scores[2]  # learned: the scurvy sentence beats the cats sentence


def test_passage_weights_rule():
    from ragprune.prune.provence import PASSAGE_WEIGHTINGS, passage_weights

    assert passage_weights([0.3]).tolist() == [1.0]  # a single passage is never down-weighted
    assert passage_weights([0.3], "relative").tolist() == [1.0]
    r = [2.0, 0.0, -3.0]
    rel, ab, mx = (passage_weights(r, m) for m in ("relative", "absolute", "max"))
    assert rel == pytest.approx(np.exp([0.0, -2.0, -5.0]))
    assert ab == pytest.approx(1 / (1 + np.exp(-(np.array(r) - 1.0))))
    assert mx == pytest.approx(np.maximum(rel, ab)) and mx[0] == 1.0
    assert np.all(np.diff(mx) < 0)  # a lower-ranked passage never weighs more
    assert passage_weights(r, "none").tolist() == [1.0, 1.0, 1.0]
    assert passage_weights([], "max").size == 0
    assert set(PASSAGE_WEIGHTINGS) == {"max", "relative", "absolute", "none"}
    with pytest.raises(ValueError, match="unknown mode"):
        passage_weights(r, "softmax")


def test_passage_weighting_scales_sentence_scores(tiny_provence):
    from ragprune.prune.provence import passage_weights

    docs = [Document(id="a", text=TEXT, title="Health"), Document(id="b", text="Unrelated words here. And more.")]
    plain = ProvencePruner(tiny_provence, threshold=0.0, passage_weighting="none").prune("scurvy", docs)
    weighted = ProvencePruner(tiny_provence, threshold=0.0).prune("scurvy", docs)
    w = passage_weights([p.score for p in plain], "max")
    for p, q, wi in zip(plain, weighted, w):
        assert q.score == pytest.approx(p.score)  # the ranking score itself is not changed
        assert np.asarray(q.sentence_scores) == pytest.approx(np.asarray(p.sentence_scores) * wi, abs=1e-6)
    assert max(w) == 1.0 and min(w) < 1.0
    # score_sentences is what prune thresholds, also for the eval scripts
    pr = ProvencePruner(tiny_provence, threshold=0.0)
    spans = [list(sentence_spans(d.text)) for d in docs]
    for got, q in zip(pr.score_sentences("scurvy", docs, spans), weighted):
        assert got == pytest.approx(np.asarray(q.sentence_scores), abs=1e-6)
    assert pr.score_sentences("scurvy", [], []) == []
    # sentence_scores(doc) is what prune thresholds for that document alone, in every mode
    ab = ProvencePruner(tiny_provence, threshold=0.0, passage_weighting="absolute")
    _, alone, _ = ab.sentence_scores("scurvy", docs[0])
    assert alone == pytest.approx(np.asarray(ab.prune("scurvy", docs[:1])[0].sentence_scores), abs=1e-6)
    with pytest.raises(ValueError, match="passage_weighting"):
        ProvencePruner(tiny_provence, passage_weighting="softmax")
    assert "passage_weighting='none'" in repr(ProvencePruner(tiny_provence, passage_weighting="none"))


def test_lexical_fusion_mixes_bm25_into_sentence_scores(tiny_provence):
    from ragprune.prune.baselines import bm25_sentence_scores

    docs = [Document(id="a", text=TEXT, title="Health"), Document(id="b", text="Unrelated words here. And more.")]
    spans = [list(sentence_spans(d.text)) for d in docs]
    model_only = ProvencePruner(tiny_provence, threshold=0.0, lexical_weight=0.0)
    fused = ProvencePruner(tiny_provence, threshold=0.0, lexical_weight=0.4)
    lexical_only = ProvencePruner(tiny_provence, threshold=0.0, lexical_weight=1.0)
    m = model_only.score_sentences("scurvy vitamin", docs, spans)
    f = fused.score_sentences("scurvy vitamin", docs, spans)
    lex = lexical_only.score_sentences("scurvy vitamin", docs, spans)
    bm = bm25_sentence_scores("scurvy vitamin", docs, spans)
    best = max(x.max() for x in bm)
    raw = model_only.infer(["scurvy vitamin"] * 2, docs, spans)
    from ragprune.prune.provence import passage_weights

    w = passage_weights([r for r, _ in raw])
    for mi, fi, li, bi, wi in zip(m, f, lex, bm, w):
        assert li == pytest.approx(wi * bi / best, abs=1e-6)  # lexical only: weighted normalized BM25
        assert fi == pytest.approx(0.6 * mi + 0.4 * li, abs=1e-6)  # linear in the lexical weight
    assert lex[0][0] == pytest.approx(1.0 * w[0]) and lex[1].max() == 0.0  # the scurvy sentence is BM25's best
    # prune thresholds the fused scores
    kept = ProvencePruner(tiny_provence, threshold=0.5, lexical_weight=1.0).prune("scurvy vitamin", docs)
    assert kept[0].kept == (0,) and kept[1].kept == ()
    # a query with no word in the passages leaves the model's scores (times 1 - a)
    none = fused.score_sentences("zebra", docs, spans)
    assert none[0] == pytest.approx(0.6 * model_only.score_sentences("zebra", docs, spans)[0], abs=1e-6)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lexical_weight"):
            ProvencePruner(tiny_provence, lexical_weight=bad)
    assert "lexical_weight=0" in repr(model_only) and "lexical_weight" not in repr(ProvencePruner(tiny_provence))


def test_second_hop_reads_again_with_the_best_sentence(tiny_provence):
    docs = [Document(id="a", text=TEXT, title="Health"),
            Document(id="b", text="Vitamin C is found in oranges. Oranges grow on trees.")]
    spans = [list(sentence_spans(d.text)) for d in docs]
    one = ProvencePruner(tiny_provence, threshold=0.0)
    two = ProvencePruner(tiny_provence, threshold=0.0, hops=2)
    s1 = one.score_sentences("what causes scurvy", docs, spans)
    s2 = two.score_sentences("what causes scurvy", docs, spans)
    # the model's best sentence of reading 1, appended to the query, drives reading 2; scores never drop
    model_only = ProvencePruner(tiny_provence, threshold=0.0, lexical_weight=0.0).score_sentences(
        "what causes scurvy", docs, spans)
    flat = [(v, i, j) for i, s in enumerate(model_only) for j, v in enumerate(s)]
    _, i, j = max(flat)
    hop_query = "what causes scurvy " + docs[i].text[slice(*spans[i][j])]
    lex = one.lexical_scores("what causes scurvy", docs, spans)  # BM25 stays with the user's query
    raw = one.infer([hop_query] * 2, docs, spans)
    again = one.weighted(raw, lex)
    for a, b, c in zip(s1, s2, again):
        assert b == pytest.approx(np.maximum(a, c), abs=1e-6)
    assert all(np.all(b >= a - 1e-9) for a, b in zip(s1, s2))
    pruned = two.prune("what causes scurvy", docs)
    assert [np.asarray(p.sentence_scores) for p in pruned] == [pytest.approx(x, abs=1e-6) for x in s2]
    assert "hops=2" in repr(two)
    with pytest.raises(ValueError, match="hops"):
        ProvencePruner(tiny_provence, hops=0)


def test_eval_pruning_readings_come_from_one_model_pass(tiny_provence):
    from eval.pruning import provence_variants
    from eval.pruning_data import LabelledPassage, PruningQuestion, join_sentences

    def passage(i, sentences):
        text, spans = join_sentences(sentences)
        return LabelledPassage(document=Document(id=str(i), text=text), spans=spans, labels=(0,) * len(spans))

    q = PruningQuestion(query="what causes scurvy", passages=(
        passage(0, ["Scurvy is caused by a lack of vitamin C.", "Paris is in France."]),
        passage(1, ["Cats purr when happy.", "Dogs bark."])))
    pr = ProvencePruner(tiny_provence, threshold=0.0)
    got = provence_variants(pr, [q], hops=(1, 2))
    assert set(got) == {"provence", "provence-no-lexical", "provence-tokens-only", "provence-lexical-only",
                        "provence-2hop"}
    docs, spans = [p.document for p in q.passages], [list(p.spans) for p in q.passages]
    for name, pruner in (("provence", pr), ("provence-2hop", ProvencePruner(tiny_provence, hops=2)),
                         ("provence-no-lexical", ProvencePruner(tiny_provence, lexical_weight=0.0)),
                         ("provence-lexical-only", ProvencePruner(tiny_provence, lexical_weight=1.0)),
                         ("provence-tokens-only", ProvencePruner(tiny_provence, lexical_weight=0.0,
                                                                 passage_weighting="none"))):
        for a, b in zip(got[name][0], pruner.score_sentences(q.query, docs, spans)):
            assert a == pytest.approx(b, abs=1e-6), name
    assert "provence-no-lexical" not in provence_variants(ProvencePruner(tiny_provence, lexical_weight=0.0), [q])


def test_pipeline_respects_sentence_order_title_and_reorder(tiny_provence):
    """The Pipeline's context is what the pruner would output for the sentences the budget kept:
    its sentence order, its title, its document order (reorder=True), all within the budget."""
    from ragprune import BM25Retriever, Pipeline
    from ragprune.text import count_tokens

    docs = [Document(id="s", title="Scurvy", text=TEXT), Document(id="p", title="Paris", text="Paris is in France. It is big.")]
    bm25 = BM25Retriever.from_documents(docs)
    pruner = ProvencePruner(tiny_provence, threshold=0.0, max_length=64, stride=8, sentence_order="score",
                            always_select_title=True, reorder=True)
    alone = pruner.prune("scurvy vitamin", bm25.retrieve("scurvy vitamin", k=2))
    ctx = Pipeline(bm25, pruner=pruner, max_tokens=1000, top_k=2).run("scurvy vitamin")
    assert [d.id for d in ctx.documents] == [p.id for p in alone]  # the pruner's order, not BM25's
    assert [d.text for d in ctx.documents] == [p.text for p in alone]  # score order, after the title
    assert all(d.text.startswith(d.document.title + "\n") for d in ctx.documents)
    for budget in (12, 20, 30):
        small = Pipeline(bm25, pruner=pruner, max_tokens=budget, top_k=2).run("scurvy vitamin")
        assert small.tokens == count_tokens(small.text) <= budget
        for d in small.documents:
            assert d.text == pruner.select(d, d.kept).text


def test_pruned_documents_carry_spans(pruner):
    out = pruner.prune("what causes scurvy", [Document(id="a", text=TEXT, title="Health")])[0]
    assert out.spans == tuple(sentence_spans(TEXT))
    assert [TEXT[a:b] for a, b in out.spans] == list(out.sentences)
    assert out.sentence_span(1) == out.spans[1]


def test_one_pass_pipeline_ranks_and_prunes_all_candidates_in_one_call(pruner, toy_docs, monkeypatch):
    from ragprune import BM25Retriever, Pipeline

    bm25 = BM25Retriever.from_documents(toy_docs)
    pipe = Pipeline(bm25, pruner, pruner, candidates=5, top_k=2, max_tokens=10_000)
    assert pipe.one_pass and not Pipeline(bm25, None, pruner).one_pass
    calls = []
    real = type(pruner).prune_many

    def spy(self, queries, docs):
        calls.append([len(d) for d in docs])
        return real(self, queries, docs)

    monkeypatch.setattr(type(pruner), "prune_many", spy)
    monkeypatch.setattr(type(pruner), "rerank_many", lambda *a, **k: pytest.fail("the reranker ran separately"))
    ctx = pipe.run("capital of France")
    assert calls == [[5]]  # one pass over every candidate, no separate rerank
    expected = sorted(real(pruner, ["capital of France"], [bm25.retrieve("capital of France", 5)])[0],
                      key=lambda d: -d.score)[:2]
    assert {d.document.id for d in ctx.documents} == {d.document.id for d in expected}  # the best 2 by rank score
    assert ctx.stats["seconds_prune"] == 0.0 and ctx.stats["seconds_rerank"] > 0
