"""Provence-style pruning: one encoder pass both reranks a passage and labels its sentences.

Following Chirkova et al. (2025), a cross-encoder reads ``[CLS] query [SEP] title + context
[SEP]``. A ranking head on the pooled first token scores the passage; a token head gives
every context token a keep probability. A sentence is kept when the mean keep probability of
its tokens reaches ``threshold`` (0.1 in the paper). Contexts longer than the model window
are cut into overlapping windows; every token is scored in every window it appears in and
the probabilities are averaged, so nothing is silently dropped.

Passage weighting (``passage_weighting``, default ``"max"``): the documents pruned together
for one query are compared through the ranking head, and each sentence's keep-probability is
multiplied by its passage's weight ``max(exp(r - r_best), sigmoid(r - 1))``, where ``r`` is the
passage's ranking logit and ``r_best`` the best one in the set. Sentences of the best passage
keep their probability; sentences of passages that rank far below it fade, unless their passage
is relevant on its own (a multi-hop question needs two passages). This is how one pass both
reranks and prunes: the token head alone seldom drops a whole off-topic passage. A single
passage is never down-weighted relative to itself. The rule and its two constants were chosen on
the SciFact dev split (``eval/pruning.py``; the README has the held-out numbers).

Lexical fusion (``lexical_weight``, default 0.7): the sentence score is
``w_p * ((1 - a) * keep_probability + a * bm25 / bm25_max)``, where ``bm25`` is the BM25 score
of the sentence for the query (the sentences of all passages pruned together are the
collection) and ``bm25_max`` the best one among them. The ranking head still decides which
passages count (``w_p``); the two sentence signals are complementary: the token head finds
answers phrased differently from the query, BM25 finds the sentences that repeat its terms, which
a model trained on a few thousand CPU examples misses. ``a = 0.7`` was the best of
{0, 0.3, 0.5, 0.7, 0.85, 1} for F2 on the SciFact dev split and on SQuAD training-article
questions the model did not see (``python -m eval.lexical_sweep``); ``0`` is the model alone.

Multi-hop reading (``hops``, default 1): with ``hops=2`` the sentence the model rates best in
the first reading (passage-weighted token head, before lexical fusion: the BM25 favourite only
repeats the question's words) is appended to the query and the passages are read again; each
sentence keeps the better of its scores. The second reading finds the bridge passage of a two-hop question
(HotpotQA), which shares no words with the question, at the cost of a second model pass; on
single-hop sets (SciFact, SQuAD) it keeps more off-target sentences, so it is off by default.

Checkpoint layout (what :func:`save_provence` writes and :class:`ProvencePruner` loads)::

    config.json, model.safetensors, tokenizer files   the encoder (a Hugging Face AutoModel)
    provence_heads.safetensors                        rank_head.{weight,bias}, token_head.{weight,bias}
    provence.json                                     {"format": "ragprune-provence", "version": 1, ...}
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._quant import check_quantize, int8_dynamic
from .._runtime import Backend, TorchRunner, check_backend, onnx_runner
from .._validate import check_number, check_positive_int
from ..models import check_tokenizer, resolve_model
from ..rerank.base import PointwiseReranker, check_pairs
from ..text import SentenceSplitter, TokenCounter, count_tokens, sentence_spans, tokenizer_safe
from ..types import Document, PrunedDocument
from .base import Pruner, build_pruned

__all__ = ["ProvencePruner", "ProvenceModel", "load_provence", "save_provence", "passage_weights",
           "PASSAGE_WEIGHTINGS"]

DEFAULT_MODEL = "ragprune-provence"
FORMAT = "ragprune-provence"
VERSION = 1
PASSAGE_WEIGHTINGS = ("max", "relative", "absolute", "none")
_TEMPERATURE = 1.0  # relative weight exp((r - r_best) / T)
_ABS_BIAS = -1.0  # absolute weight sigmoid(r + bias)
_MIN_LENGTH = 32  # window: query (cut to max(8, max_length // 4) tokens) + 3 special tokens + context


def passage_weights(ranks: Sequence[float], mode: str = "max") -> np.ndarray:
    """Per-passage multipliers of the sentence keep-probabilities (module docstring).

    Args:
        ranks: Ranking-head logits of the passages pruned together for one query.
        mode: ``"relative"`` ``exp(r - r_best)``; ``"absolute"`` ``sigmoid(r - 1)``; ``"max"``
            the larger of the two (default); ``"none"`` all ones.
    """
    r = np.asarray(ranks, dtype=float)
    if mode == "none" or not r.size:
        return np.ones_like(r)
    rel = np.exp(np.minimum(0.0, r - r.max()) / _TEMPERATURE)
    absolute = 0.5 * (1.0 + np.tanh((r + _ABS_BIAS) / 2))  # sigmoid, without overflow
    if mode == "relative":
        return rel
    if mode == "absolute":
        return absolute
    if mode == "max":
        return np.maximum(rel, absolute)
    raise ValueError(f"passage_weights: unknown mode {mode!r}; expected one of {PASSAGE_WEIGHTINGS}.")


def _torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError("ProvencePruner needs torch and transformers: pip install 'ragprune[rerank]'") from e
    return torch


def _model_class() -> Any:
    torch = _torch()
    nn = torch.nn

    class _ProvenceModel(nn.Module):
        """Encoder + ranking head (pooled first token) + token keep/drop head."""

        def __init__(self, encoder: Any, dropout: float = 0.1) -> None:
            super().__init__()
            self.encoder = encoder
            hidden = encoder.config.hidden_size
            self.dropout = nn.Dropout(dropout)
            self.rank_head = nn.Linear(hidden, 1)
            self.token_head = nn.Linear(hidden, 1)

        def forward(self, **enc: Any) -> tuple[Any, Any]:
            out = self.encoder(**enc)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                pooled = out.last_hidden_state[:, 0]
            rank = self.rank_head(self.dropout(pooled)).squeeze(-1)
            tokens = self.token_head(self.dropout(out.last_hidden_state)).squeeze(-1)
            return rank, tokens

    return _ProvenceModel


def ProvenceModel(encoder: Any, dropout: float = 0.1) -> Any:  # noqa: N802 (factory keeps torch lazy)
    """Build the two-head model around a Hugging Face encoder (``AutoModel``)."""
    return _model_class()(encoder, dropout)


def init_provence(init: str | os.PathLike[str]) -> tuple[Any, Any]:
    """A new model from an encoder folder or a sequence-classification cross-encoder.

    When ``init`` is a cross-encoder (e.g. the shipped reranker), its pooler and classifier
    become the ranking head, so the model ranks like the reranker from step 0.
    """
    _torch()
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model(init, owner="init_provence")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=True)
    model = ProvenceModel(encoder).float()  # shipped checkpoints are fp16: train in fp32
    weights = path / "model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), "pt") as f:
            keys = set(f.keys())
            if {"classifier.weight", "classifier.bias"} <= keys:
                model.rank_head.weight.data.copy_(f.get_tensor("classifier.weight").float())
                model.rank_head.bias.data.copy_(f.get_tensor("classifier.bias").float())
    return tok, model


def save_provence(model: Any, tokenizer: Any, dest: str | os.PathLike[str], *, fp16: bool = False,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint in the layout described in the module docstring."""
    torch = _torch()
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    enc = model.encoder
    if fp16:
        import copy

        enc = copy.deepcopy(enc).to(dtype)
    enc.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    heads = {f"{name}.{p}": getattr(getattr(model, name), p).detach().to(dtype).contiguous()
             for name in ("rank_head", "token_head") for p in ("weight", "bias")}
    save_file(heads, str(dest / "provence_heads.safetensors"))
    (dest / "provence.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, **(extra or {})}, indent=1))
    return dest


def load_provence(model: str | os.PathLike[str], *, owner: str = "ProvencePruner", revision: str | None = None,
                  local_files_only: bool | None = None) -> tuple[Any, Any, Path]:
    """Load ``(tokenizer, model, path)`` from a checkpoint (fp32, eval mode).

    ``model`` is anything :func:`ragprune.models.resolve_model` resolves: a folder, a shipped
    name or a Hugging Face id (at ``revision``; downloaded only when allowed).

    Raises:
        ragprune.models.ModelNotFoundError: no such folder.
        ValueError: the folder is not a ragprune Provence checkpoint or is corrupt.
    """
    _torch()
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model(model, owner=owner, revision=revision, local_files_only=local_files_only)
    meta_path = path / "provence.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{owner}: {path} is not a ragprune Provence checkpoint ({meta_path.name} missing or "
                         f"corrupt: {e}); train one with models/recipes/provence.py.") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{owner}: {meta_path} holds a JSON {type(meta).__name__}, not a Provence metadata object.")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{owner}: {meta_path} has format {meta.get('format')!r} v{meta.get('version')}; "
                         f"expected {FORMAT!r} v{VERSION}.")
    try:
        cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
        if getattr(cfg, "auto_map", None):
            raise ValueError("the encoder config asks for remote code, which ragprune never runs")
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        encoder = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=True)
        check_tokenizer(tok, getattr(encoder.config, "vocab_size", None), path, owner)
        net = ProvenceModel(encoder)
        with safe_open(str(path / "provence_heads.safetensors"), "pt") as f:
            for name in ("rank_head", "token_head"):
                for p in ("weight", "bias"):
                    getattr(getattr(net, name), p).data.copy_(f.get_tensor(f"{name}.{p}").float())
    except Exception as e:
        raise ValueError(f"{owner}: could not load the Provence checkpoint at {path} ({type(e).__name__}: {e}).") from e
    return tok, net.float().eval(), path


