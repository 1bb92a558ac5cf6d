import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragprune import BM25Retriever, CrossEncoderReranker, Document, ScoredDocument  # noqa: E402
from ragprune.models import ModelNotFoundError, resolve_model  # noqa: E402


def make_tiny_cross_encoder(path, num_labels=1, seed=0):
    """A 2-layer BERT cross-encoder with random weights and MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=num_labels)
    BertForSequenceClassification(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(resolve_model("minilm"))).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny")


@pytest.fixture(scope="module")
def ce(tiny):
    return CrossEncoderReranker(tiny, batch_size=3)


def test_rerank_sorts_and_cuts(ce, toy_docs):
    hits = BM25Retriever.from_documents(toy_docs).retrieve("capital", k=5)
    out = ce.rerank("capital of France", hits, k=3)
    assert len(out) == 3 and all(isinstance(h, ScoredDocument) for h in out)
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    assert {h.id for h in out} <= {d["_id"] for d in toy_docs}
    assert len(ce.rerank("capital", hits)) == 5  # k=None keeps all


def test_scores_match_direct_model_call(ce, tiny):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    docs = [Document(id="a", title="T", text="some passage"), Document(id="b", text="another one here")]
    got = ce.score(["q one", "q two"], docs)
    tok = AutoTokenizer.from_pretrained(str(tiny))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny)).eval()
    with torch.no_grad():
        ref = model(**tok(["q one", "q two"], ["T some passage", "another one here"], padding=True,
                          return_tensors="pt")).logits[:, 0].tolist()
    assert got == pytest.approx(ref, abs=1e-5)


def test_deterministic_and_batch_equals_single(ce, toy_docs):
    qs = ["capital of France", "cats purring"]
    many = ce.rerank_many(qs, [toy_docs, toy_docs[:3]])
    again = ce.rerank_many(qs, [toy_docs, toy_docs[:3]])
    assert many == again
    for q, docs, hits in zip(qs, [toy_docs, toy_docs[:3]], many):
        single = ce.rerank(q, docs)
        assert [h.id for h in single] == [h.id for h in hits]
        assert [h.score for h in single] == pytest.approx([h.score for h in hits], abs=1e-5)


def test_bad_options(tiny):
    with pytest.raises(ValueError, match="at least 16 tokens"):
        CrossEncoderReranker(tiny, max_length=1)
    with pytest.raises(ValueError, match="unknown device 'bogus'"):
        CrossEncoderReranker(tiny, device="bogus")


def test_score_takes_plain_strings(ce):
    same = {"_id": "s", "text": "Scurvy comes from a lack of vitamin C."}
    assert len(ce.score(["what causes scurvy", "vitamin C"], [same, same])) == 2  # pairs may repeat a document
    assert ce.score(["what causes scurvy"], ["Scurvy comes from a lack of vitamin C."]) == pytest.approx(
        ce.score(["what causes scurvy"], [Document(id="0", text="Scurvy comes from a lack of vitamin C.")]))


def test_empty_candidates_and_plain_strings(ce):
    assert ce.rerank("anything", []) == []
    out = ce.rerank("cats", ["cats purr", "dogs bark"])
    assert sorted(h.id for h in out) == ["0", "1"]


def test_long_passages_are_truncated_not_crashing(ce):
    long = "word " * 20000
    out = ce.rerank("a question " * 400, [long, "short"])
    assert len(out) == 2


@pytest.mark.parametrize("call, exc, msg", [
    (lambda ce: ce.rerank("", ["x"]), ValueError, "query is empty"),
    (lambda ce: ce.rerank("q", ["x"], k=0), ValueError, "k must be >= 1"),
    (lambda ce: ce.rerank("q", "not a list"), TypeError, "docs must be a list"),
    (lambda ce: ce.rerank("q", [3]), TypeError, "document 0 is a int"),
    (lambda ce: ce.rerank_many(["a", "b"], [["x"]]), ValueError, "2 queries but 1 candidate lists"),
    (lambda ce: ce.rerank_many(None, [["x"]]), TypeError, "queries must be a list of str"),
    (lambda ce: ce.rerank_many(["a"], None), TypeError, "one candidate list per query"),
    (lambda ce: ce.score(["a", "b"], ["x"]), ValueError, "2 queries but 1 documents"),
    (lambda ce: ce.score(["a"], [None]), TypeError, "document 0"),
])
def test_bad_input(ce, call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(ce)


def test_two_label_checkpoint_uses_logit_difference(tmp_path):
    path = make_tiny_cross_encoder(tmp_path / "two", num_labels=2)
    ce = CrossEncoderReranker(path)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    with torch.no_grad():
        logits = model(**tok(["q"], ["p"], return_tensors="pt")).logits[0]
    assert ce.score(["q"], [Document(id="x", text="p")])[0] == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)


def test_int8_quantization_runs_and_keeps_scores_close(tiny, ce, toy_docs):
    q8 = CrossEncoderReranker(tiny, quantize="int8")
    a = ce.score(["capital"] * 5, [Document(id=d["_id"], text=d["text"]) for d in toy_docs])
    b = q8.score(["capital"] * 5, [Document(id=d["_id"], text=d["text"]) for d in toy_docs])
    assert b == pytest.approx(a, abs=0.1)
    with pytest.raises(ValueError, match="unknown quantize 'int4'"):
        CrossEncoderReranker(tiny, quantize="int4")


def test_model_errors_name_the_path(tmp_path, tiny):
    with pytest.raises(ModelNotFoundError, match="no model folder at .*missing"):
        CrossEncoderReranker(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty is not a Hugging Face checkpoint folder"):
        CrossEncoderReranker(tmp_path / "empty")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        CrossEncoderReranker(bad)
    broken = tmp_path / "noweights"
    broken.mkdir()
    (broken / "config.json").write_text((tiny / "config.json").read_text())
    with pytest.raises(ValueError, match="could not load a sequence-classification model from .*noweights"):
        CrossEncoderReranker(broken)


def test_remote_code_is_never_trusted_implicitly(tmp_path):
    path = make_tiny_cross_encoder(tmp_path / "remote")
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "evil.Model"}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pass trust_remote_code=True"):
        CrossEncoderReranker(path)


def test_wrong_number_of_outputs(tmp_path):
    with pytest.raises(ValueError, match="has 3 outputs"):
        CrossEncoderReranker(make_tiny_cross_encoder(tmp_path / "three", num_labels=3))


def test_first_stage_fusion(tiny):
    from ragprune.rerank.base import fuse_scores

    assert fuse_scores([0.0, 10.0], [4.0, 2.0], 0.5) == pytest.approx([0.5, 0.5])
    assert fuse_scores([1.0, 3.0, 2.0], [0.0, 0.0, 0.0], 0.0) == pytest.approx([0.0, 1.0, 0.5])
    # a non-finite first-stage score neither poisons the others nor wins by NaN ordering
    assert fuse_scores([0.0, 1.0, 2.0], [1.0, float("-inf"), 3.0], 0.5) == pytest.approx([0.0, 0.25, 1.0])
    assert fuse_scores([0.0, 1.0], [float("nan"), float("inf")], 0.5) == pytest.approx([0.0, 1.0])
    hits = [ScoredDocument(Document(id=i, text=f"passage {i}"), s) for i, s in (("a", 10.0), ("b", 5.0), ("c", 0.0))]
    all_first = CrossEncoderReranker(tiny, first_stage_weight=1.0).rerank("q", hits)
    assert [h.id for h in all_first] == ["a", "b", "c"]
    assert [h.score for h in all_first] == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="first_stage_weight must be <= 1"):
        CrossEncoderReranker(tiny, first_stage_weight=2)
    with pytest.raises(ValueError, match="unknown first_stage_weight 'tuned'"):
        CrossEncoderReranker(tiny, first_stage_weight="tuned")


def test_score_meaning_does_not_change_with_the_input_type(ce, toy_docs):
    """Without fusion (the default) a ScoredDocument and a plain Document get the same score: the
    model's own; the first-stage score is reported beside it, never mixed in."""
    docs = [Document(id=d["_id"], text=d["text"], title=d.get("title", "")) for d in toy_docs]
    plain = ce.rerank("capital of France", docs)
    scored = ce.rerank("capital of France", [ScoredDocument(d, 100.0 - i) for i, d in enumerate(docs)])
    assert ce.first_stage_weight == 0.0
    assert [(h.id, h.score) for h in plain] == [(h.id, h.score) for h in scored]
    assert all(h.model_score == h.score for h in plain + scored)
    assert all(h.first_stage_score is None for h in plain)
    assert {h.id: h.first_stage_score for h in scored} == {d.id: 100.0 - i for i, d in enumerate(docs)}
    direct = ce.score(["capital of France"] * len(docs), docs)
    assert {h.id: h.model_score for h in plain} == pytest.approx({d.id: s for d, s in zip(docs, direct)})


