"""The workbench's shared layer: one spelling of every option the eval scripts have in common,
the LLM they load, the guard that keeps a results file from being replaced by another run, and
the ``main`` runner.

Options (added by the ``add_*`` functions, so every script spells them the same way):

- data: ``--shared DIR`` (the ``shared/data`` folder; default ``$RAGPRUNE_SHARED_DATA`` or
  ``../shared/data``) for scripts that know its layout; ``--data DIR`` for scripts that read one
  dataset folder (a BEIR folder, a BRIGHT snapshot).
- sample size: ``--limit N`` (questions, queries or pairs, whichever the script samples); the
  older spellings (``--questions``, ``--max-queries``, ``--pairs``, ``--queries``) still work.
- LLM: ``--llm SPEC``, ``--llm-model NAME`` (sent to an OpenAI-compatible server),
  ``--llm-backend``, ``--llm-threads N`` and ``--llm-cache FILE``, the one persistent reply
  cache (a JSONL file of :class:`ragprune.rerank.llm.CachedLLM`; a rerun or a resumed run only
  asks new prompts, and a line cut by a killed run is skipped).
- output: ``--json FILE``, ``--plot FILE`` and ``--force``.

Results files: the JSON a script writes records the run's ``settings`` (its options, less the
output paths, caches and thread counts). An existing ``--json`` file whose recorded settings
differ from this run's is not replaced: the script exits with code 2 before doing any work and
names the differing options; write to another path, or pass ``--force`` (alias ``--overwrite``).
Rerunning the same command replaces its file, as does any run over a file that records no
settings (written before they were recorded; a note says so). An existing ``--plot`` file given
without ``--json`` needs ``--force`` as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SHARED", "LLM_BACKENDS", "add_data_arg", "add_limit_arg", "add_llm_args", "add_output_args",
    "add_shared_arg", "check_outputs", "llm_from_args", "load_cli_llm", "outputs_refused", "rounded", "rss_mb", "run_cli",
    "save_json", "save_results", "settings_of",
]

# The BM25 the published tables (and their evaluation sets' negatives) were made with; the
# library's defaults moved later (eval/bm25_defaults.py), so these scripts pin it.
PUBLISHED_BM25 = {"method": "lucene", "k1": 0.9, "b": 0.4}
DEFAULT_SHARED = Path(os.environ.get("RAGPRUNE_SHARED_DATA", "../shared/data"))
LLM_BACKENDS = ("auto", "llamacpp", "transformers", "openai")

# Options that do not change a run's results: never compared, never recorded.
NOT_SETTINGS = frozenset({"json", "plot", "force", "llm_cache", "llm_threads", "threads", "cache_dir", "quiet",
                          "shared"})
# Option names of older versions of the scripts (in results files written by them) -> today's.
LEGACY_NAMES = {"questions": "limit", "max_queries": "limit", "pairs": "limit", "queries": "limit",
                "reader": "llm", "reader_backend": "llm_backend", "expand_query_with_llm": "llm",
                "cache": "llm_cache", "prp_cache": "llm_cache", "expansion_cache": "llm_cache"}


# ------------------------------------------------------------------------------------------
# Options


def add_shared_arg(p: Any) -> None:
    """``--shared DIR``: the ``shared/data`` folder (default ``$RAGPRUNE_SHARED_DATA`` or ../shared/data)."""
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                   help=f"the shared/data folder (default: $RAGPRUNE_SHARED_DATA or {DEFAULT_SHARED})")


def add_data_arg(p: Any, help: str, *, default: Path | None = None) -> None:
    """``--data DIR``: one dataset folder; required unless ``default`` is given."""
    p.add_argument("--data", type=Path, required=default is None, default=default, help=help)


def add_limit_arg(p: Any, *aliases: str, default: int | None = None, help: str = "sample size") -> None:
    """``--limit N`` (older spellings in ``aliases`` keep working); must be >= 1."""
    p.add_argument("--limit", *aliases, dest="limit", type=_positive_int, default=default, metavar="N",
                   help=help + (f" (default {default})" if default is not None else " (default: all)"))


def add_llm_args(p: Any, *, spec: bool = True, default: str | None = None, required: bool = False,
                 cache_aliases: Sequence[str] = (), spec_help: str | None = None,
                 spec_aliases: Sequence[str] = (), backend_aliases: Sequence[str] = (),
                 cache_help: str | None = None) -> None:
    """The LLM options: ``--llm``, ``--llm-model``, ``--llm-backend``, ``--llm-threads``, ``--llm-cache``.

    Args:
        spec: Add ``--llm`` itself (False where the script names its LLM otherwise).
        default: Default of ``--llm``.
        required: ``--llm`` is required.
        cache_aliases: Older names of ``--llm-cache``.
        spec_help: Help of ``--llm``.
        spec_aliases, backend_aliases: Older names of ``--llm`` and ``--llm-backend``.
        cache_help: Help of ``--llm-cache`` where the script keeps replies its own way.
    """
    if spec:
        p.add_argument("--llm", *spec_aliases, dest="llm", default=default, required=required, metavar="SPEC",
                       help=spec_help or "GGUF path, model folder, short name (ragprune.rerank.llm.GGUF_MODELS) or "
                                         "an OpenAI-compatible base URL")
    p.add_argument("--llm-model", default=None, help="model name to send to an OpenAI-compatible server")
    p.add_argument("--llm-backend", *backend_aliases, dest="llm_backend", default="auto", choices=LLM_BACKENDS)
    p.add_argument("--llm-threads", type=_positive_int, default=None,
                   help="CPU threads of a local LLM (default: all cores; 1 is faster when other jobs share them)")
    p.add_argument("--llm-cache", *cache_aliases, dest="llm_cache", type=Path, default=None, metavar="FILE",
                   help=cache_help or "JSONL cache of LLM replies (ragprune.rerank.llm.CachedLLM): reruns and "
                                      "resumed runs only ask new prompts")


def add_output_args(p: Any, *, plot: bool = False) -> None:
    """``--json FILE`` (and ``--plot FILE``) plus ``--force`` (alias ``--overwrite``)."""
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="write the results here (an existing file of another run needs --force)")
    if plot:
        p.add_argument("--plot", type=Path, default=None, metavar="FILE", help="draw the results here")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="replace an existing --json/--plot file even if it holds another run's results")


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


# ------------------------------------------------------------------------------------------
# LLM


def load_cli_llm(spec: str, backend: str = "auto", server_model: str | None = None,
                 threads: int | None = None, cache: Path | None = None) -> Any:
    """:func:`ragprune.rerank.llm.load_llm` for the LLM options: the model name goes only to a
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


