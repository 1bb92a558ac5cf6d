"""IR metrics computed by pytrec_eval (the trec_eval reference implementation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["evaluate_run", "run_from_hits"]


def run_from_hits(query_ids: Sequence[str], hits: Sequence[Sequence], *, ignore_identical_ids: bool = True
                  ) -> dict[str, dict[str, float]]:
    """Turn result lists of ``ScoredDocument`` into a TREC run ``{qid: {docid: score}}``.

    Scores are replaced by a strictly decreasing rank score so that trec_eval's own tie
    handling (by doc id) cannot reorder our ranking. With ``ignore_identical_ids`` (BEIR's
    default) a hit whose document id equals the query id is dropped.
    """
    run: dict[str, dict[str, float]] = {}
    for qid, lst in zip(query_ids, hits):
        ranked = [h.document.id for h in lst if not (ignore_identical_ids and h.document.id == qid)]
        run[qid] = {d: float(len(ranked) - i) for i, d in enumerate(ranked)}
    return run


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
                 ) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 averaged over every query in ``qrels``.

    A query without results counts as 0 for every metric.
    """
    try:
        import pytrec_eval
    except ImportError as e:
        raise ImportError("metrics need pytrec_eval: pip install 'ragprune[eval]'") from e
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    full = {q: dict(run.get(q, {})) for q in qrels}
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in full.items()}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    ev_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    per_q = ev.evaluate({q: r for q, r in full.items() if r})
    per_rr = ev_rr.evaluate({q: r for q, r in top10.items() if r})
    n = len(qrels)
    if n == 0:
        raise ValueError("evaluate_run: qrels are empty; nothing to evaluate.")
    return {
        "ndcg@10": sum(v["ndcg_cut_10"] for v in per_q.values()) / n,
        "recall@100": sum(v["recall_100"] for v in per_q.values()) / n,
        "mrr@10": sum(v["recip_rank"] for v in per_rr.values()) / n,
    }
