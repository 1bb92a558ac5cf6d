"""HtmlRAG-style pruning: clean the page, build the block tree, score blocks, fill one budget.

Scoring and budgeting are separate steps: a scorer orders the blocks, then the library's one
budget function (:func:`ragprune.budget.fill_budget`) keeps the best until ``max_tokens`` is
met, and the kept blocks are rebuilt as HTML in document order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .._validate import check_number, check_positive_int, check_query
from ..budget import Unit, fill_budget
from ..text import TokenCounter, count_tokens, tokenizer_safe
from ..types import Document, PrunedHtml
from .blocktree import Block, build_blocks, element_text, rebuild
from .clean import DEFAULT_MAX_BYTES, clean_tree, parse_html

__all__ = ["HtmlPruner", "BlockScorer"]

BlockScorer = Callable[[str, Sequence[str]], Sequence[float]]


class HtmlPruner:
    """Keep the blocks of a web page that matter for a query, within a token budget.

    Args:
        scorer: How blocks are scored against the query: ``"bm25"`` (default, no model),
            ``"dense"`` (all-MiniLM-L6-v2 cosine), any object with ``score(queries, docs)``
            (a pointwise :class:`~ragprune.rerank.base.Scorer`, e.g. ``CrossEncoderReranker`` or
            ``ProvencePruner``; not ``PairwiseReranker``, which only compares blocks in pairs), or a
            callable ``(query, texts) -> scores``.
        max_tokens: Budget of the pruned HTML (tags included), by ``token_counter``.
        max_node_words: Block granularity: the most words one block may hold.
        use_context: Score ``heading + table header + block text`` instead of the block text
            alone (the context is never output).
        budget_on: ``"html"`` (count tokens of the serialised HTML, default) or ``"text"``.
        token_counter: Token counter for the budget and the compression figure.
        max_bytes: Larger pages are refused with a clear error.
        refiner: Optional second stage (HtmlRAG's coarse-to-fine pruning): a scorer of the same
            kinds as ``scorer``, typically a stronger and slower one (``ProvencePruner``,
            ``CrossEncoderReranker``, or a callable wrapping an LLM). The first scorer picks
            candidate blocks worth ``refine_factor`` times the budget; only those are scored by
            the refiner, whose scores then fill the budget. Blocks outside the candidates are
            never kept.
        refine_factor: Size of the candidate pool, in multiples of the budget (>= 1).

    Example:
        >>> page = HtmlPruner(max_tokens=512).prune("When was the Bellagio built?", html)  # doctest: +SKIP
        >>> page.html, page.compression                                                   # doctest: +SKIP
    """

    def __init__(self, scorer: str | Any = "bm25", *, max_tokens: int = 2000, max_node_words: int = 64,
                 use_context: bool = True, budget_on: str = "html", token_counter: TokenCounter = count_tokens,
                 max_bytes: int = DEFAULT_MAX_BYTES, refiner: str | Any | None = None,
                 refine_factor: float = 4.0) -> None:
        owner = "HtmlPruner"
        self.max_tokens = check_positive_int(max_tokens, "max_tokens", owner)
        self.max_node_words = check_positive_int(max_node_words, "max_node_words", owner)
        self.max_bytes = check_positive_int(max_bytes, "max_bytes", owner)
        if budget_on not in ("html", "text"):
            raise ValueError(f"{owner}: unknown budget_on {budget_on!r}; expected 'html' or 'text'.")
        self.budget_on = budget_on
        self.use_context = bool(use_context)
        if not callable(token_counter):
            raise TypeError(f"{owner}: token_counter must be a callable text -> int, got {type(token_counter).__name__}.")
        self.token_counter = token_counter
        self._score = self._make_scorer(scorer)
        self.scorer_name = scorer if isinstance(scorer, str) else type(scorer).__name__
        self.refine_factor = check_number(refine_factor, "refine_factor", owner, low=1.0)
        self._refine = self._make_scorer(refiner) if refiner is not None else None
        self.refiner_name = (refiner if isinstance(refiner, str) or refiner is None else type(refiner).__name__)

    def _make_scorer(self, scorer: Any) -> BlockScorer:
        if scorer == "bm25":
            return _bm25_scores
        if scorer == "dense":
            from ..retrieve.dense import load_sentence_transformer

            model = load_sentence_transformer("minilm", owner="HtmlPruner")
            lock = threading.Lock()

            def dense(query: str, texts: Sequence[str]) -> np.ndarray:
                with lock:
                    emb = model.encode([tokenizer_safe(t) for t in (query, *texts)], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
                return emb[1:] @ emb[0]

            return dense
        if hasattr(scorer, "score") and callable(scorer.score):
            return lambda q, texts: scorer.score([q] * len(texts), [Document(id=str(i), text=t) for i, t in enumerate(texts)])
        if callable(scorer) and not isinstance(scorer, str):
            return scorer
        raise ValueError(f"HtmlPruner: unknown scorer {scorer!r}; use 'bm25', 'dense', a reranker/pruner, or a "
                         "callable (query, texts) -> scores.")

    def blocks(self, html: str | bytes) -> tuple[Any, list[Block]]:
        """Clean ``html`` and return ``(body, blocks)``."""
        body = clean_tree(parse_html(html, max_bytes=self.max_bytes, owner="HtmlPruner.prune"))
        return body, build_blocks(body, self.max_node_words)

    def prune(self, query: str, html: str | bytes, max_tokens: int | None = None) -> PrunedHtml:
        """Prune one page for ``query``.

        Args:
            query: The question.
            html: Raw page (str, or bytes whose charset comes from the document). Plain text works.
            max_tokens: Override the budget for this call only.

        Returns:
            :class:`~ragprune.types.PrunedHtml`; empty or whitespace pages give an empty result.

        Raises:
            TypeError/ValueError: blank query, non-text html, oversized page, bad budget.
        """
        import lxml.html

        check_query(query, "HtmlPruner.prune")
        budget = self.max_tokens if max_tokens is None else check_positive_int(max_tokens, "max_tokens", "HtmlPruner.prune")
        body, blocks = self.blocks(html)
        if not blocks:
            return PrunedHtml(html="<body></body>", text="", blocks=(), tokens=0, compression=0.0)
        texts = [f"{b.context}\n{b.text}" if self.use_context and b.context else b.text for b in blocks]
        scores = _checked(self._score(query, texts), len(blocks), "scorer")
        groups, extra, headers = self._header_costs(body, blocks)
        units = [Unit(g, b.index, "" if b.index in headers else b.html if self.budget_on == "html" else b.text,
                      float(s)) for b, g, s in zip(blocks, groups, scores)]
        if self._refine is not None:
            units, scores = self._refined(query, texts, units, scores, budget, extra)
        chosen = fill_budget(units, budget, self.token_counter, group_cost=extra)
        kept = sorted(u.position for u in chosen.units)
        truncated = chosen.truncated
        out = None
        if not truncated:
            # rebuilt pages carry ancestor tags the block costs did not: keep the largest
            # best-first prefix of the kept blocks whose page fits the budget (the cost only grows
            # with more blocks, so a binary search needs O(log n) rebuilds); when not even the
            # best block fits on its own, it is cut like a block over budget
            best_first = sorted((blocks[i] for i in kept), key=lambda b: (-scores[b.index], b.index))
            out = rebuild(body, best_first)
            if self._cost(out) > budget:
                lo, hi = 0, len(best_first) - 1
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if self._cost(rebuild(body, best_first[:mid])) <= budget:
                        lo = mid
                    else:
                        hi = mid - 1
                best_first = best_first[:lo]
                out = rebuild(body, best_first) if best_first else None
                truncated = not best_first
            kept = sorted(b.index for b in best_first) or kept
        if truncated:  # cut the best block; a header row kept for free only when it is all there is
            pool = kept or [u.position for u in units]  # empty when a table header alone is over budget
            best = max([i for i in pool if i not in headers] or pool, key=lambda i: (scores[i], -i))
            out = self._truncated(body, blocks[best], budget)
            if out is None:  # not even one word with its enclosing tags fits the budget
                return PrunedHtml(html="<body></body>", text="", blocks=(), tokens=0, compression=1.0,
                                  truncated=True)
            kept = [best]
        out_html = lxml.html.tostring(out, encoding="unicode")
        out_text = element_text(out)
        total = self.token_counter(element_text(body))
        compression = 1.0 - self.token_counter(out_text) / total if total else 0.0
        return PrunedHtml(html=out_html, text=out_text, blocks=tuple(kept), tokens=self._cost(out),
                          compression=max(0.0, min(1.0, compression)), truncated=truncated)

    def _header_costs(self, body: Any, blocks: Sequence[Block]) -> tuple[list[int], dict[int, int], set[int]]:
        """Budget groups of the blocks, the tokens each group costs once, and the header blocks.

        A kept table row is rebuilt with its table's header row (:func:`rebuild`), text its own
        HTML does not hold: the rows of one table (the header row's own block included) share a
        group whose cost is that header row, so the budget pays for the header exactly once,
        whichever of them is kept first; the header row's block itself then costs nothing more
        (its indices are returned). Every other block is a group of its own with no extra
        cost. Groups are numbered by the first block they hold, so ties still break in
        document order.
        """
        import lxml.html

        from .blocktree import _header_row, _resolver

        groups: list[int] = []
        extra: dict[int, int] = {}
        first: dict[int, int] = {}
        headers: set[int] = set()
        resolve = _resolver(body)
        keep_alive = []  # lxml proxies: a freed proxy's id() may be reused by another element
        for b in blocks:
            group = b.index
            if b.kind == "element" and b.tag in ("tr", "td", "th"):
                el = resolve(b.path)
                table = next(el.iterancestors("table"), None)
                hdr = _header_row(table) if table is not None else None
                if hdr is not None and (hdr is el or el in hdr.iterdescendants()):
                    if b.tag == "tr":
                        headers.add(b.index)
                    else:  # a cell of the header row: rebuilt as it is, no header added
                        hdr = None
                if hdr is not None:
                    keep_alive.append(hdr)
                    group = first.setdefault(id(hdr), b.index)
                    if group not in extra:
                        extra[group] = self.token_counter(
                            lxml.html.tostring(hdr, encoding="unicode", with_tail=False)
                            if self.budget_on == "html" else element_text(hdr))
            groups.append(group)
        return groups, extra, headers

    def _refined(self, query: str, texts: Sequence[str], units: list[Unit], scores: np.ndarray,
                 budget: int, extra: dict[int, int] | None = None) -> tuple[list[Unit], np.ndarray]:
        """Second stage: re-score the first stage's candidate pool with the refiner."""
        pool = fill_budget(units, max(budget, int(budget * self.refine_factor)), self.token_counter,
                           group_cost=extra)
        cand = sorted(u.position for u in pool.units)
        if pool.truncated:  # one block larger than the pool: nothing to choose between
            return [units[cand[0]]], scores
        fine = _checked(self._refine(query, [texts[i] for i in cand]), len(cand), "refiner")
        refined = np.full(len(scores), -np.inf)
        refined[cand] = fine
        return [replace(units[i], score=float(refined[i])) for i in cand], refined

    def _cost(self, el: Any) -> int:
        import lxml.html

        return self.token_counter(lxml.html.tostring(el, encoding="unicode") if self.budget_on == "html"
                                  else element_text(el))

    def _truncated(self, body: Any, block: Block, budget: int) -> Any | None:
        """The best block alone is over budget: the page with its longest word prefix that fits
        (None when not even its first word does)."""
        words = block.text.split()

        def page(n: int) -> Any:
            return rebuild(body, [replace(block, kind="piece", text=" ".join(words[:n]))])

        lo, hi = 0, len(words)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._cost(page(mid)) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return page(lo) if lo else None

    def __repr__(self) -> str:
        refine = f", refiner={self.refiner_name!r}" if self._refine is not None else ""
        return (f"HtmlPruner(scorer={self.scorer_name!r}{refine}, max_tokens={self.max_tokens}, "
                f"max_node_words={self.max_node_words})")


def _checked(scores: Any, n: int, what: str) -> np.ndarray:
    """Scores as a float array of length ``n`` (NaN -> -inf), or a clear error."""
    out = np.asarray(scores, dtype=float)
    if out.shape != (n,):
        raise ValueError(f"HtmlPruner: the {what} returned {out.shape} scores for {n} blocks.")
    return np.nan_to_num(out, nan=-np.inf)


def _bm25_scores(query: str, texts: Sequence[str]) -> np.ndarray:
    from ..retrieve.bm25 import BM25Retriever

    return BM25Retriever.from_documents(list(texts), show_progress=False).get_scores(query).astype(float)
