"""Small helpers shared by the eval scripts."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def rounded(metrics: dict[str, float], digits: int = 4) -> dict[str, float]:
    """Metric values rounded for tables and JSON."""
    return {k: round(v, digits) for k, v in metrics.items()}


def load_cli_llm(spec: str, backend: str = "auto", server_model: str | None = None,
                 threads: int | None = None, cache: Path | None = None) -> Any:
    """:func:`ragprune.rerank.llm.load_llm` for the eval scripts' ``--llm``/``--llm-model``/
    ``--llm-backend``/``--llm-threads``/``--llm-cache`` options: the model name goes only to a
    server; with ``cache`` the backend is wrapped in a persistent :class:`~ragprune.rerank.llm.CachedLLM`."""
    from ragprune.rerank import llm

    kwargs: dict[str, Any] = {}
    if backend == "openai" or spec.startswith(("http://", "https://")):
        kwargs["model"] = server_model
    if threads is not None:
        kwargs["threads"] = threads
    backend_llm = llm.load_llm(spec, backend=backend, **kwargs)
    if cache is None:
        return backend_llm
    name = f"{getattr(backend_llm, 'name', spec)}|{server_model or ''}"
    return llm.CachedLLM(backend_llm, cache, name=name)


def save_json(path: Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` (parents created) and say so; no-op for None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def run_cli(prog: str, argv: Sequence[str] | None, parse_args: Callable[[Any], Any], run: Callable[[Any], Any],
            print_table: Callable[[Any], None]) -> int:
    """The ``main`` of an eval script: parse, run, print the table, write ``--json``.

    Bad data or arguments (missing files, invalid values, a missing extra) and an LLM server
    that stays down print one line naming ``prog`` and return exit code 2; other errors raise.
    """
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger(prog).setLevel(logging.INFO)
    args = parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and type(e).__module__ != "ragprune.rerank.llm":
            raise  # only LLMError (server down, keeps failing) is an expected runtime failure
        msg = str(e)
        print(msg if msg.startswith(prog) else f"{prog}: {msg}", file=sys.stderr)
        return 2
    print_table(result)
    save_json(args.json, result)
    return 0
