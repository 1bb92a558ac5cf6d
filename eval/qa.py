"""End-to-end RAG evaluation: does a reader LLM still answer correctly from the trimmed context?

    python -m eval.qa --dataset all --limit 100 --llm qwen2.5-1.5b \\
        --llm-cache eval/results/qa_cache.jsonl --json eval/results/qa_all_100.json --plot eval/results/qa_all_100.png

(about 2,100 reader calls, 0.9M prompt tokens; see eval/README.md for times.
Interrupt and rerun the same command to resume: answers already in ``--llm-cache`` are reused.
An existing ``--json`` file written by a run with other settings is not replaced (exit code 2,
before any reader call) unless ``--force`` is given; see eval/common.py. The older option names
``--questions``, ``--reader``, ``--reader-backend`` and ``--cache`` still work.
On a machine whose cores are busy with other work, ``--threads 1`` can be much faster than
llama.cpp's default of one thread per core.)

Every question is answered by the same reader LLM from the context each strategy builds; the
answer is scored against the gold answers (SQuAD-style EM and F1). Pruning quality is then
measured where it matters: the reader's accuracy per context token.

Question sets (fixed seed ``--seed``, default 0; the held-out splits of
:mod:`eval.pruning_data`, never seen by the shipped Provence model):

- ``squad``: SQuAD v1.1 dev, articles 32-39 (1,746 questions), a seeded sample of
  ``--limit``. Candidates: the gold paragraph + the 4 BM25-nearest other paragraphs of the
  same article (hard distractors), in a seeded per-question shuffle (so "first" is not "gold").
- ``hotpotqa``: HotpotQA dev distractor questions 58-72 (only 15 are held out: Provence was
  trained on 0-57; ``--hotpot-split all`` uses all 73, contaminated for Provence). Candidates:
  the question's 10 paragraphs in the given order.
- ``wtq``: WikiTableQuestions test questions on real Wikipedia pages
  (``wikitablequestions_html``), seeded shuffle, keeping the first ``--limit`` whose
  answer (every value of it) is in the cleaned page text (as eval/html.py does: computed
  answers such as counts cannot be found by pruning). Multi-value answers are scored as one
  string, values joined with ", ".
- ``custom`` (``--qa-file F.jsonl``): one JSON object per line, ``{"id", "question",
  "answers": [...], "passages": [{"title", "text"} or {"title", "sentences": [...],
  "labels": [0/1, ...]}]}``; passages keep their order.

Strategies (``--strategies``; families not applicable to a dataset are skipped):

- ``full``: every candidate, unpruned. Passages are shown as ``[n] title`` + text blocks (the
  :class:`~ragprune.pipeline.Pipeline` format) for every strategy. WTQ: the whole cleaned
  page text (tables as ``cell | cell`` rows).
- ``oracle``: the gold sentences only (upper bound for pruning; SQuAD/HotpotQA/custom).
- ``lead``, ``random``, ``bm25``, ``minilm-cosine``: the sentence-scoring baselines of
  eval/pruning.py (built by its ``build_methods``, same sentence segmentation). With
  ``--baseline-compression provence`` (default) each baseline's threshold is set on the same
  questions so its token compression matches Provence's at the reference threshold (0.1 when
  in ``--thresholds``; 50% when Provence is missing), i.e. they are compared at equal
  context size. ``natural`` uses their default settings instead (lead-2, random 50%, BM25 >= 1,
  cosine >= 0.3); a number gives that target compression.
- ``provence``: ``ProvencePruner`` (``--provence``, default the shipped model) at each of
  ``--thresholds``; skipped with a message if the model is missing.
- ``pipeline``: the full :class:`~ragprune.pipeline.Pipeline`: BM25 over the question's
  candidates -> optional reranker (``--rerank cross-encoder``) -> ProvencePruner
  (``--pipeline-threshold``, 0.1) -> token budget, at each of ``--budgets``. ``--pipeline-backfill``
  picks the Pipeline's ``backfill`` (``all``, the default, named ``pipeline@N``;
  ``kept-documents``, named ``pipeline-kept@N``; ``none``, ``pipeline-strict@N``); several can run at once.
- ``first-n``: the first N tokens of the retrieved documents (the same BM25 order, reranked
  when ``--rerank`` is set), concatenated in that order and cut at N, at each of ``--budgets``.
- ``html-bm25``, ``html-dense``, ``html-provence`` (WTQ): the real page HTML pruned by
  ``HtmlPruner`` (BM25 / MiniLM / Provence block scores, 64-word blocks) to each of
  ``--budgets`` text tokens (``budget_on="text"``), shown to the reader as the pruned page's
  text, like ``first-n`` (first N tokens of the page text).

Tokens are counted with :func:`ragprune.text.count_tokens` (words and punctuation) for every
budget and figure. The reader's window: a context longer than ``--max-context-tokens``
(default 80% of ``--reader-ctx``, 4096) is cut at a word boundary; if the backend still
reports the prompt too long (its BPE tokens outnumber ours, e.g. digits in tables), the
context is cut again in proportion to the reported overflow (up to 3 times). Cut contexts are
counted (``cut_to_window``); this mostly hits WTQ ``full``.

Reader: greedy (temperature 0) generation of at most ``--answer-tokens`` (32) tokens through
:func:`ragprune.rerank.llm.load_llm` (``--llm-backend auto``: in-process llama.cpp for
GGUF files), one user message::

    Answer the question using only the context. Reply with a short answer only (a few words).

    Context:
    {context}

    Question: {question}
    Answer:

Answer extraction: the first line that is non-empty after cleaning, where cleaning strips
whitespace, a leading answer label (``Answer:``, ``Final answer:``, ``Short answer -``, ``The
correct answer is:``; a colon or dash is required), surrounding quotes, backticks and ``*``
(markdown bold) and one trailing period, repeatedly. A line that is only a label ("The answer
is:") is skipped; "The answer is Paris" (no colon) is kept whole and scores partial F1. An empty
result (or a reply the backend could not parse) scores zero and counts in ``empty_answers``.
Replies are cached in ``--llm-cache`` (JSONL, one line per answer) keyed by (reader, strategy,
question id, context hash: sha256 of the full prompt and the generation settings); a rerun
or a resumed run only calls the reader for new prompts, and identical prompts built by two
strategies are read once. Answers are re-extracted from the stored raw reply when scoring.
Questions are read one after the other with all their strategies in a row, so llama.cpp's
prompt cache skips shared prefixes (e.g. ``first-n@512`` extends ``first-n@256``).

Metrics per (dataset, strategy): ``em`` and ``f1`` (the official SQuAD v1.1 script: lowercase,
punctuation and articles a/an/the removed, whitespace collapsed; max over the gold answers),
``answer_in_context`` (a gold answer occurs as whole words in the context the reader saw,
both lowercased, every non-alphanumeric character turned into a space, articles dropped), ``context_tokens`` (mean), ``compression`` (1 - total context
tokens / total tokens of the uncut ``full`` contexts), ``reader_seconds`` and
``prune_seconds`` (per question; reader time is the one recorded when the answer was
generated, also for cached answers), ``empty_answers``, ``reader_errors``, ``cut_to_window``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.util
import json
import random
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from eval.common import (
    PUBLISHED_BM25,
    add_limit_arg,
    add_llm_args,
    add_output_args,
    add_shared_arg,
    outputs_refused,
    save_results,
)
from eval.pruning_data import (
    LabelledPassage,
    PruningQuestion,
    join_sentences,
    load_pruning_set,
)
from ragprune.text import count_tokens, sentence_spans
from ragprune.types import Document

from .pruning import build_methods, score_with

PROMPT = ("Answer the question using only the context. Reply with a short answer only (a few words).\n\n"
          "Context:\n{context}\n\nQuestion: {question}\nAnswer:")
DATASETS = ("squad", "hotpotqa", "wtq")
SENTENCE_BASELINES = ("lead", "random", "bm25", "minilm-cosine")
HTML_FAMILIES = ("html-bm25", "html-dense", "html-provence")
FAMILIES = ("full", "oracle", *SENTENCE_BASELINES, "provence", "pipeline", "first-n", *HTML_FAMILIES)
DEFAULT_FAMILIES = ("full", "oracle", *SENTENCE_BASELINES, "provence", "pipeline", "first-n", "html-bm25")
PASSAGE_FAMILIES = ("full", "oracle", *SENTENCE_BASELINES, "provence", "pipeline", "first-n")
WTQ_FAMILIES = ("full", "first-n", *HTML_FAMILIES)
BACKFILL = {"all": True, "kept-documents": "kept-documents", "none": False}  # --pipeline-backfill -> Pipeline(backfill=)
PIPELINE_NAMES = {"all": "pipeline", "kept-documents": "pipeline-kept", "none": "pipeline-strict"}
SUBSETS = {
    "squad": "SQuAD v1.1 dev articles 32-39 (held out), seeded sample; gold paragraph + 4 BM25-nearest "
             "paragraphs of the same article, seeded shuffle",
    "hotpotqa": "HotpotQA dev distractor questions 58-72 (held out); their 10 paragraphs",
    "hotpotqa-all": "HotpotQA dev distractor questions 0-72 (0-57 were Provence training data); their 10 paragraphs",
    "wtq": "WikiTableQuestions test questions on real Wikipedia pages, seeded shuffle, first N whose answer "
           "is in the cleaned page text",
    "custom": "questions from --qa-file",
}


# ----------------------------------------------------------------------------------------
# Metrics (the official SQuAD v1.1 evaluation script's normalization, EM and F1)


def normalize_answer(s: str) -> str:
    """Lowercase, remove punctuation, articles (a/an/the) and extra whitespace (SQuAD v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


_PUNCT = frozenset(string.punctuation)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 between one prediction and one gold answer (after normalization)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals a normalized gold answer; empty scores 0."""
    if not prediction.strip():
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def f1(prediction: str, answers: Sequence[str]) -> float:
    """Max token F1 over the gold answers; an empty prediction scores 0."""
    if not prediction.strip():
        return 0.0
    return max((f1_score(prediction, a) for a in answers), default=0.0)


def answer_in_context(context: str, answers: Sequence[str], *, require_all: bool = False) -> bool:
    """A gold answer occurs in the context as whole words.

    Both sides are lowercased, every non-alphanumeric character (Unicode dashes and
    apostrophes included) becomes a space and the articles a/an/the are dropped, so
    ``Wang Zhen`` is found in ``Wang Zhen's`` but ``cat`` is not in ``concatenate``.
    ``require_all``: every answer must occur (WTQ answers that are lists of values).
    """
    ctx = f" {_words(context)} "
    found = [f" {g} " in ctx for g in (_words(a) for a in answers) if g]
    if not found:
        return False
    return all(found) if require_all else any(found)


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def _words(s: str) -> str:
    return " ".join(_ARTICLES.sub(" ", _NON_WORD.sub(" ", s.lower())).split())


_LABEL = re.compile(r"^(?:the\s+)?(?:(?:final|short|correct)\s+)?answer(?:\s+is)?\s*[:\-]\s*", re.IGNORECASE)
_QUOTES = "\"'`*\u201c\u201d\u2018\u2019 \t"


def extract_answer(text: Any) -> str:
    """The answer in a reply: the first line that is non-empty once cleaned (module docstring)."""
    if not isinstance(text, str):
        return ""
    for line in text.splitlines():
        s = line.strip()
        while True:
            t = _LABEL.sub("", s, count=1).strip().strip(_QUOTES).strip()
            if t.endswith(".") and not t.endswith(".."):
                t = t[:-1].rstrip()
            if t == s:
                break
            s = t
        if s:
            return s
    return ""


# ----------------------------------------------------------------------------------------
# Text helpers

_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)  # ragprune.text.count_tokens' tokens


def truncate_tokens(text: str, max_tokens: int) -> str:
    """Longest prefix of ``text`` with at most ``max_tokens`` tokens (count_tokens), cut after a token."""
    if max_tokens <= 0:
        return ""
    for i, m in enumerate(_TOKEN_RE.finditer(text), 1):
        if i == max_tokens:
            return text[: m.end()]
    return text


def block(doc: Document, text: str) -> str:
    """One passage as the Pipeline shows it: ``[id] title`` then the text."""
    return f"{f'[{doc.id}] {doc.title}'.rstrip()}\n{text}"


# ----------------------------------------------------------------------------------------
# Question sets


@dataclass
class Item:
    """One question: passages (SQuAD/HotpotQA/custom) or a page (WTQ)."""

    id: str
    question: str
    answers: tuple[str, ...]
    all_parts: bool = False  # WTQ: the answer is the list of all values
    pq: PruningQuestion | None = None
    page: str = ""

    @property
    def golds(self) -> tuple[str, ...]:
        return (", ".join(self.answers),) if self.all_parts else self.answers


@dataclass
class QASet:
    name: str
    items: list[Item]
    subset: str
    pages: dict[str, bytes] = field(default_factory=dict)  # WTQ page html
    page_text: dict[str, str] = field(default_factory=dict)  # WTQ cleaned page text
    scanned: int = 0


def _renumber(q: PruningQuestion, order: Sequence[int]) -> PruningQuestion:
    ps = tuple(replace(q.passages[j], document=replace(q.passages[j].document, id=str(k + 1)))
               for k, j in enumerate(order))
    return replace(q, passages=ps)


def _item(q: PruningQuestion) -> Item:
    return Item(q.id, q.query, tuple(q.answers), pq=q)


def load_squad(shared: Path, n: int, seed: int) -> QASet:
    qs = load_pruning_set(shared, "squad", "heldout", passages=5, limit=n, seed=seed)
    out = []
    for q in qs:
        order = list(range(len(q.passages)))
        random.Random(f"{seed}|{q.id}").shuffle(order)
        out.append(_item(_renumber(q, order)))
    return QASet("squad", out, SUBSETS["squad"])


def load_hotpot(shared: Path, n: int, seed: int, split: str = "heldout") -> QASet:
    if split == "all":
        qs = load_pruning_set(shared, "hotpotqa", "train") + load_pruning_set(shared, "hotpotqa", "heldout")
        if n < len(qs):
            qs = random.Random(seed).sample(qs, n)
    else:
        qs = load_pruning_set(shared, "hotpotqa", "heldout", limit=n, seed=seed)
    items = [_item(_renumber(q, range(len(q.passages)))) for q in qs]
    return QASet("hotpotqa", items, SUBSETS["hotpotqa-all" if split == "all" else "hotpotqa"])


def page_text(html: bytes) -> str:
    """The cleaned page's readable text (HtmlPruner's cleaning; table cells joined by ``|``)."""
    from ragprune.html.blocktree import element_text
    from ragprune.html.prune import HtmlPruner

    return element_text(HtmlPruner().blocks(html)[0])


def load_wtq(shared: Path, n: int, seed: int) -> QASet:
    folder = shared / "wikitablequestions_html"
    path = folder / "questions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (WikiTableQuestions pages; see shared/data/INDEX-qa-html.md).")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    qa = QASet("wtq", [], SUBSETS["wtq"])
    for r in rows:
        if len(qa.items) >= n:
            break
        qa.scanned += 1
        page = r["page_html"]
        if page not in qa.pages:
            qa.pages[page] = (folder / page).read_bytes()
            qa.page_text[page] = page_text(qa.pages[page])
        answers = tuple(a for a in r["answers"] if a.strip())
        if answers and answer_in_context(qa.page_text[page], answers, require_all=True):
            qa.items.append(Item(r["id"], r["question"], answers, all_parts=len(answers) > 1, page=page))
    return qa


def load_custom(path: Path, n: int) -> QASet:
    items = []
    for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            ps = []
            for k, p in enumerate(r["passages"]):
                if "sentences" in p:
                    text, spans = join_sentences(p["sentences"])
                    labels = tuple(int(x) for x in p.get("labels", [0] * len(spans)))
                else:
                    text = p["text"]
                    spans, labels = tuple(sentence_spans(text)), None
                labels = labels if labels is not None and len(labels) == len(spans) else (0,) * len(spans)
                ps.append(LabelledPassage(Document(id=str(k + 1), title=p.get("title", ""), text=text), spans, labels))
            q = PruningQuestion(r["question"], tuple(ps), tuple(r["answers"]), str(r.get("id", ln)))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{ln}: not a valid question ({type(e).__name__}: {e}); see the module docstring.") from e
        items.append(_item(q))
    return QASet("custom", items[:n], SUBSETS["custom"])


def load_set(name: str, args: argparse.Namespace) -> QASet:
    if name == "squad":
        return load_squad(args.shared, args.limit, args.seed)
    if name == "hotpotqa":
        return load_hotpot(args.shared, args.limit, args.seed, args.hotpot_split)
    if name == "wtq":
        return load_wtq(args.shared, args.limit, args.seed)
    return load_custom(args.qa_file, args.limit)


# ----------------------------------------------------------------------------------------
# Strategies: one context string per question


@dataclass
class Strategy:
    name: str
    family: str
    param: float | None
    contexts: list[str]
    prune_seconds: float = 0.0  # per question
    info: dict[str, Any] = field(default_factory=dict)


Scores = list[list[np.ndarray]]


def sentence_contexts(qs: Sequence[PruningQuestion], scores: Scores, threshold: float) -> list[str]:
    """Per question: the passages that keep a sentence, each with its sentences >= threshold."""
    out = []
    for q, qsc in zip(qs, scores):
        blocks = []
        for p, s in zip(q.passages, qsc):
            kept = [p.document.text[a:b] for (a, b), v in zip(p.spans, s) if v >= threshold]
            if kept:
                blocks.append(block(p.document, " ".join(kept)))
        out.append("\n\n".join(blocks))
    return out


def full_contexts(qs: Sequence[PruningQuestion]) -> list[str]:
    return ["\n\n".join(block(p.document, p.document.text) for p in q.passages) for q in qs]


def sentence_tokens(qs: Sequence[PruningQuestion]) -> list[list[np.ndarray]]:
    return [[np.array([count_tokens(p.document.text[a:b]) for a, b in p.spans], dtype=float) for p in q.passages]
            for q in qs]


def compression_at(scores: Scores, tokens: list[list[np.ndarray]], threshold: float) -> float:
    """Share of sentence tokens dropped at ``threshold`` (eval/pruning.py's compression)."""
    kept = sum(float(t[s >= threshold].sum()) for qs, qt in zip(scores, tokens) for s, t in zip(qs, qt))
    total = sum(float(t.sum()) for qt in tokens for t in qt)
    return 1 - kept / total if total else 0.0


def match_threshold(scores: Scores, tokens: list[list[np.ndarray]], target: float) -> tuple[float, float]:
    """The threshold whose token compression is closest to ``target``: ``(threshold, compression)``."""
    flat_s = np.concatenate([s for qs in scores for s in qs] or [np.zeros(0)])
    flat_t = np.concatenate([t for qt in tokens for t in qt] or [np.zeros(0)])
    total = float(flat_t.sum())
    if not len(flat_s) or total <= 0:
        return 0.0, 0.0
    order = np.argsort(-flat_s, kind="stable")
    s, cum = flat_s[order], np.cumsum(flat_t[order])
    last = np.r_[s[1:] != s[:-1], True]  # the last sentence of each group of tied scores
    comp = 1 - cum[last] / total
    i = int(np.argmin(np.abs(comp - target)))
    return float(s[last][i]), float(comp[i])


class _Memo:
    """Calls ``fn`` once per key (the Pipeline runs at several budgets on the same input)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.memo, self.seconds, self.last_seconds = fn, {}, {}, 0.0

    def __call__(self, key: Any, *args: Any) -> Any:
        if key not in self.memo:
            t = time.perf_counter()
            self.memo[key] = self.fn(*args)
            self.seconds[key] = time.perf_counter() - t
        self.last_seconds = self.seconds[key]
        return self.memo[key]


def _ids(docs: Sequence[Sequence[Any]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(getattr(d, "document", d).id for d in ds) for ds in docs)


class MemoPruner:
    def __init__(self, pruner: Any) -> None:
        self.pruner = pruner
        self.call = _Memo(pruner.prune_many)

    def prune_many(self, queries: Sequence[str], docs: Sequence[Sequence[Any]]) -> Any:
        return self.call((tuple(queries), _ids(docs)), queries, docs)


class MemoReranker:
    def __init__(self, reranker: Any) -> None:
        self.reranker = reranker
        self.call = _Memo(reranker.rerank_many)

    def rerank_many(self, queries: Sequence[str], docs: Sequence[Sequence[Any]], k: int | None = None) -> Any:
        return self.call((tuple(queries), _ids(docs), k), queries, docs, k)


class Resources:
    """Models built on first use and shared by every dataset; a missing one is skipped once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.factories = method_factories(args)
        self.made: dict[str, Any] = {}
        self.failed: set[str] = set()

    def get(self, name: str) -> Any | None:
        if name in self.made:
            return self.made[name]
        if name in self.failed:
            return None
        try:
            if name == "cross-encoder":
                from ragprune.rerank.cross_encoder import CrossEncoderReranker

                inst = CrossEncoderReranker(first_stage_weight="recommended")  # fused with BM25, as published
            elif name in ("html-bm25", "html-dense"):
                from ragprune.html.prune import HtmlPruner

                inst = HtmlPruner(name.split("-")[1], budget_on="text", max_node_words=64)
            elif name == "html-provence":
                from ragprune.html.prune import HtmlPruner

                prov = self.get("provence")
                if prov is None:
                    raise FileNotFoundError("the Provence model is not available")
                inst = HtmlPruner(prov, budget_on="text", max_node_words=64)
            elif name in self.factories:
                inst = self.factories[name]()
            elif name == "provence":
                raise ValueError("--provence none")
            else:
                raise ValueError(f"no builder for {name!r}")
        except (FileNotFoundError, ValueError, ImportError) as e:
            print(f"eval.qa: skipping {name}: {e}", file=sys.stderr)
            self.failed.add(name)
            return None
        self.made[name] = inst
        return inst


def method_factories(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """Sentence scorers and the Provence pruner, exactly as eval/pruning.py builds them."""
    return build_methods(args)


def _timed_scores(method: Any, qs: list[PruningQuestion]) -> tuple[Scores, float]:
    t = time.perf_counter()
    scores = score_with(method, qs)
    return scores, (time.perf_counter() - t) / max(1, len(qs))


def passage_strategies(qa: QASet, families: Sequence[str], res: Resources, args: argparse.Namespace
                       ) -> tuple[list[Strategy], dict[str, Any]]:
    from ragprune.pipeline import Pipeline
    from ragprune.retrieve.bm25 import BM25Retriever

    qs = [it.pq for it in qa.items]
    assert all(q is not None for q in qs)
    tokens = sentence_tokens(qs)
    out: list[Strategy] = []
    info: dict[str, Any] = {}
    if "full" in families:
        out.append(Strategy("full", "full", None, full_contexts(qs)))
    if "oracle" in families:
        gold = [[np.asarray(p.labels, float) for p in q.passages] for q in qs]
        out.append(Strategy("oracle", "oracle", None, sentence_contexts(qs, gold, 0.5),
                            info={"compression_sentences": compression_at(gold, tokens, 0.5)}))
    need = {"provence", "pipeline"} & set(families) or (
        args.baseline_compression == "provence" and set(SENTENCE_BASELINES) & set(families))
    provence = res.get("provence") if need else None
    target = 0.5
    info["reference"] = "50% compression"
    if provence is not None:
        scores, sec = _timed_scores(provence, qs)
        ref = 0.1 if 0.1 in args.thresholds else args.thresholds[0]
        target = compression_at(scores, tokens, ref)
        info["reference"] = f"provence threshold {ref:g}"
        if "provence" in families:
            for t in args.thresholds:
                out.append(Strategy(f"provence@{t:g}", "provence", t, sentence_contexts(qs, scores, t), sec,
                                    {"threshold": t, "compression_sentences": compression_at(scores, tokens, t)}))
    if args.baseline_compression == "natural":
        info["reference"] = "natural settings (lead-2, random 50%, BM25 >= 1, cosine >= 0.3)"
    else:
        if args.baseline_compression != "provence":
            target = float(args.baseline_compression)
            info["reference"] = f"target compression {target:g}"
        info["reference_compression"] = target
    for name in (f for f in SENTENCE_BASELINES if f in families):
        method = res.get(name)
        if method is None:
            continue
        scores, sec = _timed_scores(method, qs)
        if args.baseline_compression == "natural":
            thr, comp = method.threshold, compression_at(scores, tokens, method.threshold)
        else:
            thr, comp = match_threshold(scores, tokens, target)
        out.append(Strategy(name, name, None, sentence_contexts(qs, scores, thr), sec,
                            {"threshold": thr, "compression_sentences": comp}))
    if not set(SENTENCE_BASELINES) & set(families):  # nothing was matched: no reference to report
        info = {}
    if not {"pipeline", "first-n"} & set(families):
        return out, info
    reranker = None
    if args.rerank != "none":
        base = res.get(args.rerank)
        reranker = MemoReranker(base) if base is not None else None
    pruner = None
    if "pipeline" in families and provence is not None:
        p = copy.copy(provence)
        p.threshold = args.pipeline_threshold
        pruner = MemoPruner(p)
    modes = args.pipeline_backfill
    pipe_ctx: dict[tuple[str, int], list[str]] = {(m, b): [] for m in modes for b in args.budgets}
    pipe_sec: dict[tuple[str, int], float] = {(m, b): 0.0 for m in modes for b in args.budgets}
    first_ctx: dict[int, list[str]] = {b: [] for b in args.budgets}
    first_sec = 0.0
    for q in qs:
        t = time.perf_counter()
        docs = [p.document for p in q.passages]
        retriever = BM25Retriever.from_documents(docs, **PUBLISHED_BM25)
        build = time.perf_counter() - t
        if pruner is not None:
            for m, b in pipe_ctx:
                pipe = Pipeline(retriever, reranker, pruner, max_tokens=b, candidates=len(docs), top_k=len(docs),
                                backfill=BACKFILL[m])
                ctx = pipe.run(q.query)
                st = ctx.stats
                pipe_sec[m, b] += (build + st["seconds_retrieve"] + st["seconds_budget"] + pruner.call.last_seconds
                                   + (reranker.call.last_seconds if reranker is not None else 0.0))
                pipe_ctx[m, b].append(ctx.text)
        if "first-n" in families:
            t = time.perf_counter()
            hits = retriever.retrieve(q.query, k=len(docs))
            rr = 0.0
            if reranker is not None:
                hits = reranker.rerank_many([q.query], [hits], k=len(docs))[0]
                rr = reranker.call.last_seconds
            text = "\n\n".join(block(h.document, h.document.text) for h in hits)
            first_sec += build + rr + time.perf_counter() - t
            for b in args.budgets:
                first_ctx[b].append(truncate_tokens(text, b))
    n = max(1, len(qs))
    if pruner is not None:
        out += [Strategy(f"{PIPELINE_NAMES[m]}@{b}", PIPELINE_NAMES[m], b, ctx, pipe_sec[m, b] / n,
                         {"budget": b, "threshold": args.pipeline_threshold, "rerank": args.rerank, "backfill": m})
                for (m, b), ctx in pipe_ctx.items()]
    if "first-n" in families:
        out += [Strategy(f"first-n@{b}", "first-n", b, first_ctx[b], first_sec / n, {"budget": b, "rerank": args.rerank})
                for b in args.budgets]
    return out, info


def wtq_strategies(qa: QASet, families: Sequence[str], res: Resources, args: argparse.Namespace
                   ) -> tuple[list[Strategy], dict[str, Any]]:
    from tqdm import tqdm

    full = [qa.page_text[it.page] for it in qa.items]
    out: list[Strategy] = []
    if "full" in families:
        out.append(Strategy("full", "full", None, full))
    for fam in (f for f in HTML_FAMILIES if f in families):
        pruner = res.get(fam)
        if pruner is None:
            continue
        ctx: dict[int, list[str]] = {b: [] for b in args.budgets}
        errors = 0
        t = time.perf_counter()
        for it in tqdm(qa.items, desc=f"wtq {fam}", leave=False):
            for b in args.budgets:
                try:
                    ctx[b].append(pruner.prune(it.question, qa.pages[it.page], max_tokens=b).text)
                except Exception as e:  # noqa: BLE001 - a failed page is an empty context, counted
                    errors += 1
                    ctx[b].append("")
                    print(f"eval.qa: {fam} failed on {it.id} at {b}: {type(e).__name__}: {e}", file=sys.stderr)
        sec = (time.perf_counter() - t) / max(1, len(qa.items)) / len(args.budgets)
        out += [Strategy(f"{fam}@{b}", fam, b, ctx[b], sec, {"budget": b, "prune_errors": errors})
                for b in args.budgets]
    if "first-n" in families:
        out += [Strategy(f"first-n@{b}", "first-n", b, [truncate_tokens(t, b) for t in full], 0.0, {"budget": b})
                for b in args.budgets]
    return out, {"pages": len(qa.pages), "questions_scanned": qa.scanned}


# ----------------------------------------------------------------------------------------
# Reader, cache


def resolve_backend(spec: str, backend: str) -> str:
    """The backend ``load_llm`` will use, checking that a local model exists (no loading)."""
    from ragprune.rerank.llm import resolve_gguf

    if spec.startswith("callable:"):
        return "callable"
    if backend == "openai" or (backend == "auto" and re.match(r"^https?://", spec)):
        return "openai"
    path = resolve_gguf(spec, "eval.qa")
    if backend != "auto":
        return backend
    if path.suffix == ".gguf" and importlib.util.find_spec("xllamacpp") is not None:
        return "llamacpp"
    return "transformers"


def load_reader(spec: str, backend: str, args: argparse.Namespace) -> Any:
    """The reader backend; ``callable:module:function`` wraps ``function(prompt) -> str`` (tests)."""
    from ragprune.rerank.llm import CallableLLM, load_llm

    if backend == "callable":
        _, module, fn = spec.split(":", 2)
        return CallableLLM(getattr(importlib.import_module(module), fn), name=spec)
    kw: dict[str, Any] = {}
    if backend == "llamacpp":
        kw["n_ctx"] = args.reader_ctx
        if args.llm_threads or args.threads:
            kw["threads"] = args.llm_threads or args.threads
    elif backend == "transformers":
        kw["max_input_tokens"] = args.reader_ctx
    elif backend == "openai" and args.llm_model:
        kw["model"] = args.llm_model
    return load_llm(spec, backend=backend, **kw)


class AnswerCache:
    """JSONL of reader answers keyed by (reader, strategy, question id, context hash)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.by_key: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.by_prompt: dict[tuple[str, str, str], dict[str, Any]] = {}
        if path is not None and path.is_file():
            # errors="replace": a byte cut mid-character by a kill spoils its line only
            for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
                try:
                    r = json.loads(line)
                    self._index(r)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by an interrupted run
        self._file = None

    def _index(self, r: dict[str, Any]) -> None:
        self.by_key[(r["reader"], r["strategy"], r["qid"], r["context_hash"])] = r
        self.by_prompt[(r["reader"], r["qid"], r["context_hash"])] = r

    def get(self, reader: str, strategy: str, qid: str, h: str) -> dict[str, Any] | None:
        r = self.by_key.get((reader, strategy, qid, h))
        if r is None:
            other = self.by_prompt.get((reader, qid, h))  # same prompt from another strategy
            if other is not None:
                r = dict(other, strategy=strategy)
                self.put(r)
        return r

    def put(self, r: dict[str, Any]) -> None:
        self._index(r)
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_OVERFLOW = re.compile(r"\((\d+) tokens\)[^()]*context size \((\d+) tokens\)")


class Reader:
    """Loads the backend on the first cache miss; asks, cuts to the window, caches."""

    def __init__(self, args: argparse.Namespace, backend: str, cache: AnswerCache) -> None:
        self.args, self.backend, self.cache = args, backend, cache
        self.id = f"{args.llm}|{backend}"
        self.llm: Any = None
        self.calls = self.hits = 0

    def prompt_hash(self, prompt: str) -> str:
        settings = f"answer_tokens={self.args.answer_tokens}|ctx={self.args.reader_ctx}|greedy\n"
        return hashlib.sha256((settings + prompt).encode("utf-8")).hexdigest()[:24]

    def answer(self, strategy: str, item: Item, context: str) -> dict[str, Any]:
        from ragprune.rerank.llm import LLMResponseError

        cut = False
        if count_tokens(context) > self.args.max_context_tokens:
            context, cut = truncate_tokens(context, self.args.max_context_tokens), True
        prompt = PROMPT.format(context=context, question=item.question)
        h = self.prompt_hash(prompt)
        hit = self.cache.get(self.id, strategy, item.id, h)
        if hit is not None:
            self.hits += 1
            return hit
        if self.llm is None:
            self.llm = load_reader(self.args.llm, self.backend, self.args)
        rec: dict[str, Any] = {"reader": self.id, "strategy": strategy, "qid": item.id, "context_hash": h}
        t = time.perf_counter()
        error = None
        for attempt in range(4):
            try:
                reply = self.llm.generate(prompt, max_tokens=self.args.answer_tokens)
                raw, prompt_tokens = reply.text if isinstance(reply.text, str) else "", reply.prompt_tokens
                timings = reply.raw.get("timings") if isinstance(reply.raw, dict) else None
                if isinstance(timings, dict):  # llama.cpp: tokens evaluated (prefix cache) and ms
                    rec["timings"] = {k: timings[k] for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms")
                                      if k in timings}
                break
            except LLMResponseError as e:
                msg = str(e)
                if attempt == 3 or "context" not in msg.lower() or "exceed" not in msg.lower():
                    raw, prompt_tokens, error = "", 0, f"{type(e).__name__}: {msg[:300]}"
                    break
                context, cut = self._shrink(context, prompt, msg), True
                prompt = PROMPT.format(context=context, question=item.question)
        self.calls += 1
        rec.update(raw=raw, answer=extract_answer(raw), seconds=time.perf_counter() - t, prompt_tokens=prompt_tokens,
                   context_tokens=count_tokens(context), contained=answer_in_context(context, item.answers,
                                                                                      require_all=item.all_parts),
                   cut=cut)
        if error is None:
            self.cache.put(rec)
        else:
            rec["error"] = error
        return rec

    def _shrink(self, context: str, prompt: str, msg: str) -> str:
        n = count_tokens(context)
        m = _OVERFLOW.search(msg)
        if m is None:
            return truncate_tokens(context, n // 2)
        n_prompt, n_ctx = int(m.group(1)), int(m.group(2))
        other = 1.5 * (count_tokens(prompt) - n)  # template + question, in the reader's tokens (estimate)
        room = n_ctx - self.args.answer_tokens - other
        ratio = max(0.05, room / max(1.0, n_prompt - other))
        return truncate_tokens(context, max(1, int(n * min(ratio, 1.0) * 0.95)))


def summarize(st: Strategy, items: Sequence[Item], recs: Sequence[dict[str, Any]], full_tokens: float
              ) -> dict[str, Any]:
    """One strategy's metrics from its reader records (one per question)."""
    n = max(1, len(items))
    preds = [extract_answer(r.get("raw", "")) for r in recs]  # re-extracted: cached answers follow the rule
    toks = sum(r.get("context_tokens", 0) for r in recs)
    return {"family": st.family, "param": st.param, "questions": len(items),
            "em": sum(exact_match(p, it.golds) for p, it in zip(preds, items)) / n,
            "f1": sum(f1(p, it.golds) for p, it in zip(preds, items)) / n,
            "answer_in_context": sum(bool(r.get("contained")) for r in recs) / n, "context_tokens": toks / n,
            "compression": max(0.0, 1 - toks / full_tokens) if full_tokens else 0.0,
            "reader_seconds": sum(r.get("seconds", 0.0) for r in recs) / n, "prune_seconds": st.prune_seconds,
            "empty_answers": sum(not p for p in preds), "reader_errors": sum("error" in r for r in recs),
            "cut_to_window": sum(bool(r.get("cut")) for r in recs), **st.info}


def evaluate_set(qa: QASet, families: Sequence[str], res: Resources, reader: Reader, args: argparse.Namespace
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    from tqdm import tqdm

    if qa.name == "wtq":
        fams = [f for f in families if f in WTQ_FAMILIES]
        strategies, info = wtq_strategies(qa, fams, res, args)
        full_tokens = sum(count_tokens(qa.page_text[it.page]) for it in qa.items)
    else:
        fams = [f for f in families if f in PASSAGE_FAMILIES]
        strategies, info = passage_strategies(qa, fams, res, args)
        full_tokens = sum(count_tokens(c) for c in full_contexts([it.pq for it in qa.items]))
    skipped = [f for f in families if f not in fams]
    if skipped:
        print(f"eval.qa: {qa.name}: not applicable: {', '.join(skipped)}", file=sys.stderr)
    # question-major: one question's prompts in a row share long prefixes (first-n budgets),
    # which llama.cpp's prompt cache does not recompute
    recs: dict[str, list[dict[str, Any]]] = {st.name: [] for st in strategies}
    with tqdm(total=len(strategies) * len(qa.items), desc=f"{qa.name} reader", unit="answer") as bar:
        for i, it in enumerate(qa.items):
            for st in strategies:
                recs[st.name].append(reader.answer(st.name, it, st.contexts[i]))
                bar.update(1)
    out = {st.name: summarize(st, qa.items, recs[st.name], full_tokens) for st in strategies}
    info.update(questions=len(qa.items), subset=qa.subset, full_tokens_mean=full_tokens / max(1, len(qa.items)))
    return out, info


# ----------------------------------------------------------------------------------------
# Report


def print_table(name: str, rows: dict[str, Any], info: dict[str, Any], reader: str) -> None:
    ref = ""
    if "reference_compression" in info:
        ref = f"; baselines matched to {info['reference']} (compression {info['reference_compression']:.3f})"
    elif "reference" in info:
        ref = f"; baselines at {info['reference']}"
    print(f"\n## {name}: {info['questions']} questions, reader {reader}{ref}")
    print("| strategy | EM | F1 | answer in context | context tokens | compression | reader s/q | prune s/q | empty |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s, r in rows.items():
        print(f"| {s} | {r['em']:.3f} | {r['f1']:.3f} | {r['answer_in_context']:.3f} | {r['context_tokens']:.0f} | "
              f"{r['compression']:.3f} | {r['reader_seconds']:.2f} | {r['prune_seconds']:.3f} | {r['empty_answers']} |")


def plot(results: dict[str, dict[str, Any]], info: dict[str, dict[str, Any]], reader: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    markers = dict(zip(FAMILIES, "*XovsD^<>phP"))
    for ax, name in zip(axes[0], names):
        fams: dict[str, list[tuple[float, float]]] = {}
        for r in results[name].values():
            fams.setdefault(r["family"], []).append((r["context_tokens"], r["f1"]))
        for fam, pts in fams.items():
            pts.sort()
            if fam == "full":  # the reference: a line across the plot
                ax.axhline(pts[0][1], color="black", lw=0.8, ls=":", zorder=0)
            ax.plot([max(1.0, x) for x, _ in pts], [y for _, y in pts], ls="-" if len(pts) > 1 else "",
                    marker=markers.get(fam, "o"), ms=9 if fam == "full" else 6, label=fam,
                    color="black" if fam == "full" else None, zorder=3 if fam == "full" else 2)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("mean context tokens")
        ax.set_ylabel("reader F1")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} ({info[name]['questions']} q), reader {reader}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# Main


def _compression_arg(v: str) -> str:
    if v in ("provence", "natural"):
        return v
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'provence', 'natural' or a number in [0, 1)") from None
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError("target compression must be in [0, 1)")
    return v


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.qa", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", nargs="+", default=["all"], choices=[*DATASETS, "all", "custom"])
    p.add_argument("--qa-file", type=Path, default=None, help="JSONL questions for --dataset custom")
    add_shared_arg(p)
    add_limit_arg(p, "--questions", default=200, help="questions per dataset (seeded sample)")
    p.add_argument("--hotpot-split", choices=["heldout", "all"], default="heldout")
    g = p.add_argument_group("reader LLM (--reader, --reader-backend and --cache are the older names)")
    add_llm_args(g, default="qwen2.5-1.5b", spec_aliases=("--reader",), backend_aliases=("--reader-backend",),
                 cache_aliases=("--cache",),
                 spec_help="reader: model short name, .gguf path, folder or http(s) URL (callable:module:function "
                           "for tests)",
                 cache_help="JSONL answer cache (resume / cheap reruns): one line per (reader, strategy, question, "
                            "prompt hash) with the reply and its timings")
    p.add_argument("--reader-ctx", type=int, default=4096, help="reader context window (llama.cpp n_ctx)")
    p.add_argument("--max-context-tokens", type=int, default=None,
                   help="cut longer contexts (count_tokens); default 80%% of --reader-ctx")
    p.add_argument("--answer-tokens", type=int, default=32, help="max generated tokens")
    p.add_argument("--strategies", nargs="+", default=list(DEFAULT_FAMILIES), choices=FAMILIES)
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.05, 0.1, 0.2], help="Provence thresholds")
    p.add_argument("--budgets", nargs="+", type=int, default=[256, 512, 1000], help="pipeline / first-n / html budgets")
    p.add_argument("--pipeline-threshold", type=float, default=0.1)
    p.add_argument("--pipeline-backfill", nargs="+", choices=list(BACKFILL), default=["all"],
                   help="Pipeline backfill modes to run: all (the default Pipeline), kept-documents, none")
    p.add_argument("--rerank", choices=["none", "cross-encoder"], default="none", help="pipeline reranker")
    p.add_argument("--baseline-compression", type=_compression_arg, default="provence",
                   help="'provence' (match Provence at the reference threshold), 'natural', or a target in [0, 1)")
    p.add_argument("--provence", default="ragprune-provence", help="Provence checkpoint, or 'none'")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and llama.cpp (default: library's; --llm-threads sets llama.cpp's alone)")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, plot=True)
    args = p.parse_args(argv)
    if "all" in args.dataset:
        args.dataset = list(DATASETS)
    args.dataset = list(dict.fromkeys(args.dataset))
    if "custom" in args.dataset and args.qa_file is None:
        p.error("--dataset custom needs --qa-file")
    if min(args.budgets) < 1 or args.reader_ctx < 256 or args.answer_tokens < 1:
        p.error("--budgets and --answer-tokens must be positive and --reader-ctx >= 256")
    if args.max_context_tokens is None:
        args.max_context_tokens = int(0.8 * args.reader_ctx)
    args.budgets = sorted(set(args.budgets))
    args.thresholds = sorted(set(args.thresholds))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if outputs_refused(args, "eval.qa"):  # before hours of reader calls, not after
        return 2
    start = time.perf_counter()
    from ragprune.models import ModelNotFoundError

    try:
        backend = resolve_backend(args.llm, args.llm_backend)
        if backend == "callable":
            load_reader(args.llm, backend, args)  # fail now on a bad module/function
        sets = [load_set(d, args) for d in args.dataset]
    except (FileNotFoundError, ModelNotFoundError, ImportError, AttributeError, ValueError) as e:
        print(f"eval.qa: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.threads:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    cache = AnswerCache(args.llm_cache)
    reader = Reader(args, backend, cache)
    res = Resources(args)
    results: dict[str, Any] = {}
    infos: dict[str, Any] = {}
    from ragprune.rerank.llm import LLMError

    try:
        for qa in sets:
            if not qa.items:
                print(f"eval.qa: {qa.name}: no questions", file=sys.stderr)
                continue
            if len(qa.items) < args.limit:
                print(f"eval.qa: {qa.name}: {len(qa.items)} questions in the subset (asked for {args.limit})",
                      file=sys.stderr)
            results[qa.name], infos[qa.name] = evaluate_set(qa, args.strategies, res, reader, args)
    except (FileNotFoundError, ModelNotFoundError, ImportError, LLMError) as e:
        print(f"eval.qa: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        cache.close()
    for name, rows in results.items():
        print_table(name, rows, infos[name], args.llm)
    seconds = time.perf_counter() - start
    print(f"\nreader calls: {reader.calls}, cached answers: {reader.hits}, {seconds:.0f} s")
    save_results(args, {**results, "reader": args.llm, "reader_backend": backend, "questions": args.limit,
                        "seed": args.seed, "seconds": seconds, "reader_calls": reader.calls,
                        "cached_answers": reader.hits, "datasets": infos, "prompt": PROMPT})
    if args.plot and results:
        plot(results, infos, args.llm, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
