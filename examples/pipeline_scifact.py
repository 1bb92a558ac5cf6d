"""End to end on real data: BEIR SciFact -> BM25 -> shipped reranker -> shipped pruner -> budget.

Run:  python examples/pipeline_scifact.py --data ../shared/data/beir_scifact --queries 3
Needs: pip install torch "ragprune[rerank,models]" and SciFact in BEIR layout
(corpus.jsonl, queries.jsonl, qrels/test.tsv), e.g. from https://github.com/beir-cellar/beir.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from ragprune import BM25Retriever, CrossEncoderReranker, Document, Pipeline, ProvencePruner


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/beir_scifact"), help="SciFact in BEIR layout")
    p.add_argument("--queries", type=int, default=3, help="how many test claims to run")
    p.add_argument("--max-tokens", type=int, default=300, help="token budget of each context")
    args = p.parse_args(argv)
    if not (args.data / "corpus.jsonl").is_file():
        print(f"no corpus.jsonl in {args.data}; pass --data DIR (SciFact in BEIR layout)", file=sys.stderr)
        return 2

    docs = [Document(id=r["_id"], title=r.get("title", ""), text=r["text"]) for r in read_jsonl(args.data / "corpus.jsonl")]
    queries = {r["_id"]: r["text"] for r in read_jsonl(args.data / "queries.jsonl")}
    qrels: dict[str, set[str]] = {}
    with (args.data / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])

    t = time.perf_counter()
    bm25 = BM25Retriever.from_documents(docs)
    print(f"indexed {len(docs)} abstracts in {time.perf_counter() - t:.1f}s")
    pipe = Pipeline(bm25, CrossEncoderReranker(first_stage_weight="recommended"), ProvencePruner(), max_tokens=args.max_tokens,
                    candidates=20, top_k=5)

    for qid in [q for q in queries if q in qrels][: args.queries]:
        ctx = pipe.run(queries[qid])
        gold = [d.id for d in ctx.documents if d.id in qrels[qid]]
        s = ctx.stats
        print(f"\nclaim {qid}: {ctx.query}")
        print(f"  {int(s['tokens_candidates'])} tokens in the top 5 abstracts -> {ctx.tokens} in the context "
              f"({s['compression']:.0%} removed); relevant abstracts in the context: {gold or 'none'}")
        for line in ctx.text.splitlines():
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
