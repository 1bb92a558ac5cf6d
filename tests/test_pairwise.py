"""PairwiseReranker (PRP): methods, call counts, ties, budgets and bad LLM output."""

from __future__ import annotations

import re

import pytest

from ragprune.rerank.llm import CallableLLM, LLMBackend, LLMReply, LLMResponseError
from ragprune.rerank.pairwise import (
    PROMPTS,
    PRP_PROMPT,
    PairwiseReranker,
    PairwiseResult,
    prp_counts,
)
from ragprune.types import Document


class OracleLLM(LLMBackend):
    """Prefers the passage with the larger 'relevance N' number; counts calls and prompts."""

    name = "oracle"

    def __init__(self, bias: str | None = None, reply: str | None = None) -> None:
        self.calls = 0
        self.prompts: list[str] = []
        self.bias, self.reply = bias, reply

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        self.calls += 1
        self.prompts.append(prompt)
        if self.reply is not None:
            return LLMReply(text=self.reply)
        if self.bias:
            return LLMReply(text=f"Passage {self.bias}", prompt_tokens=10, completion_tokens=2)
        a, b = (int(x) for x in re.findall(r"relevance (\d+)", prompt))
        return LLMReply(text="Passage A" if a > b else "Passage B", prompt_tokens=10, completion_tokens=2)


def docs(values: list[int]) -> list[Document]:
    return [Document(id=f"d{i}", text=f"passage with relevance {v}") for i, v in enumerate(values)]


SHUFFLED = [3, 17, 0, 9, 12, 5, 19, 1, 14, 7, 2, 11, 16, 4, 18, 6, 13, 8, 15, 10]


def relevance(result: PairwiseResult) -> list[int]:
    return [int(d.document.text.split()[-1]) for d in result]


@pytest.mark.parametrize("method", ["sliding", "heapsort", "allpair"])
def test_methods_recover_the_true_top_k(method: str) -> None:
    r = PairwiseReranker(OracleLLM(), method=method, k=5)
    out = r.rerank("q", docs(SHUFFLED))
    assert relevance(out)[:5] == [19, 18, 17, 16, 15]
    assert len(out) == len(SHUFFLED)
    assert sorted(d.id for d in out) == sorted(f"d{i}" for i in range(len(SHUFFLED)))
    assert [d.score for d in out] == sorted((d.score for d in out), reverse=True)
    assert out.stats.method == method and out.stats.candidates == 20 and out.stats.failures == 0


def test_allpair_calls_are_n_times_n_minus_1_with_both_orders() -> None:
    llm = OracleLLM()
    out = PairwiseReranker(llm, method="allpair").rerank("q", docs(SHUFFLED[:8]))
    assert llm.calls == out.stats.llm_calls == 8 * 7 == prp_counts(8, 10, "allpair")["max_calls"]
    assert relevance(out) == sorted(SHUFFLED[:8], reverse=True)
    llm1 = OracleLLM()
    PairwiseReranker(llm1, method="allpair", both_orders=False).rerank("q", docs(SHUFFLED[:8]))
    assert llm1.calls == 8 * 7 // 2


def test_sliding_calls_match_k_passes() -> None:
    n, k = 20, 3
    llm = OracleLLM()
    out = PairwiseReranker(llm, method="sliding", k=k, cache=False).rerank("q", docs(SHUFFLED))
    # pass p compares positions n-2 .. p: (n-1-p) comparisons, two calls each
    assert llm.calls == 2 * sum(n - 1 - p for p in range(k))
    assert llm.calls <= prp_counts(n, k, "sliding")["max_calls"] == 2 * k * (n - 1)
    assert out.stats.comparisons == sum(n - 1 - p for p in range(k))
    assert relevance(out)[:k] == [19, 18, 17]


def test_heapsort_and_sliding_top10_of_100_within_paper_budgets() -> None:
    values = [(i * 37) % 100 for i in range(100)]  # a permutation of 0..99
    for method in ("heapsort", "sliding"):
        llm = OracleLLM()
        out = PairwiseReranker(llm, method=method, k=10).rerank("q", docs(values))
        assert relevance(out)[:10] == list(range(99, 89, -1))
        assert llm.calls <= prp_counts(100, 10, method)["max_calls"]
    heap_calls = PairwiseReranker(OracleLLM(), method="heapsort", k=10).rerank("q", docs(values)).stats.llm_calls
    assert heap_calls < 2 * 100 * 99 // 2 / 5  # far below allpair