class ProvencePruner(Pruner, PointwiseReranker):
    """Sentence-level context pruning (and reranking) with a two-head encoder.

    Args:
        model: Checkpoint folder, Hugging Face id, or ``"ragprune-provence"`` (default: the model shipped in the
            ``ragprune-models`` package).
        threshold: Keep a sentence when its mean token keep-probability is >= this, in [0, 1].
            Lower keeps more (higher recall); 0.1 is the paper's default.
        always_select_title: Prepend the document title to the kept text.
        reorder: Return documents sorted by the ranking score instead of input order.
        top_k: With ``reorder``, keep only the ``top_k`` best documents.
        batch_size: Windows per forward pass.
        max_length: Tokens per window (query + context); longer contexts use several windows.
        stride: Context tokens shared by consecutive windows (>= 0; at most a quarter of
            ``max_length`` is used).
        splitter: Sentence splitter (character spans); default blingfire.
        token_counter: Counts tokens for the compression figure.
        device: torch device.
        quantize: ``"int8"``: dynamic int8 quantization (CPU; faster, slightly different
            probabilities; ``eval/speed.py prune`` measures both): torch's of the Linear layers,
            or with ``backend="onnx"`` ONNX Runtime's of every MatMul (per-channel weights).
        passage_weighting: How the ranking score of each passage scales its sentences'
            keep-probabilities among the documents pruned together: ``"max"`` (default),
            ``"relative"``, ``"absolute"`` or ``"none"`` (the token head alone);
            see :func:`passage_weights`. ``PrunedDocument.sentence_scores`` hold the weighted
            scores the threshold was applied to.
        lexical_weight: Share ``a`` of the BM25 sentence score in the sentence score, in
            [0, 1] (module docstring); 0 = the token head alone.
        hops: Readings of the passages (>= 1); each extra reading appends the sentence the model
            rates best so far to the query (multi-hop questions; module docstring). Costs one
            model pass each.
        revision: For a Hugging Face id: branch, tag or commit (default ``main``).
        local_files_only: For a Hugging Face id: ``True`` never downloads; ``None`` (default)
            downloads unless ``HF_HUB_OFFLINE=1``. See :func:`ragprune.models.resolve_model`.
        backend: ``"torch"`` (default) or ``"onnx"``: ONNX Runtime on CPU from an export made
            once and cached (:mod:`ragprune._runtime`; needs the ``onnx`` extra).

    Example:
        >>> pruner = ProvencePruner()                                          # doctest: +SKIP
        >>> out = pruner.prune("what causes scurvy", ["Scurvy is caused by ..."])  # doctest: +SKIP
        >>> out[0].text, out[0].compression                                    # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        threshold: float = 0.1,
        always_select_title: bool = False,
        reorder: bool = False,
        top_k: int | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        stride: int = 64,
        sentence_order: Literal["original", "score"] = "original",
        splitter: SentenceSplitter = sentence_spans,
        token_counter: TokenCounter = count_tokens,
        device: str = "cpu",
        quantize: str | None = None,
        passage_weighting: str = "max",
        lexical_weight: float = 0.7,
        hops: int = 1,
        revision: str | None = None,
        local_files_only: bool | None = None,
        backend: Backend = "torch",
    ) -> None:
        owner = "ProvencePruner"
        if passage_weighting not in PASSAGE_WEIGHTINGS:
            raise ValueError(f"{owner}: unknown passage_weighting {passage_weighting!r}; expected one of "
                             f"{PASSAGE_WEIGHTINGS}.")
        self.passage_weighting = passage_weighting
        self.lexical_weight = check_number(lexical_weight, "lexical_weight", owner, low=0.0, high=1.0)
        self.hops = check_positive_int(hops, "hops", owner)
        self.backend = check_backend(backend, device, owner)
        self.quantize = check_quantize(quantize, device, owner)
        self.threshold = check_number(threshold, "threshold", owner, low=0.0, high=1.0)
        self.always_select_title = bool(always_select_title)
        self.reorder = bool(reorder)
        self.top_k = None if top_k is None else check_positive_int(top_k, "top_k", owner)
        self.batch_size = check_positive_int(batch_size, "batch_size", owner)
        self.max_length = check_positive_int(max_length, "max_length", owner)
        if self.max_length < _MIN_LENGTH:
            raise ValueError(f"{owner}: max_length={max_length} leaves no room for the context next to the "
                             f"query; use at least {_MIN_LENGTH} tokens (512 is the default).")
        if isinstance(stride, bool) or not isinstance(stride, Integral) or stride < 0:
            raise ValueError(f"{owner}: stride must be an int >= 0 (context tokens shared by windows), got {stride!r}.")
        self.stride = int(stride)
        if sentence_order not in ("original", "score"):
            raise ValueError(f"{owner}: unknown sentence_order {sentence_order!r}; expected 'original' or 'score'.")
        self.sentence_order = sentence_order
        self.splitter = splitter
        self.token_counter = token_counter
        self.tokenizer, net, self.path = load_provence(model, revision=revision, local_files_only=local_files_only)
        if self.backend == "onnx":
            self._run = onnx_runner(net, self.path, self.tokenizer, kind="provence", outputs=_heads,
                                    output_axes={"rank": {0: "batch"}, "tokens": {0: "batch", 1: "sequence"}},
                                    quantize=quantize, owner=owner)
            self.model = None  # the torch weights are not kept
        else:
            self.model = (int8_dynamic(net) if quantize == "int8" else net).to(device)
            self._run = TorchRunner(self.model, device, _heads)
        self.device = device
        if self.max_length > self.tokenizer.model_max_length:
            self.max_length = int(self.tokenizer.model_max_length)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ model pass
    def _context(self, doc: Document) -> tuple[str, int]:
        """The text the model reads and the offset of ``doc.text`` inside it."""
        if doc.title:
            prefix = doc.title + "\n"
            return prefix + doc.text, len(prefix)
        return doc.text, 0

    def infer(self, queries: Sequence[str], docs: Sequence[Document],
              spans: Sequence[Sequence[tuple[int, int]]] | None = None) -> list[tuple[float, np.ndarray]]:
        """Run the model on ``(query, doc)`` pairs.

        Args:
            spans: Per document, the sentence spans of ``doc.text`` to score (default: none).

        Returns:
            Per pair: the ranking score (max over windows) and the mean token keep-probability
            of every sentence (over all its tokens in all windows; 0 for a sentence with no token).
        """
        queries, docs = check_pairs(queries, docs, "ProvencePruner.infer")
        if spans is not None and len(spans) != len(docs):
            raise ValueError(f"ProvencePruner.infer: got {len(docs)} documents but {len(spans)} span lists.")
        spans = spans if spans is not None else [[] for _ in docs]
        # similar lengths in one batch -> little padding; results go back to input order
        order = sorted(range(len(docs)), key=lambda i: len(queries[i]) + len(docs[i].full_text))
        out: list[tuple[float, np.ndarray] | None] = [None] * len(docs)
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                res = self._infer_batch([queries[i] for i in idx], [docs[i] for i in idx], [spans[i] for i in idx])
                for i, r in zip(idx, res):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _infer_batch(self, queries: Sequence[str], docs: Sequence[Document],
                     spans: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[float, np.ndarray]]:
        q_max = max(8, self.max_length // 4)  # very long queries are cut to leave room for context
        queries = [self.tokenizer.convert_tokens_to_string(self.tokenizer.tokenize(tokenizer_safe(q))[:q_max])
                   for q in queries]
        contexts = [(tokenizer_safe(c), offset) for c, offset in map(self._context, docs)]
        enc = self.tokenizer(list(queries), [c for c, _ in contexts], truncation="only_second",
                             max_length=self.max_length, stride=min(self.stride, self.max_length // 4),
                             return_overflowing_tokens=True, return_offsets_mapping=True, padding=True,
                             return_tensors="np")
        sample = enc.pop("overflow_to_sample_mapping").tolist()
        offsets = enc.pop("offset_mapping")
        rank_all, logits_all = [], []
        for s in range(0, len(sample), self.batch_size):
            rank, tok = self._run({k: v[s : s + self.batch_size] for k, v in enc.items()})
            rank_all.append(rank)
            logits_all.append(tok)
        rank = np.concatenate(rank_all).tolist()
        probs = 0.5 * (1.0 + np.tanh(0.5 * np.concatenate(logits_all)))  # sigmoid without overflow
        best = [float("-inf")] * len(docs)
        sums = [np.zeros(len(sp)) for sp in spans]
        counts = [np.zeros(len(sp)) for sp in spans]
        for w, i in enumerate(sample):
            best[i] = max(best[i], rank[w])
            if not len(spans[i]):
                continue
            in_context = np.array([sid == 1 for sid in enc.sequence_ids(w)])
            pos = offsets[w, :, 0] - contexts[i][1]
            starts = np.array([a for a, _ in spans[i]])
            ends = np.array([b for _, b in spans[i]])
            j = np.searchsorted(starts, pos, side="right") - 1
            ok = in_context & (pos >= 0) & (j >= 0)
            ok[ok] &= pos[ok] < ends[j[ok]]
            np.add.at(sums[i], j[ok], probs[w][ok])
            np.add.at(counts[i], j[ok], 1)
        return [(best[i], sums[i] / np.maximum(counts[i], 1)) for i in range(len(docs))]

    # ------------------------------------------------------------------ Scorer / Reranker protocol
    def _score(self, queries: list[str], docs: list[Document]) -> list[float]:
        """The ranking head's score of each pair (max over windows); ``score``/``rerank`` use it."""
        return [r for r, _ in self.infer(queries, docs)]

    # ------------------------------------------------------------------ Pruner protocol
    def sentence_scores(self, query: str, doc: Document) -> tuple[list[tuple[int, int]], np.ndarray, float]:
        """Sentence spans of ``doc.text``, the scores ``prune`` thresholds for it alone, and the
        ranking score."""
        spans = list(self.splitter(doc.text))
        raw = self.infer([query], [doc], [spans])
        return spans, self.group_scores(query, [doc], [spans], raw)[0], raw[0][0]

    def weighted(self, raw: Sequence[tuple[float, np.ndarray]],
                 lexical: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Sentence scores of one query's passages from ``infer`` output: passage weighting
        (:func:`passage_weights`) over the token head, fused with ``lexical`` (normalized BM25
        sentence scores, :meth:`lexical_scores`) when given and ``lexical_weight > 0``."""
        w = passage_weights([r for r, _ in raw], self.passage_weighting)
        a = self.lexical_weight
        if lexical is None or a == 0.0:
            return [s * wi for (_, s), wi in zip(raw, w)]
        return [wi * ((1.0 - a) * s + a * lex) for (_, s), lex, wi in zip(raw, lexical, w)]

    @staticmethod
    def lexical_scores(query: str, docs: Sequence[Document],
                       spans: Sequence[Sequence[tuple[int, int]]]) -> list[np.ndarray]:
        """BM25 sentence scores over the passages pruned together, divided by the best one (in [0, 1])."""
        from .baselines import bm25_sentence_scores

        scores = bm25_sentence_scores(query, docs, spans)
        best = max((float(s.max()) for s in scores if len(s)), default=0.0)
        return [s / best if best > 0 else np.zeros_like(s) for s in scores]

    def group_scores(self, query: str, docs: Sequence[Document], spans: Sequence[Sequence[tuple[int, int]]],
                     raw: Sequence[tuple[float, np.ndarray]], *, hops: int | None = None,
                     lexical: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """The scores the threshold is applied to, for one query's ``docs`` pruned together,
        from the first reading ``raw`` (``infer`` output); runs the extra readings (``hops``,
        default the pruner's). ``lexical``: precomputed :meth:`lexical_scores`."""
        if lexical is None and self.lexical_weight > 0:
            lexical = self.lexical_scores(query, docs, spans)
        scores = self.weighted(raw, lexical)
        extra = (self.hops if hops is None else hops) - 1
        if extra < 1:
            return scores
        model = self.weighted(raw)  # the bridge is the sentence the model itself rates best
        used: set[tuple[int, int]] = set()
        for _ in range(extra):
            best = max(((float(v), i, j) for i, s in enumerate(model) for j, v in enumerate(s)
                        if (i, j) not in used), default=None)
            if best is None:
                break
            _, i, j = best
            used.add((i, j))
            a, b = spans[i][j]
            again = self.infer([f"{query} {docs[i].text[a:b]}"] * len(docs), docs, spans)
            scores = [np.maximum(x, y) for x, y in zip(scores, self.weighted(again, lexical))]
            model = [np.maximum(x, y) for x, y in zip(model, self.weighted(again))]
        return scores

    def score_sentences(self, query: str, docs: Sequence[Document],
                        spans: Sequence[Sequence[tuple[int, int]]]) -> list[np.ndarray]:
        """The scores the threshold is applied to, for ``docs`` pruned together (baselines' interface)."""
        if not docs:
            return []
        return self.group_scores(query, docs, spans, self.infer([query] * len(docs), docs, spans))

    def _prune_many(self, queries: list[str], docs: list[list[Document]]) -> list[list[PrunedDocument]]:
        flat_q = [q for q, ds in zip(queries, docs) for _ in ds]
        flat_d = [d for ds in docs for d in ds]
        flat_s = [list(self.splitter(d.text)) for d in flat_d]
        raw = self.infer(flat_q, flat_d, flat_s) if flat_d else []
        out, pos = [], 0
        for q, ds in zip(queries, docs):
            pruned = []
            group, group_spans = raw[pos : pos + len(ds)], flat_s[pos : pos + len(ds)]
            for d, (rank, _), sp, scores in zip(ds, group, group_spans, self.group_scores(q, ds, group_spans, group)):
                keep = [j for j, s in enumerate(scores) if s >= self.threshold]
                pruned.append(self._build(d, sp, keep, scores, rank))
            pos += len(ds)
            if self.reorder:
                pruned.sort(key=lambda p: -p.score)
                if self.top_k is not None:
                    pruned = pruned[: self.top_k]
            out.append(pruned)
        return out

    def _build(self, doc: Document, spans: list[tuple[int, int]], keep: list[int], scores: np.ndarray,
               rank: float) -> PrunedDocument:
        return self._assembled(build_pruned(doc, spans, keep, rank, self.token_counter, sentence_scores=scores))

    def select(self, pruned: PrunedDocument, keep: Sequence[int]) -> PrunedDocument:
        """:meth:`Pruner.select <ragprune.prune.base.Pruner.select>` with this pruner's text
        options: ``sentence_order`` and ``always_select_title`` apply to the chosen sentences."""
        return self._assembled(super().select(pruned, keep))

    def _assembled(self, p: PrunedDocument) -> PrunedDocument:
        """``p`` with its text in this pruner's sentence order, after the title when asked."""
        text = p.text
        if self.sentence_order == "score" and p.kept and len(p.sentence_scores) == len(p.sentences):
            text = " ".join(p.sentences[j] for j in sorted(p.kept, key=lambda j: -p.sentence_scores[j]))
        if self.always_select_title and p.document.title:
            text = f"{p.document.title}\n{text}" if text else p.document.title
        if text != p.text:
            from dataclasses import replace

            p = replace(p, text=text)
        return p

    def __repr__(self) -> str:
        extra = "" if self.passage_weighting == "max" else f", passage_weighting={self.passage_weighting!r}"
        extra += "" if self.lexical_weight == 0.7 else f", lexical_weight={self.lexical_weight:g}"
        extra += "" if self.hops == 1 else f", hops={self.hops}"
        extra += "" if self.backend == "torch" else f", backend={self.backend!r}"
        return f"ProvencePruner({self.path.name!r}, threshold={self.threshold}{extra})"


def _heads(out: Any) -> tuple[Any, Any]:
    return out  # the model returns (rank, token logits)
