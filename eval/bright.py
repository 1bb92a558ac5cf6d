"""Evaluate retrieval (and reranking) on BRIGHT, the reasoning-intensive retrieval benchmark.

    python -m eval.bright --data DIR --domain all --retriever bm25 --json eval/results/bright_bm25.json
    python -m eval.bright --data DIR --domain biology earth_science --retriever hybrid --limit 50
    python -m eval.bright --data DIR --domain biology --reranker cross-encoder
    python -m eval.bright --data DIR --domain biology --expand-query-with-llm qwen2.5-1.5b \
        --llm-cache runs/bright_expansions.jsonl
    python -m eval.bright --data DIR --domain pony --long-documents

DIR is a local snapshot of the Hugging Face dataset xlangai/BRIGHT (Su et al., 2024): one folder
per config, one file per domain, exactly as the hub stores them::

    DIR/examples/biology-00000-of-00001.parquet        query, reasoning, id, excluded_ids,
                                                       gold_ids, gold_ids_long, gold_answer
    DIR/documents/biology-00000-of-00001.parquet       id, content
    DIR/long_documents/biology-00000-of-00001.parquet  id, content  (--long-documents)

Each file may also be JSON lines: ``DIR/examples/biology.jsonl`` or ``biology.jsonl.gz``
(likewise for documents). Parquet needs pyarrow.

Protocol, as in the official ``run.py`` / ``retrievers.py`` of xlang-ai/BRIGHT: relevance is
``gold_ids`` (``gold_ids_long`` with ``--long-documents``), every gold document has grade 1,
and each query's ``excluded_ids`` are removed from its ranking *before* the ranking is cut to
``--top-k`` (so excluded documents neither score nor take a slot). ``"N/A"`` in an id list
means "none". Queries without gold ids are not evaluated (trec_eval skips them too); repeated
query ids are dropped when the rows are identical and renamed ``id#2``, ``id#3`` otherwise.
nDCG@10, Recall@100 and MRR@10 come from pytrec_eval; the average is the plain mean over the
evaluated domains, as in the paper. A domain whose documents are not in DIR is skipped.

Query-side options: ``--expand-query-with-llm SPEC`` asks an LLM to reason about the query with
the prompt of BRIGHT's ``reason.py`` and appends the answer to the query (``--expansion-mode
replace`` uses the answer alone, as BRIGHT's own reasoning runs do). ``--use-gold-reasoning``
appends the dataset's annotated ``reasoning`` field instead (an oracle: it was written knowing
the gold documents). BRIGHT's precomputed LLM reasoning configs (``gpt4_reason`` and others on
the hub) are read with ``--examples-config gpt4_reason``. The LLM options (``--llm-model``,
``--llm-backend``, ``--llm-threads``, ``--llm-cache``; ``--expansion-cache`` is the older name of
the reply cache) are those of every eval script (eval/common.py).

BM25 here is the standard bag-of-words Lucene BM25 (k1=0.9, b=0.4). The official BRIGHT BM25
(gensim ``LuceneBM25Model``) also weights the query terms ("query-side BM25", Ge et al., 2025),
which matters for long queries, so per-domain numbers need not match the paper's BM25 row.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.beir import add_cross_encoder_args, add_retriever_args
from eval.common import (
    add_limit_arg,
    add_llm_args,
    add_output_args,
    llm_from_args,
    rounded,
    run_cli,
)
from ragprune.metrics import evaluate_run, run_from_hits
from ragprune.retrieve.base import Retriever
from ragprune.types import Document, ScoredDocument

log = logging.getLogger("eval.bright")

DOMAINS = ("biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
           "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems")
RETRIEVERS = ("bm25", "dense", "hybrid")
NA = "N/A"  # BRIGHT's placeholder for "no ids"

# nDCG@10 of BM25 in the BRIGHT paper (Su et al., 2024, Table 2; x100). Average: 14.5.
PAPER_BM25_NDCG10 = {
    "biology": 18.9, "earth_science": 27.2, "economics": 14.9, "psychology": 12.5, "robotics": 13.6,
    "stackoverflow": 18.4, "sustainable_living": 15.0, "leetcode": 24.4, "pony": 7.9, "aops": 6.2,
    "theoremqa_questions": 10.4, "theoremqa_theorems": 4.9,
}

# The reasoning prompt of BRIGHT's reason.py (the query's newlines become spaces).
EXPANSION_PROMPT = (
    "{query}\n\n"
    "Instructions:\n"
    "1. Identify the essential problem.\n"
    "2. Think step by step to reason and describe what information could be relevant and helpful to "
    "address the questions in detail.\n"
    "3. Draft an answer with as many thoughts as you have.\n"
)
_RETRIEVE_CHUNK = 32  # queries per retrieve_many call: bounds memory when excluded lists are long


@dataclasses.dataclass(frozen=True)
class BrightQuery:
    """One BRIGHT example, reduced to what retrieval needs.

    Attributes:
        id: Query id (string), unique within its domain.
        query: The question text.
        reasoning: The annotated reasoning field ('' when absent).
        gold: Relevant document ids for the chosen setting (short or long documents).
        excluded: Ids removed from this query's ranking before it is cut and scored.
    """

    id: str
    query: str
    reasoning: str
    gold: tuple[str, ...]
    excluded: frozenset[str]


# ------------------------------------------------------------------------------------------
# Reading the official layout


def split_files(root: Path, config: str, domain: str) -> list[Path]:
    """The file(s) holding one domain of one config, or ``[]`` when there are none.

    Looks in ``root/config/`` for the hub's shards (``<domain>-00000-of-00001.parquet``), then
    ``<domain>.parquet``, ``<domain>.jsonl`` and ``<domain>.jsonl.gz``; a hyphenated domain name
    (``earth-science``) is accepted too.
    """
    folder = root / config
    if not folder.is_dir():
        return []
    for name in dict.fromkeys((domain, domain.replace("_", "-"))):
        shards = sorted(folder.glob(f"{name}-*-of-*.parquet"))
        if shards:
            return shards
        for suffix in (".parquet", ".jsonl", ".jsonl.gz"):
            if (folder / f"{name}{suffix}").is_file():
                return [folder / f"{name}{suffix}"]
    return []


def _expected(root: Path, config: str, domain: str) -> str:
    return f"{root / config / domain}-00000-of-00001.parquet (or {domain}.jsonl / {domain}.jsonl.gz)"


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise ValueError(f"eval.bright: {path}:{n} is not valid JSON ({e}).") from e
            if not isinstance(rec, dict):
                raise ValueError(f"eval.bright: {path}:{n} is not a JSON object.")
            yield rec


def _parquet_records(path: Path, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"eval.bright: {path} is a parquet file and reading parquet needs pyarrow: "
                          f"pip install pyarrow (or convert it to {path.name.split('-')[0]}.jsonl).") from e
    pf = pq.ParquetFile(path)
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise ValueError(f"eval.bright: {path} has no column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(pf.schema_arrow.names)}).")
    for batch in pf.iter_batches(batch_size=4096, columns=list(columns)):
        yield from batch.to_pylist()


def read_records(paths: Sequence[Path], columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Rows of parquet or JSON-lines files, in order (parquet: only ``columns``)."""
    for path in paths:
        if path.suffix == ".parquet":
            yield from _parquet_records(path, columns)
        else:
            yield from _jsonl_records(path)


