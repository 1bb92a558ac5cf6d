"""Dataset loaders that work on any folder in a public layout (BEIR); metrics are in :mod:`ragprune.metrics`.

The benchmark scripts that know the layout of the project's own data live in the workbench
folder ``eval/`` of a source checkout, not in the installed package.
"""

from .beir import BeirDataset, load_beir, read_qrels

__all__ = ["BeirDataset", "load_beir", "read_qrels"]