def test_cache_avoids_repeated_prompts() -> None:
    llm = OracleLLM()
    out = PairwiseReranker(llm, method="sliding", k=5).rerank("q", docs(SHUFFLED))
    assert len(set(llm.prompts)) == len(llm.prompts) == out.stats.llm_calls
    assert out.stats.cache_hits >= 0


def test_position_bias_becomes_ties_and_keeps_input_order() -> None:
    for method in ("sliding", "heapsort", "allpair"):
        out = PairwiseReranker(OracleLLM(bias="A"), method=method, k=4).rerank("q", docs(SHUFFLED[:6]))
        assert [d.id for d in out] == [f"d{i}" for i in range(6)]
        assert out.stats.disagreements == out.stats.comparisons > 0
        assert out.stats.disagreement_rate == 1.0
    # one order only: the biased answer is taken at face value
    one = PairwiseReranker(OracleLLM(bias="B"), method="allpair", both_orders=False).rerank("q", docs([1, 2, 3]))
    assert [d.id for d in one] == ["d2", "d1", "d0"]


@pytest.mark.parametrize("reply", ["", "   ", "I cannot decide", "Passage A and Passage B", "\x00\ufffd"])
def test_malformed_output_counts_as_tie(reply: str) -> None:
    out = PairwiseReranker(OracleLLM(reply=reply), method="sliding", k=2).rerank("q", docs([1, 5, 3]))
    assert [d.id for d in out] == ["d0", "d1", "d2"]
    assert out.stats.failures == out.stats.llm_calls > 0


def test_backend_response_errors_are_ties_not_crashes() -> None:
    def broken(prompt: str) -> str:
        raise LLMResponseError("garbage")

    out = PairwiseReranker(CallableLLM(broken), method="heapsort", k=2).rerank("q", docs([1, 5, 3]))
    assert len(out) == 3 and out.stats.failures == out.stats.llm_calls

    out2 = PairwiseReranker(CallableLLM(lambda p: 42), method="allpair").rerank("q", docs([1, 2]))  # not a str
    assert out2.stats.failures == 2


def test_other_backend_errors_propagate() -> None:
    def down(prompt: str) -> str:
        raise ConnectionError("server down")

    with pytest.raises(ConnectionError):
        PairwiseReranker(CallableLLM(down)).rerank("q", docs([1, 2]))


def test_max_calls_budget() -> None:
    llm = OracleLLM()
    out = PairwiseReranker(llm, method="allpair", max_calls=7).rerank("q", docs(SHUFFLED[:10]))
    assert llm.calls == 7 == out.stats.llm_calls
    assert out.stats.budget_exhausted and out.stats.failures == 0
    assert len(out) == 10


def test_each_query_gets_its_own_budget_and_stats() -> None:
    llm = OracleLLM()
    r = PairwiseReranker(llm, method="allpair", max_calls=4)
    outs = r.rerank_many(["q1", "q2"], [docs([1, 2, 3]), docs([3, 2, 1])])
    assert [o.stats.llm_calls for o in outs] == [4, 4]
    full = PairwiseReranker(OracleLLM(), method="allpair").rerank("q1", docs([1, 2, 3]))
    assert full.stats.llm_calls == 6 and not full.stats.budget_exhausted


def test_stats_record_tokens_and_time() -> None:
    out = PairwiseReranker(OracleLLM(), method="allpair").rerank("q", docs([1, 2, 3]))
    assert out.stats.prompt_tokens == 10 * out.stats.llm_calls
    assert out.stats.completion_tokens == 2 * out.stats.llm_calls
    assert out.stats.seconds >= 0


def test_k_limits_returned_list_and_edge_cases() -> None:
    r = PairwiseReranker(OracleLLM(), method="heapsort", k=3)
    assert relevance(r.rerank("q", docs(SHUFFLED), k=2)) == [19, 18]
    empty = r.rerank("q", [])
    assert empty == [] and empty.stats.llm_calls == 0
    one = r.rerank("q", ["only passage"])
    assert [d.document.text for d in one] == ["only passage"] and one.stats.llm_calls == 0