def _id_list(value: Any) -> list[str]:
    """A list of ids from a list/array/None, without BRIGHT's ``"N/A"`` placeholder."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value if v is not None and str(v) not in ("", NA)]


def _parse_example(rec: dict[str, Any], gold_field: str, where: str) -> BrightQuery:
    for key in ("id", "query"):
        if rec.get(key) in (None, ""):
            raise ValueError(f"eval.bright: {where} has no {key!r} (fields: {', '.join(rec)}).")
    gold = tuple(dict.fromkeys(_id_list(rec.get(gold_field))))  # theoremqa_questions repeats gold ids
    excluded = frozenset(_id_list(rec.get("excluded_ids")))
    if excluded & set(gold):  # the official run.py asserts this never happens
        log.warning("%s: %d gold id(s) also in excluded_ids; they stay rankable", where, len(excluded & set(gold)))
        excluded = excluded - set(gold)
    return BrightQuery(id=str(rec["id"]), query=str(rec["query"]), reasoning=str(rec.get("reasoning") or ""),
                       gold=gold, excluded=excluded)


def _dedupe(queries: list[BrightQuery], where: str) -> list[BrightQuery]:
    """Drop identical repeats of a query id; rename conflicting repeats ``id#2``, ``id#3``..."""
    seen: dict[str, BrightQuery] = {}
    out: list[BrightQuery] = []
    dropped = renamed = 0
    for q in queries:
        prev = seen.get(q.id)
        if prev is not None and prev == q:
            dropped += 1
            continue
        if prev is not None:
            n = 2
            while f"{q.id}#{n}" in seen:
                n += 1
            q = dataclasses.replace(q, id=f"{q.id}#{n}")
            renamed += 1
        seen[q.id] = q
        out.append(q)
    if dropped or renamed:
        log.warning("%s: repeated query ids: %d identical row(s) dropped, %d different row(s) renamed id#N",
                    where, dropped, renamed)
    return out


