"""Choose BM25Retriever's default k1, b (and variant) on development data, then report held-out sets once.

    python -m eval.bm25_defaults --json eval/results/bm25_defaults.json

Development sets (the only ones the choice sees):

- ``scifact-train``: BEIR SciFact, the *train* qrels (809 claims, full 5,183-abstract corpus);
  the test qrels are held out.
- ``squad-train``: SQuAD v1.1 dev articles 0-31 (eval/pruning_data.py's ``train`` part), every
  paragraph of those articles is a document (title = article), every question a query, its
  own paragraph the one relevant document (long natural-language questions).
- ``hotpotqa-train``: HotpotQA distractor questions 0-57 (pruning_data's ``train`` part), the
  union of their context paragraphs is the corpus (one document per title), the supporting-fact
  titles are relevant (two per question, multi-hop questions).

The grid is every ``--methods`` x ``--k1`` x ``--b``; the rule (fixed before any held-out
number is computed): the setting with the highest *mean* nDCG@10 over the development sets
(each set weighs the same). The table also shows each setting's worst shortfall from the best
setting of any one set, the robustness view.

Held-out, computed once after the choice and never used for it: BEIR SciFact test (300
queries) and TREC DL19 (43 queries over the 4,297 passages of the official BM25 top-100 run; an
evaluation set). Rows: ragprune's old defaults (lucene, k1=0.9, b=0.4), the chosen defaults,
and bm25s's defaults (lucene, k1=1.5, b=0.75) computed by bm25s itself in the same run, once
with bm25s's own tokenizer as its README uses it (English stopwords, PyStemmer English
stemmer) and once on ragprune's analysed tokens. Metrics: nDCG@10 and Recall@100 by
pytrec_eval; as in BEIR a hit whose id equals the query id is ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.common import add_limit_arg, add_output_args, add_shared_arg, rounded, run_cli
from ragprune.datasets import load_beir
from ragprune.metrics import evaluate_run, run_from_hits
from ragprune.types import Document

log = logging.getLogger("eval.bm25_defaults")

OLD_DEFAULTS = ("lucene", 0.9, 0.4)
BM25S_DEFAULTS = ("lucene", 1.5, 0.75)
DEV_SETS = ("scifact-train", "squad-train", "hotpotqa-train")
HELDOUT_SETS = ("scifact-test", "dl19")


@dataclass(frozen=True)
class RetrievalSet:
    """A corpus, queries ``{qid: text}`` and graded qrels ``{qid: {doc_id: grade}}``."""

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


# ------------------------------------------------------------------------------------------ data


def _beir(name: str, folder: Path, split: str) -> RetrievalSet:
    ds = load_beir(folder, split)
    return RetrievalSet(name, ds.corpus, ds.queries, ds.qrels)


def squad_set(shared: Path, articles: range = range(0, 32)) -> RetrievalSet:
    """Paragraph retrieval over SQuAD v1.1 dev articles (default: pruning_data's train part)."""
    data = json.loads((shared / "squad_v1.1_dev" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    corpus, queries, qrels = [], {}, {}
    for a in articles:
        art = data[a]
        title = art["title"].replace("_", " ")
        for i, p in enumerate(art["paragraphs"]):
            doc_id = f"{a}-{i}"
            corpus.append(Document(id=doc_id, title=title, text=p["context"]))
            for qa in p["qas"]:
                if qa["question"].strip():
                    queries[qa["id"]] = qa["question"]
                    qrels[qa["id"]] = {doc_id: 1}
    return RetrievalSet("squad-train", corpus, queries, qrels)


def hotpot_set(shared: Path, questions: slice = slice(0, 58)) -> RetrievalSet:
    """Paragraph retrieval over the pooled HotpotQA distractor contexts (default: the train part)."""
    data = json.loads((shared / "hotpotqa_dev_distractor" / "hotpot_dev_distractor_v1_first73.json")
                      .read_text(encoding="utf-8"))[questions]
    by_title: dict[str, Document] = {}
    queries, qrels = {}, {}
    for ex in data:
        for title, sents in ex["context"]:
            if title not in by_title:
                by_title[title] = Document(id=title, title=title, text=" ".join(s.strip() for s in sents))
        gold = {t for t, _ in ex["supporting_facts"] if t in by_title}
        if gold:
            queries[ex["_id"]] = ex["question"]
            qrels[ex["_id"]] = {t: 1 for t in sorted(gold)}
    return RetrievalSet("hotpotqa-train", list(by_title.values()), queries, qrels)


def load_set(shared: Path, name: str) -> RetrievalSet:
    if name == "scifact-train":
        return _beir(name, shared / "beir_scifact", "train")
    if name == "scifact-test":
        return _beir(name, shared / "beir_scifact", "test")
    if name == "dl19":
        return _beir(name, shared / "msmarco_trecdl_subset" / "dl19", "test")
    if name == "squad-train":
        return squad_set(shared)
    if name == "hotpotqa-train":
        return hotpot_set(shared)
    raise ValueError(f"eval.bm25_defaults: unknown set {name!r}")


def sample(rs: RetrievalSet, limit: int | None, seed: int) -> RetrievalSet:
    """At most ``limit`` of the set's queries (a fixed seeded sample; the corpus is kept whole)."""
    if limit is None or limit >= len(rs.queries):
        return rs
    keep = sorted(random.Random(seed).sample(sorted(rs.queries), limit))
    return RetrievalSet(rs.name, rs.corpus, {q: rs.queries[q] for q in keep}, {q: rs.qrels[q] for q in keep})


# ------------------------------------------------------------------------------------------ scoring


def evaluate_ragprune(rs: RetrievalSet, method: str, k1: float, b: float, analyzer: Any = None) -> dict[str, float]:
    from ragprune.retrieve.bm25 import BM25Retriever

    bm25 = BM25Retriever.from_documents(rs.corpus, method=method, k1=k1, b=b, analyzer=analyzer)
    qids = list(rs.queries)
    hits = bm25.retrieve_many([rs.queries[q] for q in qids], k=100)
    return evaluate_run(rs.qrels, run_from_hits(qids, hits))


def evaluate_bm25s(rs: RetrievalSet, tokenizer: str, k1: float = 1.5, b: float = 0.75,
                   method: str = "lucene") -> dict[str, float]:
    """bm25s itself: ``tokenizer`` is ``"bm25s"`` (its tokenize, English stopwords and
    PyStemmer English) or ``"ragprune"`` (ragprune's Analyzer tokens)."""
    import bm25s

    from ragprune.text import Analyzer
    from ragprune.types import ScoredDocument

    logging.getLogger("bm25s").setLevel(logging.WARNING)

    texts = [d.full_text for d in rs.corpus]
    qids = list(rs.queries)
    if tokenizer == "bm25s":
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        corpus_tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        query_tokens = bm25s.tokenize([rs.queries[q] for q in qids], stopwords="en", stemmer=stemmer,
                                      show_progress=False, return_ids=False)
    else:
        an = Analyzer()
        corpus_tokens = [an(t) for t in texts]
        query_tokens = [an(rs.queries[q]) for q in qids]
    r = bm25s.BM25(method=method, k1=k1, b=b)
    r.index(corpus_tokens, show_progress=False)
    docs, scores = r.retrieve(query_tokens, k=min(100, len(texts)), show_progress=False, n_threads=1)
    hits = [[ScoredDocument(rs.corpus[int(i)], float(s)) for i, s in zip(row, srow)] for row, srow in zip(docs, scores)]
    return evaluate_run(rs.qrels, run_from_hits(qids, hits))


# ------------------------------------------------------------------------------------------ run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.bm25_defaults", description=__doc__.split("\n\n")[0])
    add_shared_arg(p)
    p.add_argument("--methods", nargs="+", default=["lucene", "robertson", "atire", "okapi", "bm25l", "bm25+"],
                   choices=["lucene", "robertson", "atire", "okapi", "bm25l", "bm25+"])
    p.add_argument("--k1", type=float, nargs="+", default=[0.6, 0.9, 1.2, 1.5, 2.0])
    p.add_argument("--b", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.75, 0.9])
    add_limit_arg(p, help="queries per development set (seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-heldout", dest="heldout", action="store_false",
                   help="only the development grid (no held-out numbers)")
    add_output_args(p)
    args = p.parse_args(argv)
    if any(k < 0 for k in args.k1) or any(not 0 <= b <= 1 for b in args.b):
        p.error("--k1 must be >= 0 and --b in [0, 1]")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragprune.retrieve.bm25 import BM25Retriever
    from ragprune.text import Analyzer

    t0 = time.perf_counter()
    dev = [sample(load_set(args.shared, n), args.limit, args.seed) for n in DEV_SETS]
    analyzer = Analyzer()  # shared: its word cache makes every rebuild after the first cheap
    grid = [(m, k1, b) for m in args.methods for k1 in args.k1 for b in args.b]
    rows = []
    for m, k1, b in grid:
        ndcg = {rs.name: round(evaluate_ragprune(rs, m, k1, b, analyzer)["ndcg@10"], 4) for rs in dev}
        rows.append({"method": m, "k1": k1, "b": b, "ndcg@10": ndcg, "mean": round(statistics.mean(ndcg.values()), 4)})
        log.info("%s k1=%s b=%s %s", m, k1, b, ndcg)
    best_per_set = {rs.name: max(r["ndcg@10"][rs.name] for r in rows) for rs in dev}
    for r in rows:
        r["worst_shortfall"] = round(max(best_per_set[s] - v for s, v in r["ndcg@10"].items()), 4)
    rows.sort(key=lambda r: (-r["mean"], r["worst_shortfall"], r["method"], r["k1"], r["b"]))
    chosen = rows[0]
    robust = min(rows, key=lambda r: (r["worst_shortfall"], -r["mean"]))
    current = BM25Retriever.from_documents(["x"])  # the library's defaults as they are now
    result: dict[str, Any] = {
        "dev_sets": {rs.name: {"docs": len(rs.corpus), "queries": len(rs.queries)} for rs in dev},
        "rule": "highest mean nDCG@10 over the development sets (equal weights)",
        "grid": rows, "best_per_set": best_per_set,
        "chosen": {k: chosen[k] for k in ("method", "k1", "b", "mean", "worst_shortfall", "ndcg@10")},
        "most_robust": {k: robust[k] for k in ("method", "k1", "b", "mean", "worst_shortfall")},
        "library_defaults": {"method": current.method, "k1": current.k1, "b": current.b},
    }
    for name, setting in (("old defaults", OLD_DEFAULTS), ("bm25s defaults", BM25S_DEFAULTS)):
        row = next((r for r in rows if (r["method"], r["k1"], r["b"]) == setting), None)
        if row is not None:
            result[f"dev_{name.replace(' ', '_')}"] = {"mean": row["mean"], "ndcg@10": row["ndcg@10"]}
    if args.heldout:
        held = []
        for name in HELDOUT_SETS:
            rs = load_set(args.shared, name)
            entries = [
                ("ragprune, old defaults (lucene, 0.9, 0.4)", lambda rs=rs: evaluate_ragprune(rs, *OLD_DEFAULTS)),
                (f"ragprune, chosen ({chosen['method']}, {chosen['k1']}, {chosen['b']})",
                 lambda rs=rs: evaluate_ragprune(rs, chosen["method"], chosen["k1"], chosen["b"])),
                ("bm25s defaults (lucene, 1.5, 0.75), bm25s tokenizer + stemmer",
                 lambda rs=rs: evaluate_bm25s(rs, "bm25s")),
                ("bm25s defaults (lucene, 1.5, 0.75), ragprune's tokens", lambda rs=rs: evaluate_bm25s(rs, "ragprune")),
            ]
            for label, fn in entries:
                held.append({"set": name, "system": label, **rounded(fn())})
        result["heldout"] = held
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def print_table(r: dict[str, Any]) -> None:
    sets = list(r["dev_sets"])
    print("## development sets: " + ", ".join(f"{s} ({v['queries']} queries, {v['docs']} docs)"
                                              for s, v in r["dev_sets"].items()))
    print(f"rule: {r['rule']}")
    print("| method | k1 | b | " + " | ".join(sets) + " | mean | worst shortfall |")
    print("|---|---|---|" + "---|" * (len(sets) + 2))
    shown = r["grid"][:15]
    for extra in (OLD_DEFAULTS, BM25S_DEFAULTS):
        row = next((x for x in r["grid"] if (x["method"], x["k1"], x["b"]) == extra), None)
        if row is not None and row not in shown:
            shown.append(row)
    for row in shown:
        print(f"| {row['method']} | {row['k1']} | {row['b']} | "
              + " | ".join(f"{row['ndcg@10'][s]:.4f}" for s in sets)
              + f" | **{row['mean']:.4f}** | {row['worst_shortfall']:.4f} |")
    print(f"({len(r['grid'])} settings; top 15 by mean shown, plus the old and bm25s defaults)")
    c, rb = r["chosen"], r["most_robust"]
    print(f"chosen: {c['method']} k1={c['k1']} b={c['b']} (mean {c['mean']:.4f}, worst shortfall "
          f"{c['worst_shortfall']:.4f}); most robust: {rb['method']} k1={rb['k1']} b={rb['b']} "
          f"(mean {rb['mean']:.4f}, worst shortfall {rb['worst_shortfall']:.4f})")
    d = r["library_defaults"]
    print(f"BM25Retriever defaults now: {d['method']} k1={d['k1']} b={d['b']}")
    if "heldout" in r:
        print("\n## held-out (never used for the choice)")
        print("| set | system | nDCG@10 | Recall@100 |")
        print("|---|---|---|---|")
        for h in r["heldout"]:
            print(f"| {h['set']} | {h['system']} | {h['ndcg@10']:.4f} | {h['recall@100']:.4f} |")
    print(f"({r['seconds']} s)")


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.bm25_defaults", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