def test_prompt_contains_query_and_cut_passages() -> None:
    llm = OracleLLM(reply="Passage A")
    long_doc = Document(id="x", text="relevance 1 " + "word " * 500)
    PairwiseReranker(llm, method="allpair", max_passage_words=20).rerank("what is {this}?", [long_doc, "relevance 2"])
    assert 'Given a query "what is {this}?"' in llm.prompts[0]
    assert len(llm.prompts[0].split()) < 80
    assert llm.prompts[0].rstrip().endswith("Output Passage A or Passage B:")


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_every_named_prompt_ranks_and_is_named_in_repr(name: str) -> None:
    llm = OracleLLM()
    r = PairwiseReranker(llm, method="sliding", k=3, prompt=PROMPTS[name])
    assert relevance(r.rerank("rank these", docs([4, 9, 1, 7])))[:3] == [9, 7, 4]
    assert all("rank these" in p and "Passage A" in p and "Passage B" in p for p in llm.prompts)
    assert (f"prompt={name!r}" in repr(r)) == (PROMPTS[name] != PRP_PROMPT)


def test_custom_prompt_is_told_apart_in_repr() -> None:
    custom = "Q: {query}\nPassage A: {a}\nPassage B: {b}\nWhich one?"
    r1, r2 = (PairwiseReranker(OracleLLM(), prompt=p) for p in (custom, custom + " "))
    assert "prompt='sha256:" in repr(r1) and repr(r1) != repr(r2)


def test_bad_arguments() -> None:
    llm = OracleLLM()
    with pytest.raises(ValueError, match="method"):
        PairwiseReranker(llm, method="bubble")
    with pytest.raises(ValueError, match="k"):
        PairwiseReranker(llm, k=0)
    with pytest.raises(ValueError, match="max_calls"):
        PairwiseReranker(llm, max_calls=0)
    with pytest.raises(TypeError, match="CallableLLM"):
        PairwiseReranker(lambda p: "A")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt"):
        PairwiseReranker(llm, prompt="no placeholders")
    for bad in ('Q {query} A {a} B {b}. JSON {"answer": "A"}', "{query} {a} {b} {extra}", "{query} {a} {b} {}"):
        with pytest.raises(ValueError, match="not a valid template"):
            PairwiseReranker(llm, prompt=bad)
    r = PairwiseReranker(llm)
    with pytest.raises(ValueError, match="empty"):
        r.rerank("  ", ["a"])
    with pytest.raises(TypeError):
        r.rerank("q", "not a list")
    with pytest.raises(ValueError, match="k must be >= 1"):
        r.rerank("q", ["a"], k=0)
    with pytest.raises(ValueError, match="2 queries but 1 candidate lists"):
        r.rerank_many(["q1", "q2"], [["a"]])
    with pytest.raises(TypeError, match="queries must be a list of str"):
        r.rerank_many("q", [["a"]])


def test_prompt_order_reuses_the_previous_passage_a() -> None:
    """Consecutive prompts share Passage A (and so a long cached prefix) when the list is already sorted."""
    llm = OracleLLM()
    PairwiseReranker(llm, method="sliding", k=1).rerank("q", docs([9, 8, 7, 6, 5]))
    first_a = [p.split('Passage A: "')[1].split('"')[0] for p in llm.prompts]
    starts = first_a[2::2]  # first prompt of every comparison after the first
    previous = first_a[1::2][: len(starts)]
    assert starts == previous and len(starts) == 3


class BiasedLogprobLLM(LLMBackend):
    """Always prefers Passage A by a wide margin, but the margin still tracks relevance."""

    name = "biased"

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        raise AssertionError("choose() should be used")

    def choose(self, prompt, labels, *, answer_prefix=""):
        a, b = (int(x) for x in re.findall(r"relevance (\d+)", prompt))
        margin = 3.0 + 0.1 * (a - b)  # logP(A) - logP(B): position bias 3.0 plus a small real signal
        return LLMReply(text="Passage A", label_logprobs={"A": -0.05, "B": -0.05 - margin})


def test_margin_decision_cancels_position_bias() -> None:
    values = [3, 9, 1, 7, 5]
    labels = PairwiseReranker(BiasedLogprobLLM(), method="allpair").rerank("q", docs(values))
    assert [d.id for d in labels] == [f"d{i}" for i in range(5)]  # the paper's rule: all ties
    assert labels.stats.disagreements == labels.stats.comparisons
    margin = PairwiseReranker(BiasedLogprobLLM(), method="allpair", decision="margin").rerank("q", docs(values))
    assert relevance(margin) == [9, 7, 5, 3, 1]
    assert margin.stats.gated == 0  # no gate unless min_margin > 0
    # without logprobs the margin rule falls back to labels
    text_only = PairwiseReranker(OracleLLM(bias="A"), method="allpair", decision="margin").rerank("q", docs(values))
    assert [d.id for d in text_only] == [f"d{i}" for i in range(5)]
    with pytest.raises(ValueError, match="decision"):
        PairwiseReranker(OracleLLM(), decision="vote")


