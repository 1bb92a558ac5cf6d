"""Sentence-labelled (query, passages) sets from ../shared/data, for pruner training and evaluation.

Every question becomes a :class:`PruningQuestion`: the query, its candidate passages with
gold keep/drop labels per sentence, and the gold answers where the dataset has them. Splits
are fixed and recorded here (training never sees held-out parts):

- SciFact (rationales release): ``claims_train`` minus its last 100 claims = ``train``; those
  100 = ``dev``; ``claims_dev`` (= BEIR SciFact test) = ``heldout``. Gold sentences are the
  rationale sentences; the abstract's own sentence list is the segmentation. Passages: the
  claim's evidence abstracts plus BM25 negatives (up to ``passages``).
- SQuAD v1.1 dev: articles 0-31 ``train``, 32-39 ``heldout``. Gold sentence: the one(s)
  overlapping an answer span (blingfire segmentation). Passages: the gold paragraph plus the
  article's BM25-nearest other paragraphs.
- HotpotQA distractor: questions 0-57 ``train``, 58-72 ``heldout``. Gold: supporting facts;
  passages: the 10 given paragraphs (2 gold + 8 distractors).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.common import PUBLISHED_BM25
from ragprune.text import sentence_spans
from ragprune.types import Document

__all__ = ["LabelledPassage", "PruningQuestion", "load_pruning_set", "DATASETS"]

DATASETS = ("scifact", "squad", "hotpotqa")


@dataclass(frozen=True)
class LabelledPassage:
    """A passage, its sentence segmentation and the gold keep labels (1 = evidence)."""

    document: Document
    spans: tuple[tuple[int, int], ...]
    labels: tuple[int, ...]

    @property
    def relevant(self) -> bool:
        return any(self.labels)


@dataclass(frozen=True)
class PruningQuestion:
    query: str
    passages: tuple[LabelledPassage, ...]
    answers: tuple[str, ...] = ()
    id: str = ""


def join_sentences(sentences: Sequence[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Join non-blank sentences with single spaces; also return each one's character span."""
    spans, pos, parts = [], 0, []
    for s in sentences:
        s = s.strip()
        if not s:
            continue
        if parts:
            pos += 1
        spans.append((pos, pos + len(s)))
        parts.append(s)
        pos += len(s)
    return " ".join(parts), tuple(spans)


def _scifact(shared: Path, split: str, passages: int, seed: int) -> list[PruningQuestion]:
    from ragprune.retrieve.bm25 import BM25Retriever

    root = shared / "scifact_rationales"
    corpus = {}
    for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        corpus[str(r["doc_id"])] = (r["title"], r["abstract"])
    fname = "claims_dev.jsonl" if split == "heldout" else "claims_train.jsonl"
    claims = [json.loads(line) for line in (root / fname).read_text(encoding="utf-8").splitlines() if line.strip()]
    if split == "train":
        claims = claims[:-100]
    elif split == "dev":
        claims = claims[-100:]
    docs = {i: Document(id=i, title=t, text=join_sentences(a)[0]) for i, (t, a) in corpus.items()}
    bm25 = BM25Retriever.from_documents(list(docs.values()), **PUBLISHED_BM25)
    out = []
    for c in claims:
        if not c["evidence"]:
            continue
        gold = []
        for doc_id, ev in c["evidence"].items():
            if doc_id not in corpus:
                continue
            text, spans = join_sentences(corpus[doc_id][1])
            keep = {i for e in ev for i in e["sentences"]}
            gold.append(LabelledPassage(docs[doc_id], spans, tuple(int(i in keep) for i in range(len(spans)))))
        negs = []
        for h in bm25.retrieve(c["claim"], passages + len(gold)):
            if len(gold) + len(negs) >= passages:
                break
            if h.id not in c["evidence"] and h.id not in {str(x) for x in c.get("cited_doc_ids", [])}:
                spans = join_sentences(corpus[h.id][1])[1]
                negs.append(LabelledPassage(h.document, spans, (0,) * len(spans)))
        out.append(PruningQuestion(c["claim"], tuple(gold + negs), id=str(c["id"])))
    return out