def llm_from_args(args: argparse.Namespace, spec: str | None = None) -> Any:
    """The LLM the options of :func:`add_llm_args` describe (``spec`` overrides ``--llm``)."""
    return load_cli_llm(spec or args.llm, args.llm_backend, args.llm_model, args.llm_threads, args.llm_cache)


# ------------------------------------------------------------------------------------------
# Results files


def rounded(metrics: dict[str, float], digits: int = 4) -> dict[str, float]:
    """Metric values rounded for tables and JSON."""
    return {k: round(v, digits) for k, v in metrics.items()}


def _plain(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _normalized(settings: dict[str, Any], keep: Collection[str] = ()) -> dict[str, Any]:
    out = {}
    for k, v in settings.items():
        k = LEGACY_NAMES.get(k, k)
        if k not in NOT_SETTINGS or k in keep:
            out[k] = _plain(v)
    return out


def settings_of(args: argparse.Namespace, keep: Collection[str] = ()) -> dict[str, Any]:
    """The options that decide a run's results, as JSON values (recorded in its results file).

    ``keep`` names options that :data:`NOT_SETTINGS` leaves out but that matter to this script
    (e.g. ``threads`` for a speed benchmark).
    """
    return _normalized(vars(args), keep)


def _differences(old: dict[str, Any], new: dict[str, Any], keep: Collection[str] = ()) -> list[str]:
    old, new = _normalized(old, keep), _normalized(new, keep)
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b and (a not in (None, False, [], "") or b not in (None, False, [], "")):
            out.append(f"{k}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def check_outputs(args: argparse.Namespace, keep: Collection[str] = ()) -> None:
    """Refuse to replace a results file that holds another run (see the module docstring).

    Raises:
        ValueError: ``--json`` holds a run with other settings, or ``--plot`` exists without
            ``--json``, and ``--force`` is not given. The message names the options that differ.
    """
    if getattr(args, "force", False):
        return
    path: Path | None = getattr(args, "json", None)
    plot: Path | None = getattr(args, "plot", None)
    if path is None:
        if plot is not None and plot.exists():
            raise ValueError(f"{plot} exists and no --json records which run drew it; choose another --plot "
                             "path or pass --force to replace it.")
        return
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} exists and is not a results file ({e}); pass --force to replace it.") from e
    recorded = old.get("settings") if isinstance(old, dict) else None
    if not isinstance(recorded, dict):
        print(f"note: {path} records no settings (written before results files recorded them); replacing it",
              file=sys.stderr)
        return
    diff = _differences(recorded, settings_of(args, keep), keep)
    if diff:
        raise ValueError(f"{path} holds the results of a different run ({'; '.join(diff)}); write to another "
                         "--json path, or pass --force to replace it.")


def outputs_refused(args: argparse.Namespace, prog: str, keep: Collection[str] = ()) -> bool:
    """:func:`check_outputs` for a script's own ``main``: print its message, return True if refused."""
    try:
        check_outputs(args, keep)
    except ValueError as e:
        print_error(prog, e)
        return True
    return False


def rss_mb(field: str = "VmRSS") -> float:
    """This process's memory from /proc/self/status (``VmRSS`` now, ``VmHWM`` its peak), in MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover - not Linux


def save_json(path: Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` (parents created, atomically) and say so; no-op for None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path}")


def save_results(args: argparse.Namespace, obj: Any, keep: Collection[str] = ()) -> None:
    """:func:`save_json` to ``--json``, recording the run's :func:`settings_of` in a dict result."""
    if isinstance(obj, dict):
        obj = {**obj, "settings": settings_of(args, keep)}
    save_json(getattr(args, "json", None), obj)


# ------------------------------------------------------------------------------------------
# main


def run_cli(prog: str, argv: Sequence[str] | None, parse_args: Callable[[Any], Any], run: Callable[[Any], Any],
            print_table: Callable[[Any], None], keep: Collection[str] = ()) -> int:
    """The ``main`` of an eval script: parse, check the outputs, run, print the table, write ``--json``.

    ``keep``: options recorded and compared although :data:`NOT_SETTINGS` leaves them out
    (e.g. ``threads`` for a timing benchmark).

    Bad data or arguments (missing files, invalid values, a results file of another run, a
    missing extra) and an LLM server that stays down print one line naming ``prog`` and return
    exit code 2; other errors raise.
    """
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger(prog).setLevel(logging.INFO)
    args = parse_args(argv)
    try:
        check_outputs(args, keep)
        result = run(args)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and type(e).__module__ != "ragprune.rerank.llm":
            raise  # only LLMError (server down, keeps failing) is an expected runtime failure
        print_error(prog, e)
        return 2
    print_table(result)
    save_results(args, result, keep)
    return 0


def print_error(prog: str, e: BaseException) -> None:
    """One line on stderr, starting with ``prog``."""
    msg = str(e)
    print(msg if msg.startswith(prog) else f"{prog}: {msg}", file=sys.stderr)