class NoisyLogprobLLM(LLMBackend):
    """Debiased margin = 0.1 * (a - b) for most pairs, but a confident-looking small mistake on
    pairs whose relevance differs by one (the kind of error a gate should filter)."""

    name = "noisy"

    def generate(self, prompt: str, *, max_tokens: int = 32) -> LLMReply:
        raise AssertionError("choose() should be used")

    def choose(self, prompt, labels, *, answer_prefix=""):
        a, b = (int(x) for x in re.findall(r"relevance (\d+)", prompt))
        s = -0.2 * (a - b) if abs(a - b) == 1 else 1.0 * (a - b)  # wrong and weak on close pairs
        return LLMReply(text="Passage A", label_logprobs={"A": -0.1, "B": -0.1 - s / 2})


def test_min_margin_gate_keeps_input_order_on_weak_comparisons() -> None:
    values = [6, 5, 1, 9]  # 6/5 is a close pair the noisy judge gets wrong; the others it gets right
    plain = PairwiseReranker(NoisyLogprobLLM(), method="sliding", k=4, decision="margin").rerank("q", docs(values))
    gated = PairwiseReranker(NoisyLogprobLLM(), method="sliding", k=4, decision="margin",
                             min_margin=0.5).rerank("q", docs(values))
    assert relevance(gated) == [9, 6, 5, 1]  # the weak (|s| = 0.2) wrong swap blocked, strong ones made
    assert relevance(plain) == [9, 5, 6, 1]
    assert gated.stats.gated > 0 and plain.stats.gated == 0
    # a gate higher than any margin returns the input order unchanged
    frozen = PairwiseReranker(NoisyLogprobLLM(), method="heapsort", k=4, decision="margin", min_margin=100)
    assert relevance(frozen.rerank("q", docs(values))) == values
    assert "min_margin=0.5" in repr(PairwiseReranker(NoisyLogprobLLM(), min_margin=0.5))
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValueError, match="min_margin"):
            PairwiseReranker(NoisyLogprobLLM(), min_margin=bad)


def test_pairwise_is_a_list_reranker_not_a_pointwise_scorer() -> None:
    from ragprune.html.prune import HtmlPruner
    from ragprune.rerank.base import Reranker, Scorer

    r = PairwiseReranker(OracleLLM(), method="allpair")
    assert isinstance(r, Reranker) and not isinstance(r, Scorer)
    assert not hasattr(r, "score")  # no inherited score() that refuses to work
    with pytest.raises(ValueError, match="unknown scorer"):
        HtmlPruner(r)  # a block scorer must be pointwise


def test_pairwise_scores_do_not_depend_on_the_input_type() -> None:
    from ragprune.types import ScoredDocument

    plain = PairwiseReranker(OracleLLM(), method="allpair").rerank("q", docs([1, 3, 2]))
    scored = PairwiseReranker(OracleLLM(), method="allpair").rerank(
        "q", [ScoredDocument(d, 100.0 - i) for i, d in enumerate(docs([1, 3, 2]))])
    assert [(h.id, h.score) for h in plain] == [(h.id, h.score) for h in scored]
    assert all(h.model_score == h.score for h in plain + scored)
    assert [h.first_stage_score for h in scored] == [99.0, 98.0, 100.0]  # the scores they arrived with
    assert all(h.first_stage_score is None for h in plain)


def test_a_reranker_subclass_with_the_old_score_method_gets_a_clear_error() -> None:
    from ragprune.rerank.base import PointwiseReranker, Reranker

    with pytest.raises(TypeError, match="subclass PointwiseReranker and implement _score"):
        class Old(Reranker):  # noqa: F841 - the class statement itself raises
            def score(self, queries, docs):
                return [0.0] * len(docs)

    class Pointwise(PointwiseReranker):
        def _score(self, queries, docs):
            return [float(len(d.text)) for d in docs]

    assert [h.id for h in Pointwise().rerank("q", ["a", "ccc", "bb"])] == ["1", "2", "0"]