def load_examples(paths: Sequence[Path], *, long_documents: bool = False) -> list[BrightQuery]:
    """Every example of one domain (deduplicated), with gold ids for the chosen setting.

    Raises:
        ValueError: a row without ``id`` or ``query``, or a malformed file.
        ImportError: parquet without pyarrow.
    """
    gold_field = "gold_ids_long" if long_documents else "gold_ids"
    columns = ("query", "reasoning", "id", "excluded_ids", gold_field)
    where = ", ".join(str(p) for p in paths)
    rows = [_parse_example(rec, gold_field, f"{where} row {n}")
            for n, rec in enumerate(read_records(paths, columns), 1)]
    return _dedupe(rows, where)


def load_documents(paths: Sequence[Path], label: str = "documents") -> list[Document]:
    """The corpus of one domain: ``{id, content}`` rows as :class:`Document` (first of repeated ids kept).

    Raises:
        ValueError: a row without ``id`` or ``content``, or no rows at all.
    """
    docs: list[Document] = []
    seen: set[str] = set()
    repeats = 0
    rows = read_records(paths, ("id", "content"))
    for n, rec in enumerate(tqdm(rows, desc=label, unit="doc", mininterval=2, leave=False), 1):
        if rec.get("id") is None or not isinstance(rec.get("content"), str):
            raise ValueError(f"eval.bright: {paths[0]} row {n} needs a string 'content' and an 'id' "
                             f"(fields: {', '.join(rec)}).")
        doc_id = str(rec["id"])
        if doc_id in seen:
            repeats += 1
            continue
        seen.add(doc_id)
        docs.append(Document(id=doc_id, text=rec["content"]))
    if repeats:
        log.warning("%s: %d repeated document id(s) ignored (first kept)", paths[0], repeats)
    if not docs:
        raise ValueError(f"eval.bright: {', '.join(map(str, paths))} holds no documents.")
    return docs


# ------------------------------------------------------------------------------------------
# Query text: original, gold reasoning, or LLM reasoning


def expansion_prompt(query: str) -> str:
    """BRIGHT's reasoning prompt for one query."""
    return EXPANSION_PROMPT.format(query=query.replace("\n", " "))


class QueryExpander:
    """LLM reasoning about each query.

    Replies are kept on disk by the LLM itself: ``--llm-cache`` wraps it in a
    :class:`~ragprune.rerank.llm.CachedLLM` (the workbench's one reply cache), so a resumed run
    asks only the queries it has no reply for; a line cut by a killed run is skipped.

    Args:
        llm: Any :class:`ragprune.rerank.llm.LLMBackend` (``generate(prompt, max_tokens=...)``).
        max_tokens: Generation budget per query.
    """

    def __init__(self, llm: Any, *, max_tokens: int = 512) -> None:
        self.llm, self.max_tokens = llm, max_tokens
        self._asked = 0

    @property
    def calls(self) -> int:
        """Prompts the backend answered (replies replayed from ``--llm-cache`` not counted)."""
        return getattr(self.llm, "misses", self._asked)

    def expand(self, domain: str, queries: Sequence[BrightQuery]) -> list[str]:
        """The LLM's reasoning for each query ('' when it returned nothing)."""
        out = []
        for q in tqdm(queries, desc=f"{domain}: expand", unit="query", leave=False):
            out.append(self.llm.generate(expansion_prompt(q.query), max_tokens=self.max_tokens).text.strip())
            self._asked += 1
        empty = sum(not t for t in out)
        if empty:
            log.warning("%s: the LLM returned no text for %d of %d queries; those keep the original query",
                        domain, empty, len(out))
        return out