def _squad(shared: Path, split: str, passages: int, seed: int) -> list[PruningQuestion]:
    from ragprune.retrieve.bm25 import BM25Retriever

    data = json.loads((shared / "squad_v1.1_dev" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    articles = range(0, 32) if split == "train" else range(32, 40)
    out = []
    for a in articles:
        art = data[a]
        title = art["title"].replace("_", " ")
        paras = [Document(id=f"{a}-{i}", title=title, text=p["context"]) for i, p in enumerate(art["paragraphs"])]
        spans = [tuple(sentence_spans(p.text)) for p in paras]
        bm25 = BM25Retriever.from_documents(paras, **PUBLISHED_BM25)
        for i, p in enumerate(art["paragraphs"]):
            for qa in p["qas"]:
                answers = tuple(dict.fromkeys(x["text"] for x in qa["answers"]))
                ranges = [(x["answer_start"], x["answer_start"] + len(x["text"])) for x in qa["answers"]]
                labels = tuple(int(any(s < e2 and s2 < e for s2, e2 in ranges)) for s, e in spans[i])
                gold = LabelledPassage(paras[i], spans[i], labels)
                negs = [LabelledPassage(h.document, spans[int(h.id.split("-")[1])], (0,) * len(spans[int(h.id.split("-")[1])]))
                        for h in bm25.retrieve(qa["question"], passages) if h.id != paras[i].id][: passages - 1]
                out.append(PruningQuestion(qa["question"], (gold, *negs), answers, qa["id"]))
    return out


def _hotpot(shared: Path, split: str, passages: int, seed: int) -> list[PruningQuestion]:
    data = json.loads((shared / "hotpotqa_dev_distractor" / "hotpot_dev_distractor_v1_first73.json")
                      .read_text(encoding="utf-8"))
    data = data[:58] if split == "train" else data[58:]
    out = []
    for ex in data:
        facts = {(t, i) for t, i in ex["supporting_facts"]}
        ps = []
        for k, (title, sents) in enumerate(ex["context"]):
            text, spans = join_sentences(sents)
            idx = [i for i, s in enumerate(sents) if s.strip()]
            ps.append(LabelledPassage(Document(id=f"{ex['_id']}-{k}", title=title, text=text), spans,
                                      tuple(int((title, i) in facts) for i in idx)))
        out.append(PruningQuestion(ex["question"], tuple(ps), (ex["answer"],), ex["_id"]))
    return out


def load_pruning_set(shared: str | Path, dataset: str, split: str, *, passages: int = 5, limit: int | None = None,
                     seed: int = 0) -> list[PruningQuestion]:
    """Load one dataset split (see the module docstring).

    Args:
        shared: The ``shared/data`` folder.
        dataset: ``"scifact"``, ``"squad"`` or ``"hotpotqa"``.
        split: ``"train"``, ``"dev"`` (SciFact only) or ``"heldout"``.
        passages: Passages per question for SciFact and SQuAD (HotpotQA always has its 10).
        limit: Keep a fixed random sample of this many questions (seeded).
    """
    loaders = {"scifact": _scifact, "squad": _squad, "hotpotqa": _hotpot}
    if dataset not in loaders:
        raise ValueError(f"load_pruning_set: unknown dataset {dataset!r}; expected one of {DATASETS}.")
    if split not in ("train", "dev", "heldout") or (split == "dev" and dataset != "scifact"):
        raise ValueError(f"load_pruning_set: unknown split {split!r} for {dataset}.")
    qs = loaders[dataset](Path(shared), split, passages, seed)
    if limit is not None and limit < len(qs):
        qs = random.Random(seed).sample(qs, limit)
    return qs
