"""``ragprune`` command line: index, search, rerank, prune, eval.

    ragprune index ../shared/data/beir_scifact idx/scifact          # BEIR folder or .jsonl -> BM25 index
    ragprune search idx/scifact "what causes scurvy" -k 5 --json
    ragprune rerank idx/scifact "what causes scurvy" --candidates 50 -k 5
    ragprune prune "what causes scurvy" page.html --max-tokens 512     # HTML file
    echo "some text. more text." | ragprune prune "question" -          # plain text from stdin
    ragprune eval beir --data ../shared/data/beir_scifact --retriever bm25

Exit codes: 0 success, 1 runtime failure (e.g. a model could not be loaded), 2 usage error or
bad input (missing files, empty query). ``--json`` prints one JSON document on stdout;
messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _load_corpus(path: Path) -> list[Any]:
    from .datasets.beir import _jsonl
    from .types import Document

    if path.is_dir():
        path = path / "corpus.jsonl"
    docs = []
    try:
        rows = list(_jsonl(path))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); re-encode the corpus as UTF-8.") from e
    for r in rows:
        doc_id = r.get("_id", r.get("id"))
        if doc_id is None:
            raise ValueError(f"{path}: every line needs an '_id' or 'id'.")
        docs.append(Document(id=str(doc_id), text=r.get("text") or "", title=r.get("title") or ""))
    return docs


def _hits_json(hits: list[Any]) -> list[dict[str, Any]]:
    return [{"id": h.document.id, "score": h.score, "title": h.document.title, "text": h.document.text} for h in hits]


def _print_hits(hits: list[Any]) -> None:
    import textwrap

    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. [{h.document.id}] {h.score:.4f}  {textwrap.shorten(h.document.full_text, 120)}")


def cmd_index(args: argparse.Namespace) -> int:
    from .retrieve.bm25 import BM25Retriever

    docs = _load_corpus(args.corpus)
    r = BM25Retriever.from_documents(docs, method=args.method, k1=args.k1, b=args.b, show_progress=not args.quiet)
    r.save(args.index)
    msg = {"index": str(args.index), "documents": len(docs), "terms": len(r.vocab)}
    print(json.dumps(msg) if args.json else f"indexed {len(docs)} documents ({len(r.vocab)} terms) into {args.index}")
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from .retrieve.bm25 import BM25Retriever

    hits = BM25Retriever.load(args.index).retrieve(args.query, k=args.k)
    print(json.dumps(_hits_json(hits))) if args.json else _print_hits(hits)
    return EXIT_OK


def cmd_rerank(args: argparse.Namespace) -> int:
    from .rerank.cross_encoder import CrossEncoderReranker
    from .retrieve.bm25 import BM25Retriever

    hits = BM25Retriever.load(args.index).retrieve(args.query, k=args.candidates)
    out = CrossEncoderReranker(args.model, first_stage_weight="recommended").rerank(args.query, hits, k=args.k)
    print(json.dumps(_hits_json(out))) if args.json else _print_hits(out)
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if str(args.input) == "-" else Path(args.input).read_bytes()
    from .html.clean import decode_html

    text = decode_html(data)
    is_html = args.html or (not args.text and "<" in text[:2048] and ">" in text[:2048])
    if is_html:
        from .html.prune import HtmlPruner

        page = HtmlPruner(args.scorer, max_tokens=args.max_tokens).prune(args.query, data)
        out = {"kind": "html", "html": page.html, "text": page.text, "tokens": page.tokens,
               "compression": page.compression, "blocks": list(page.blocks), "truncated": page.truncated}
    else:  # the library's own path: ProvencePruner, then the Pipeline's budget step (fit_context)
        from .pipeline import fit_context
        from .prune.provence import ProvencePruner
        from .types import Document

        pruner = ProvencePruner(args.model, threshold=args.threshold)
        pruned = pruner.prune(args.query, [Document(id="input", text=text)])
        ctx = fit_context(args.query, pruned, args.max_tokens, pruner=pruner, token_counter=pruner.token_counter,
                          backfill=not args.no_backfill, headers=False)
        out = {"kind": "text", "text": ctx.text, "kept": [j for d in ctx.documents for j in d.kept],
               "score": pruned[0].score, "tokens": ctx.tokens, "compression": ctx.stats["compression"],
               "backfilled": int(ctx.stats["backfilled_sentences"]), "truncated": ctx.truncated}
    if args.json:
        print(json.dumps(out))
    else:
        print(out["html"] if is_html and args.output_html else out["text"])
        print(f"({out['compression']:.0%} of tokens removed)", file=sys.stderr)
    return EXIT_OK


# The benchmark scripts of the workbench (eval/ in a source checkout; not part of the wheel):
# `ragprune eval SUITE ARGS` runs `python -m eval.SUITE ARGS`.
EVAL_SUITES = ("beir", "bright", "html", "lexical_sweep", "pipeline", "prp_pairs", "pruning", "pruning_misses", "qa",
               "speed")


def _workbench_root() -> Path | None:
    """The checkout whose eval/ folder holds the eval scripts: the one this file is in (an editable
    install), else the current directory; None when neither has it (an installed wheel)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (root / "eval" / "__init__.py").is_file() and (root / "eval" / "common.py").is_file():
            return root
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    import importlib

    root = _workbench_root()
    if root is None:
        print(f"ragprune eval {args.suite}: the eval scripts are the workbench of a source checkout, not part of "
              f"the installed package; in a checkout run `python -m eval.{args.suite} ...` (or `ragprune eval "
              f"{args.suite} ...` from its top folder).", file=sys.stderr)
        return EXIT_FAIL
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(f"eval.{args.suite}")
    except ImportError as e:  # the script needs an extra that is not installed
        print(f"ragprune eval {args.suite}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL
    return int(module.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragprune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("index", parents=[common], help="build a BM25 index from a BEIR folder or a .jsonl corpus")
    pi.add_argument("corpus", type=Path)
    pi.add_argument("index", type=Path)
    pi.add_argument("--method", default="lucene")
    pi.add_argument("--k1", type=float, default=0.9)
    pi.add_argument("--b", type=float, default=0.4)
    ps = sub.add_parser("search", parents=[common], help="query a saved index")
    ps.add_argument("index", type=Path)
    ps.add_argument("query")
    ps.add_argument("-k", type=int, default=10)
    pr = sub.add_parser("rerank", parents=[common], help="BM25 candidates reranked by a cross-encoder")
    pr.add_argument("index", type=Path)
    pr.add_argument("query")
    pr.add_argument("--candidates", type=int, default=100)
    pr.add_argument("-k", type=int, default=10)
    pr.add_argument("--model", default="ragprune-reranker")
    pp = sub.add_parser("prune", parents=[common], help="prune a text or HTML file ('-' for stdin) for a query")
    pp.add_argument("query")
    pp.add_argument("input")
    pp.add_argument("--max-tokens", type=int, default=1000)
    pp.add_argument("--threshold", type=float, default=0.1, help="Provence threshold (text input)")
    pp.add_argument("--model", default="ragprune-provence", help="Provence checkpoint (text input)")
    pp.add_argument("--scorer", default="bm25", choices=["bm25", "dense"], help="block scorer (HTML input)")
    pp.add_argument("--no-backfill", action="store_true",
                    help="text input: keep only what the pruner kept, even when budget is left (as Pipeline(backfill=False))")
    kind = pp.add_mutually_exclusive_group()
    kind.add_argument("--html", action="store_true", help="treat the input as HTML")
    kind.add_argument("--text", action="store_true", help="treat the input as plain text")
    pp.add_argument("--output-html", action="store_true", help="print the pruned HTML rather than its text")
    pe = sub.add_parser("eval", help="run an eval script of a source checkout (python -m eval.SUITE)",
                        description="Run `python -m eval.SUITE ARGS` (the workbench of a source checkout); "
                                    "`ragprune eval SUITE --help` lists a suite's options.")
    pe.add_argument("suite", choices=EVAL_SUITES)
    pe.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the eval script")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("k", "candidates", "max_tokens"):
        if getattr(args, name, 1) < 1:
            print(f"ragprune {args.cmd}: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return EXIT_USAGE
    handler = {"index": cmd_index, "search": cmd_search, "rerank": cmd_rerank, "prune": cmd_prune,
               "eval": cmd_eval}[args.cmd]
    try:
        return handler(args)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError, TypeError) as e:
        print(f"ragprune {args.cmd}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ImportError, RuntimeError, OSError) as e:
        print(f"ragprune {args.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