def query_texts(queries: Sequence[BrightQuery], args: argparse.Namespace, domain: str,
                expander: QueryExpander | None) -> list[str]:
    """The text each query is retrieved with, following ``--use-gold-reasoning`` / LLM expansion."""
    if args.use_gold_reasoning:
        return [f"{q.query}\n{q.reasoning}".strip() for q in queries]
    if expander is None:
        return [q.query for q in queries]
    extra = expander.expand(domain, queries)
    if args.expansion_mode == "replace":
        return [e or q.query for q, e in zip(queries, extra)]
    return [f"{q.query}\n{e}".strip() for q, e in zip(queries, extra)]


def describe_query(args: argparse.Namespace, llm: Any) -> str:
    """One-line description of the query side (for the pipeline name)."""
    if args.use_gold_reasoning:
        return "query+gold_reasoning"
    if llm is not None:
        inner = getattr(llm, "llm", llm)  # the model, not its --llm-cache wrapper
        return f"{'query+' if args.expansion_mode == 'append' else ''}llm_reasoning({inner!r})"
    return "query"


def build_llm(args: argparse.Namespace) -> Any:
    """The LLM of ``--expand-query-with-llm`` (None when not asked for)."""
    if not args.expand_query_with_llm:
        return None
    return llm_from_args(args, spec=args.expand_query_with_llm)


# ------------------------------------------------------------------------------------------
# Retrieval with per-query exclusion, reranking, metrics


def build_retriever(args: argparse.Namespace, docs: list[Document], key_path: Path) -> tuple[Retriever, str]:
    """BM25 / dense / hybrid over ``docs``, built exactly as ``eval.beir`` builds them."""
    from eval.beir import build_retriever as beir_retriever
    from ragprune.datasets import BeirDataset

    return beir_retriever(args, BeirDataset(name=key_path.name, corpus=docs, queries={}, qrels={}), key_path)


def retrieve_excluding(retriever: Retriever, texts: Sequence[str], excluded: Sequence[frozenset[str]],
                       k: int) -> list[list[ScoredDocument]]:
    """Top ``k`` per query after dropping that query's excluded ids, as BRIGHT's evaluation does.

    Each list is retrieved ``k + (number of its excluded ids in the corpus)`` deep, so exclusion
    never leaves a ranking shorter than ``k``. A hybrid retriever excludes inside each of its
    lists before fusing them.
    """
    from ragprune.retrieve.hybrid import HybridRetriever

    if isinstance(retriever, HybridRetriever):
        depth = max(k, retriever.depth)
        lists = [retrieve_excluding(r, texts, excluded, depth) for r in retriever.retrievers]
        return [retriever._fuse([lst[i] for lst in lists], k) for i in range(len(texts))]
    ids = {d.id for d in retriever.documents}
    depth = k + max((len(ex & ids) for ex in excluded), default=0)
    hits = retriever.retrieve_many(list(texts), depth)
    return [[h for h in lst if h.document.id not in ex][:k] for lst, ex in zip(hits, excluded)]


def _retrieve(retriever: Retriever, texts: Sequence[str], excluded: Sequence[frozenset[str]], k: int,
              domain: str) -> list[list[ScoredDocument]]:
    """:func:`retrieve_excluding` in chunks of queries (bounded memory), with a progress bar."""
    out: list[list[ScoredDocument]] = []
    bar = tqdm(total=len(texts), desc=f"{domain}: retrieve", unit="query", leave=False)
    for start in range(0, len(texts), _RETRIEVE_CHUNK):
        end = start + _RETRIEVE_CHUNK
        out.extend(retrieve_excluding(retriever, texts[start:end], excluded[start:end], k))
        bar.update(len(texts[start:end]))
    bar.close()
    return out


