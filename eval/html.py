"""HTML pruning and cleaning on real pages, ragprune vs the htmlrag package (0.1.1).

    python -m eval.html --json eval/results/html.json --plot eval/results/html.png

1. WikiTableQuestions (real Wikipedia pages + questions): the share of questions whose gold
   answer string survives pruning at budgets of 512/1k/2k/4k tokens. Only questions whose
   answer appears in the full cleaned page (by both cleaners) are counted. Both systems get
   the same budget, counted by the same tokenizer (all-MiniLM-L6-v2's WordPiece) on the pruned
   HTML, the same block granularity (``--max-node-words``) and the same scorers: BM25, and
   embeddings from the same all-MiniLM-L6-v2. Time per (question, budget) for each system.
2. Article-extraction benchmark (Zyte, 181 real pages): token precision/recall/F1 of the
   cleaned page's text against the ground-truth article body, ours vs htmlrag's clean_html.
3. Readability test pages: every page is cleaned and pruned; crashes and outputs that are
   not a parseable ``<body>`` are counted (target: zero).

Text is extracted the same way for every system (lxml ``text_content`` with whitespace
collapsed) and answers are matched case-insensitively.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from eval.common import (
    add_limit_arg,
    add_output_args,
    add_shared_arg,
    outputs_refused,
    save_results,
)

BUDGETS = (512, 1024, 2048, 4096)
_WS = re.compile(r"\s+")
_TOK = re.compile(r"\w+", re.UNICODE)


def plain_text(html: str) -> str:
    """Same text extraction for every system: lxml text_content, whitespace collapsed."""
    import lxml.html

    if not html.strip():
        return ""
    try:
        return _WS.sub(" ", lxml.html.fromstring(html).text_content()).strip()
    except Exception:  # noqa: BLE001 - text of unparseable output is empty
        return ""


def contains(text: str, answers: list[str]) -> bool:
    t = _WS.sub(" ", text).lower()
    return any(_WS.sub(" ", a).lower().strip() in t for a in answers if a.strip())


class Ours:
    name = "ragprune"

    def __init__(self, scorer: str, counter: Any, max_node_words: int) -> None:
        from ragprune.html.prune import HtmlPruner

        self.pruner = HtmlPruner(scorer, max_node_words=max_node_words, token_counter=counter)

    def clean(self, html: bytes) -> str:
        from ragprune.html.clean import clean_html

        return clean_html(html)

    def prune(self, question: str, html: bytes, budget: int) -> str:
        return self.pruner.prune(question, html, max_tokens=budget).html


class Peer:
    name = "htmlrag"

    def __init__(self, scorer: str, tokenizer: Any, model_path: str, max_node_words: int) -> None:
        import htmlrag

        self.h = htmlrag
        self.tokenizer = tokenizer
        self.max_node_words = max_node_words
        if scorer == "bm25":
            self.pruner = htmlrag.BM25HTMLPruner()
        else:
            self.pruner = htmlrag.EmbedHTMLPruner(embed_model=model_path, local_inference=True)

    def clean(self, html: bytes) -> str:
        from ragprune.html.clean import decode_html

        return self.h.clean_html(decode_html(html))

    def prune(self, question: str, html: bytes, budget: int) -> str:
        simplified = self.clean(html)
        tree, simplified = self.h.build_block_tree(simplified, max_node_words=self.max_node_words)
        ranks = self.pruner.calculate_block_rankings(question, simplified, tree)
        return self.pruner.prune_HTML(simplified, tree, ranks, self.tokenizer, budget)


def wtq(args: argparse.Namespace, systems: dict[str, list[Any]], counter: Any) -> dict[str, Any]:
    folder = args.shared / "wikitablequestions_html"
    rows = [json.loads(line) for line in (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    pages: dict[str, bytes] = {}
    usable = []
    for r in rows:
        if len(usable) >= args.limit:
            break
        html = pages.setdefault(r["page_html"], (folder / r["page_html"]).read_bytes())
        full = [plain_text(s[0].clean(html)) for s in systems.values() if s]
        if all(contains(t, r["answers"]) for t in full):
            usable.append(r)
    results: dict[str, Any] = {"questions": len(usable), "budgets": list(BUDGETS), "systems": {}}
    for label, (system, _) in ((k, v) for k, v in systems.items() if v):
        kept = {b: 0 for b in BUDGETS}
        tokens = {b: [] for b in BUDGETS}
        times, crashes = [], 0
        for r in usable:
            html = pages[r["page_html"]]
            for b in BUDGETS:
                t = time.perf_counter()
                try:
                    out = system.prune(r["question"], html, b)
                except Exception as e:  # noqa: BLE001 - a peer crash counts as "answer lost"
                    crashes += 1
                    print(f"eval.html: {label} failed on {r['id']} at {b}: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                times.append(time.perf_counter() - t)
                kept[b] += contains(plain_text(out), r["answers"])
                tokens[b].append(counter(out))
        n = max(1, len(usable))
        results["systems"][label] = {
            "answer_kept": {str(b): kept[b] / n for b in BUDGETS},
            "mean_tokens": {str(b): statistics.mean(tokens[b]) if tokens[b] else 0 for b in BUDGETS},
            "over_budget": sum(t > b for b in BUDGETS for t in tokens[b]),
            "seconds_per_prune": statistics.mean(times) if times else None,
            "crashes": crashes,
        }
        print(f"  {label}: " + ", ".join(f"{b}: {kept[b] / n:.3f}" for b in BUDGETS), file=sys.stderr)
    return results


def _tokens(text: str) -> Counter:
    return Counter(t.lower() for t in _TOK.findall(text))


def extraction(args: argparse.Namespace, cleaners: dict[str, Any]) -> dict[str, Any]:
    folder = args.shared / "html_article_extraction_benchmark"
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {"pages": 0, "systems": {}}
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in cleaners}
    times: dict[str, list[float]] = {k: [] for k in cleaners}
    for pid, gt in sorted(truth.items()):
        path = folder / "html" / f"{pid}.html.gz"
        if not path.is_file():
            continue
        html = gzip.decompress(path.read_bytes())
        gold = _tokens(gt.get("articleBody") or "")
        if not gold:
            continue
        out["pages"] += 1
        for k, clean in cleaners.items():
            t = time.perf_counter()
            try:
                got = _tokens(plain_text(clean(html)))
            except Exception:  # noqa: BLE001
                got = Counter()
            times[k].append(time.perf_counter() - t)
            inter = sum((got & gold).values())
            scores[k].append((inter / max(1, sum(got.values())), inter / sum(gold.values())))
    for k, s in scores.items():
        p = statistics.mean(x for x, _ in s) if s else 0.0
        r = statistics.mean(y for _, y in s) if s else 0.0
        out["systems"][k] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                             "seconds_per_page": statistics.mean(times[k]) if times[k] else None}
    return out


def readability(args: argparse.Namespace) -> dict[str, Any]:
    import lxml.html

    from ragprune.html.prune import HtmlPruner

    folder = args.shared / "html_readability_test_pages" / "test-pages"
    pruner = HtmlPruner(max_tokens=1024)
    pages = crashes = invalid = 0
    failures = []
    for page in sorted(folder.glob("*/source.html")):
        pages += 1
        meta = page.parent / "expected-metadata.json"
        title = "main content"
        if meta.is_file():
            title = (json.loads(meta.read_text(encoding="utf-8")).get("title") or title).strip() or title
        try:
            out = pruner.prune(title, page.read_bytes())
            if lxml.html.document_fromstring(out.html or "<body></body>").find("body") is None:
                invalid += 1
        except Exception as e:  # noqa: BLE001
            crashes += 1
            failures.append(f"{page.parent.name}: {type(e).__name__}: {e}")
    return {"pages": pages, "crashes": crashes, "invalid_html": invalid, "failures": failures}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, r in res["wtq"]["systems"].items():
        ax.plot(BUDGETS, [r["answer_kept"][str(b)] for b in BUDGETS], marker="o",
                ls="-" if label.startswith("ragprune") else "--", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
    ax.set_xlabel("token budget (pruned HTML)")
    ax.set_ylabel("answer kept")
    ax.set_title(f"WikiTableQuestions pages ({res['wtq']['questions']} questions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.html", description=__doc__.split("\n\n")[0])
    add_shared_arg(p)
    add_limit_arg(p, "--questions", default=200, help="WTQ questions (fixed random sample)")
    p.add_argument("--scorers", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    p.add_argument("--max-node-words", type=int, default=64)
    p.add_argument("--no-peer", action="store_true", help="skip the htmlrag package")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, plot=True)
    args = p.parse_args(argv)
    if outputs_refused(args, "eval.html"):
        return 2

    import torch
    from transformers import AutoTokenizer

    from ragprune.models import resolve_model
    from ragprune.text import HFTokenCounter

    torch.set_num_threads(2)
    model_path = str(resolve_model("minilm"))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.model_max_length = 10**9  # counting only: long pages are not an error
    counter = HFTokenCounter(tokenizer)
    systems: dict[str, list[Any]] = {}
    for scorer in args.scorers:
        systems[f"ragprune-{scorer}"] = [Ours(scorer, counter, args.max_node_words)]
        if not args.no_peer:
            try:
                systems[f"htmlrag-{scorer}"] = [Peer(scorer, tokenizer, model_path, args.max_node_words)]
            except ImportError as e:
                print(f"eval.html: htmlrag not available ({e}); pip install htmlrag==0.1.1", file=sys.stderr)
    for v in systems.values():
        v.append(None)
    res: dict[str, Any] = {"max_node_words": args.max_node_words, "seed": args.seed, "tokenizer": "all-MiniLM-L6-v2"}
    res["wtq"] = wtq(args, systems, counter)
    cleaners = {"ragprune": lambda h: Ours("bm25", counter, args.max_node_words).clean(h)}
    peer = next((v[0] for k, v in systems.items() if k.startswith("htmlrag")), None)
    if peer is not None:
        cleaners["htmlrag"] = peer.clean
    res["extraction"] = extraction(args, cleaners)
    res["readability"] = readability(args)

    w = res["wtq"]
    print(f"\n## WikiTableQuestions: answer kept ({w['questions']} questions whose answer is in the page)")
    print("| system | " + " | ".join(f"{b}" for b in BUDGETS) + " | s / prune | over budget | crashes |")
    print("|---|" + "---|" * (len(BUDGETS) + 3))
    for label, r in w["systems"].items():
        s = r["seconds_per_prune"]
        print(f"| {label} | " + " | ".join(f"{r['answer_kept'][str(b)]:.3f}" for b in BUDGETS)
              + f" | {'' if s is None else f'{s:.3f}'} | {r['over_budget']} | {r['crashes']} |")
    e = res["extraction"]
    print(f"\n## Article extraction ({e['pages']} pages): cleaned text vs ground-truth article body")
    print("| cleaner | precision | recall | F1 | s / page |")
    print("|---|---|---|---|---|")
    for k, r in e["systems"].items():
        print(f"| {k} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['seconds_per_page']:.3f} |")
    rd = res["readability"]
    print(f"\n## Readability test pages: {rd['pages']} pages, {rd['crashes']} crashes, {rd['invalid_html']} invalid outputs")
    save_results(args, res)
    if args.plot:
        plot(res, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
