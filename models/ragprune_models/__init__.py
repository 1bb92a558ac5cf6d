"""The checkpoints ragprune trains and ships, as an installable package.

``pip install "ragprune[models]"`` installs this distribution (``ragprune-models``) next to
the library; ragprune finds the folders through :mod:`importlib.resources`, never through a
path relative to a source tree. Each folder is a Hugging Face-style checkpoint (fp16
safetensors, tokenizer, config) with its model card (``README.md``) and training records.

>>> import ragprune_models
>>> sorted(ragprune_models.available())
['ragprune-provence-minilm-l6', 'ragprune-reranker-minilm-l2', 'ragprune-reranker-minilm-l6']
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["available", "get_model_path"]
__version__ = "0.1.0"

_MODELS = ("ragprune-reranker-minilm-l6", "ragprune-reranker-minilm-l2", "ragprune-provence-minilm-l6")


def available() -> tuple[str, ...]:
    """Names of the checkpoints in this distribution."""
    return _MODELS


def get_model_path(name: str) -> Path:
    """Folder of the shipped checkpoint ``name`` (one of :func:`available`).

    Raises:
        KeyError: ``name`` is not shipped here.
        FileNotFoundError: the installation is incomplete (the folder has no config.json).
    """
    if name not in _MODELS:
        raise KeyError(f"ragprune_models: no shipped model {name!r}; available: {', '.join(_MODELS)}.")
    folder = Path(str(files(__name__).joinpath(name)))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"ragprune_models: {folder} has no config.json; reinstall ragprune-models.")
    return folder