def build_rerank_stage(args: argparse.Namespace) -> tuple[Any, float, str] | None:
    """The cross-encoder, its first-stage fusion weight and a name (None without ``--reranker``)."""
    if not args.reranker:
        return None
    from eval.beir import build_reranker
    from ragprune.rerank.cross_encoder import _recommended

    reranker = build_reranker(args)  # raw scores; interpolation with the first stage is done here
    weight = args.first_stage_weight
    if weight is None:
        weight = float(_recommended(reranker.path).get("first_stage_weight", 0.0))
    return reranker, weight, f"{reranker!r}" + (f" fused with first stage (weight {weight})" if weight else "")


def rerank(stage: tuple[Any, float, str], queries: Sequence[str], hits: list[list[ScoredDocument]],
           domain: str) -> list[list[ScoredDocument]]:
    """Rerank every candidate list with the original query text."""
    from eval.beir import _fuse

    reranker, weight, _ = stage
    raw = [reranker.rerank(q, h) for q, h in zip(tqdm(queries, desc=f"{domain}: rerank", unit="query",
                                                      leave=False), hits)]
    return _fuse(hits, raw, weight)


def score(queries: Sequence[BrightQuery], hits: Sequence[Sequence[ScoredDocument]]) -> dict[str, float]:
    """nDCG@10, Recall@100, MRR@10 (pytrec_eval) with every gold id at grade 1."""
    qids = [q.id for q in queries]
    qrels = {q.id: {d: 1 for d in q.gold} for q in queries}
    return evaluate_run(qrels, run_from_hits(qids, hits, ignore_identical_ids=False))


# ------------------------------------------------------------------------------------------
# The benchmark loop


def _selected_domains(names: Sequence[str]) -> list[str]:
    return list(DOMAINS) if "all" in names else list(dict.fromkeys(names))


def _check_layout(args: argparse.Namespace, domains: Sequence[str]) -> dict[str, str]:
    """Fail early on a wrong folder; return ``{domain: reason}`` for domains that cannot run."""
    root, doc_config = args.data, _doc_config(args)
    if not root.is_dir():
        raise FileNotFoundError(f"eval.bright: --data {root} is not a folder; pass a local snapshot of the "
                                "Hugging Face dataset xlangai/BRIGHT (examples/, documents/).")
    if not (root / args.examples_config).is_dir():
        raise FileNotFoundError(f"eval.bright: {root} has no {args.examples_config}/ folder; expected the BRIGHT "
                                f"layout {_expected(root, args.examples_config, domains[0])}.")
    skipped = {}
    with_docs = [d for d in domains if split_files(root, doc_config, d)]
    if not with_docs:
        where = _expected(root, doc_config, domains[0] if len(domains) == 1 else "<domain>")
        raise FileNotFoundError(
            f"eval.bright: no BRIGHT {doc_config} for {_names(domains)} under {root}. Put the "
            f"'{doc_config}' config of xlangai/BRIGHT there: {where}, with fields id and content. "
            f"Examples without documents cannot be evaluated.")
    for d in domains:
        if d not in with_docs:
            skipped[d] = f"no documents in {root / doc_config}"
        elif not split_files(root, args.examples_config, d):
            skipped[d] = f"no examples in {root / args.examples_config}"
    for why, names in _group(skipped).items():
        log.warning("skipping %s: %s (expected files named <domain>-00000-of-00001.parquet, <domain>.jsonl "
                    "or <domain>.jsonl.gz)", ", ".join(names), why)
    return skipped


def _names(domains: Sequence[str]) -> str:
    return f"any of the {len(DOMAINS)} domains" if len(domains) == len(DOMAINS) else ", ".join(domains)


def _group(skipped: dict[str, str]) -> dict[str, list[str]]:
    """``{reason: [domains]}`` in domain order."""
    out: dict[str, list[str]] = {}
    for d, why in skipped.items():
        out.setdefault(why, []).append(d)
    return out


def _doc_config(args: argparse.Namespace) -> str:
    return "long_documents" if args.long_documents else "documents"


