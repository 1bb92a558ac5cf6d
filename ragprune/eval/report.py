"""Small helpers shared by the eval scripts."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


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