def test_fusion_is_explicit_and_keeps_the_model_score(tiny, ce):
    docs = [Document(id=i, text=f"passage about {i}") for i in ("a", "b", "c", "d")]
    hits = [ScoredDocument(d, s) for d, s in zip(docs, (4.0, 3.0, 2.0, 1.0))]
    fused = CrossEncoderReranker(tiny, first_stage_weight=0.5)
    out = fused.rerank("q", hits)
    model = dict(zip("abcd", fused.score(["q"] * 4, docs)))
    lo, hi = min(model.values()), max(model.values())
    for h in out:
        assert h.model_score == pytest.approx(model[h.id], abs=1e-6)
        expect = 0.5 * (h.model_score - lo) / (hi - lo) + 0.5 * (h.first_stage_score - 1.0) / 3.0
        assert h.score == pytest.approx(expect, abs=1e-5)
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    # fusing needs first-stage scores: plain candidates are an error, not a silent switch of meaning
    for bad in (docs, ["passage a", "passage b"], [hits[0], docs[1]]):
        with pytest.raises(ValueError, match="first_stage_weight=0.5 fuses .* pass ScoredDocument candidates"):
            fused.rerank("q", bad)
    assert fused.rerank("q", []) == []


def test_recommended_fusion_weight_comes_from_the_checkpoint(tmp_path):
    path = make_tiny_cross_encoder(tmp_path / "rec")
    assert CrossEncoderReranker(path, first_stage_weight="recommended").first_stage_weight == 0.0  # no ragprune.json
    (path / "ragprune.json").write_text(json.dumps({"first_stage_weight": 0.3}))
    assert CrossEncoderReranker(path).first_stage_weight == 0.0  # the default never fuses
    assert CrossEncoderReranker(path, first_stage_weight="recommended").first_stage_weight == 0.3
    with pytest.warns(DeprecationWarning, match="first_stage_weight=None is deprecated"):
        assert CrossEncoderReranker(path, first_stage_weight=None).first_stage_weight == 0.3


def test_cross_encoder_is_both_scorer_and_reranker(ce):
    from ragprune.rerank.base import PointwiseReranker, Reranker, Scorer

    assert isinstance(ce, Scorer) and isinstance(ce, Reranker) and isinstance(ce, PointwiseReranker)
    assert ce.score([], []) == []