def run_domain(args: argparse.Namespace, domain: str, expander: QueryExpander | None,
               stage: tuple[Any, float, str] | None) -> tuple[dict[str, Any] | None, str, str]:
    """Evaluate one domain; returns ``(result or None when skipped, retriever name, skip reason)``."""
    t0 = time.perf_counter()
    examples = load_examples(split_files(args.data, args.examples_config, domain), long_documents=args.long_documents)
    queries = [q for q in examples if q.gold]
    if not queries:
        field = "gold_ids_long" if args.long_documents else "gold_ids"
        return None, "", f"no query has {field}"
    queries = queries[: args.limit] if args.limit else queries
    doc_config = _doc_config(args)
    docs = load_documents(split_files(args.data, doc_config, domain), f"{domain}: {doc_config}")
    retriever, name = build_retriever(args, docs, args.data / doc_config / domain)
    texts = query_texts(queries, args, domain, expander)
    excluded = [frozenset() if args.keep_excluded_ids else q.excluded for q in queries]
    hits = _retrieve(retriever, texts, excluded, args.top_k, domain)
    result: dict[str, Any] = {"num_queries": len(queries), "num_examples": len(examples),
                              "num_without_gold": len(examples) - sum(1 for q in examples if q.gold),
                              "num_documents": len(docs)}
    if stage is not None:
        result["first_stage_metrics"] = rounded(score(queries, hits))
        hits = rerank(stage, [q.query for q in queries], hits, domain)
    result["metrics"] = rounded(score(queries, hits))
    result["paper_bm25_ndcg@10"] = round(PAPER_BM25_NDCG10[domain] / 100, 4)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result, name, ""


def _average(per_domain: dict[str, dict[str, Any]], key: str = "metrics") -> dict[str, float]:
    rows = [r[key] for r in per_domain.values()]
    return {m: round(sum(r[m] for r in rows) / len(rows), 4) for m in rows[0]}


def run(args: argparse.Namespace, llm: Any = None) -> dict[str, Any]:
    """Evaluate every selected domain; ``llm`` overrides ``--expand-query-with-llm`` (for tests).

    Raises:
        FileNotFoundError: ``--data`` is not a BRIGHT folder, or no selected domain has documents.
        ValueError: malformed files, or no domain left anything to evaluate.
    """
    t0 = time.perf_counter()
    domains = _selected_domains(args.domain)
    skipped = _check_layout(args, domains)
    llm = llm if llm is not None else build_llm(args)
    expander = QueryExpander(llm, max_tokens=args.expansion_max_tokens) if llm else None
    stage = build_rerank_stage(args)
    per_domain: dict[str, dict[str, Any]] = {}
    retriever_name = args.retriever
    for d in tqdm([d for d in domains if d not in skipped], desc="BRIGHT", unit="domain", disable=len(domains) < 2):
        res, name, why = run_domain(args, d, expander, stage)
        if res is None:
            log.warning("skipping %s: %s", d, why)
            skipped[d] = why
            continue
        per_domain[d], retriever_name = res, name
    if not per_domain:
        raise ValueError("eval.bright: nothing to evaluate: " + "; ".join(f"{d}: {w}" for d, w in skipped.items()))
    query_side = describe_query(args, llm)
    pipeline = retriever_name if query_side == "query" else f"{query_side} | {retriever_name}"
    if stage is not None:
        pipeline += f" >> {stage[2]}"
    result: dict[str, Any] = {
        "benchmark": "BRIGHT",
        "data": str(args.data),
        "documents": _doc_config(args),
        "relevance": "gold_ids_long" if args.long_documents else "gold_ids",
        "excluded_ids": "kept (diagnostic)" if args.keep_excluded_ids else "removed",
        "pipeline": pipeline,
        "top_k": args.top_k,
        "domains": per_domain,
        "skipped": {d: skipped[d] for d in domains if d in skipped},
        "average": _average(per_domain),
        "num_domains": len(per_domain),
        "num_queries": sum(r["num_queries"] for r in per_domain.values()),
        "paper_bm25_ndcg@10_same_domains": round(sum(r["paper_bm25_ndcg@10"] for r in per_domain.values())
                                                 / len(per_domain), 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if stage is not None:
        result["first_stage_average"] = _average(per_domain, "first_stage_metrics")
    if expander is not None:
        result["llm_calls"] = expander.calls
    return result


def print_table(result: dict[str, Any]) -> None:
    """Markdown table: one row per domain, then the average; skipped domains listed below."""
    print(f"BRIGHT ({result['documents']}), pipeline: {result['pipeline']}")
    print("| domain | queries | documents | nDCG@10 | Recall@100 | MRR@10 | paper BM25 nDCG@10 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for d, r in result["domains"].items():
        m = r["metrics"]
        print(f"| {d} | {r['num_queries']} | {r['num_documents']} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
              f"{m['mrr@10']:.4f} | {r['paper_bm25_ndcg@10']:.3f} | {r['seconds']} |")
    a, n = result["average"], result["num_domains"]
    print(f"| **average** ({n} of {len(DOMAINS)} domains) | {result['num_queries']} | | {a['ndcg@10']:.4f} | "
          f"{a['recall@100']:.4f} | {a['mrr@10']:.4f} | {result['paper_bm25_ndcg@10_same_domains']:.3f} | "
          f"{result['seconds']} |")
    if "first_stage_average" in result:
        f = result["first_stage_average"]
        print(f"| ... first stage alone (average) | | | {f['ndcg@10']:.4f} | {f['recall@100']:.4f} | "
              f"{f['mrr@10']:.4f} | | |")
    for why, names in _group(result["skipped"]).items():
        print(f"skipped ({why}): {', '.join(names)}")


# ------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.bright", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="local xlangai/BRIGHT snapshot: examples/, documents/, long_documents/")
    p.add_argument("--domain", nargs="+", default=["all"], choices=(*DOMAINS, "all"), metavar="DOMAIN",
                   help=f"one or more of {', '.join(DOMAINS)}, or all (default)")
    p.add_argument("--retriever", choices=RETRIEVERS, default="bm25")
    p.add_argument("--long-documents", action="store_true",
                   help="retrieve from long_documents/ and judge with gold_ids_long")
    p.add_argument("--examples-config", default="examples",
                   help="folder of the examples config (e.g. gpt4_reason: BRIGHT's precomputed LLM reasoning)")
    p.add_argument("--top-k", type=int, default=100, help="ranking depth after exclusion (default 100)")
    add_limit_arg(p, "--max-queries", help="evaluate only the first N judged queries per domain")
    p.add_argument("--keep-excluded-ids", action="store_true",
                   help="diagnostic only: do not remove excluded_ids (not the official protocol)")
    g = p.add_argument_group("query reasoning")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--expand-query-with-llm", metavar="SPEC", default=None,
                   help="LLM that reasons about each query before retrieval: GGUF path, model folder, short name "
                        "(qwen2.5-1.5b, qwen2.5-0.5b, ...) or an OpenAI-compatible base URL")
    x.add_argument("--use-gold-reasoning", action="store_true",
                   help="append the dataset's annotated 'reasoning' field to the query (oracle)")
    g.add_argument("--expansion-mode", choices=("append", "replace"), default="append",
                   help="append the LLM reasoning to the query (default) or use it alone (BRIGHT's reason runs)")
    add_llm_args(g, spec=False, cache_aliases=("--expansion-cache",))
    g.add_argument("--expansion-max-tokens", type=int, default=512, help="tokens generated per query")
    g = p.add_argument_group("retrievers (as in eval.beir)")
    add_retriever_args(g)
    g = p.add_argument_group("reranking")
    g.add_argument("--reranker", default=None, choices=[None, "cross-encoder"],
                   help="rerank the top-k with a cross-encoder (it sees the original query)")
    add_cross_encoder_args(g)
    add_output_args(p)
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error("--top-k must be >= 1")
    if args.expansion_max_tokens < 1:
        p.error("--expansion-max-tokens must be >= 1")
    if str(args.cache_dir) in ("", "."):
        args.cache_dir = None
    return args


def main(argv: list[str] | None = None) -> int:
    return run_cli("eval.bright", argv, parse_args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
