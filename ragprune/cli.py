"""``ragprune`` command line: index, search, rerank, prune, eval, serve.

    ragprune index ../shared/data/beir_scifact idx/scifact          # BEIR folder or .jsonl -> BM25 index
    ragprune search idx/scifact "what causes scurvy" -k 5 --json
    ragprune rerank idx/scifact "what causes scurvy" --candidates 50 -k 5
    ragprune prune "what causes scurvy" page.html --max-tokens 512     # HTML file
    echo "some text. more text." | ragprune prune "question" -          # plain text from stdin
    ragprune eval beir --data ../shared/data/beir_scifact --retriever bm25
    ragprune serve --port 8000 --index idx/scifact                     # HTTP: Cohere/TEI rerank, /prune, /context

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


def _iter_corpus(path: Path) -> Any:
    """The documents of a BEIR folder's corpus.jsonl or of a .jsonl file, read lazily."""
    from ._io import iter_jsonl
    from .types import Document

    if path.is_dir():
        path = path / "corpus.jsonl"
    for r in iter_jsonl(path, "ragprune index"):
        doc_id = r.get("_id", r.get("id"))
        if doc_id is None:
            raise ValueError(f"{path}: every line needs an '_id' or 'id'.")
        yield Document(id=str(doc_id), text=r.get("text") or "", title=r.get("title") or "")


def _hits_json(hits: list[Any]) -> list[dict[str, Any]]:
    return [{"id": h.document.id, "score": h.score, "title": h.document.title, "text": h.document.text} for h in hits]


def _print_hits(hits: list[Any]) -> None:
    import textwrap

    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. [{h.document.id}] {h.score:.4f}  {textwrap.shorten(h.document.full_text, 120)}")


def cmd_index(args: argparse.Namespace) -> int:
    from .retrieve.bm25 import BM25Retriever

    r = BM25Retriever.build(_iter_corpus(args.corpus), args.index, method=args.method, k1=args.k1, b=args.b,
                            show_progress=not args.quiet)  # streamed: bounded memory for any corpus size
    msg = {"index": str(args.index), "documents": len(r), "terms": len(r.vocab)}
    print(json.dumps(msg) if args.json else f"indexed {len(r)} documents ({len(r.vocab)} terms) into {args.index}")
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from .retrieve.bm25 import BM25Retriever

    hits = BM25Retriever.load(args.index, mmap=True).retrieve(args.query, k=args.k)
    print(json.dumps(_hits_json(hits))) if args.json else _print_hits(hits)
    return EXIT_OK


def cmd_rerank(args: argparse.Namespace) -> int:
    from .rerank.cross_encoder import CrossEncoderReranker
    from .retrieve.bm25 import BM25Retriever

    hits = BM25Retriever.load(args.index, mmap=True).retrieve(args.query, k=args.candidates)
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


def _add_serve_parser(sub: Any) -> None:
    from .serve.settings import ServeSettings

    d = ServeSettings()
    ps = sub.add_parser(
        "serve", help="serve rerank/prune (and an index) over HTTP: Cohere, Jina and TEI wire formats",
        description="Run the ragprune HTTP server (FastAPI + uvicorn; needs pip install 'ragprune[serve]'). "
                    "Routes: POST /v1/rerank and /v2/rerank (Cohere; v1 also takes Jina's body), POST /rerank "
                    "(text-embeddings-inference), POST /prune, POST /retrieve and /context (with --index), "
                    "GET /health, GET /metrics (Prometheus); OpenAPI at /docs. Concurrent requests share model "
                    "batches; a full queue answers 503 with Retry-After.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ps.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    ps.add_argument("--port", type=int, default=8000, help="TCP port")
    ps.add_argument("--reranker", default="ragprune-reranker",
                    help="cross-encoder for the rerank routes: shipped name, checkpoint folder, Hugging Face id, "
                         "or module:factory returning a Reranker")
    ps.add_argument("--pruner", default="ragprune-provence",
                    help="Provence checkpoint for /prune and /context (name, folder or id), or module:factory "
                         "returning a Pruner")
    ps.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="inference backend of the named models (onnx: ONNX Runtime on CPU, exported once and cached)")
    ps.add_argument("--quantize", choices=["none", "int8"], default="none",
                    help="dynamic int8 quantization of the named models (faster on CPU, slightly different scores)")
    ps.add_argument("--index", type=Path, default=None,
                    help="saved BM25 or dense index folder (ragprune index); adds /retrieve and /context")
    ps.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                    help="most (query, document) pairs coalesced into one model batch; 1 turns batching off")
    ps.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                    help="how long a request waits for others to share its batch, in milliseconds")
    ps.add_argument("--max-queue", type=int, default=d.max_queue,
                    help="requests waiting per model queue; beyond it the server answers 503 with Retry-After")
    ps.add_argument("--max-documents", type=int, default=d.max_documents,
                    help="most documents per request (413 above); also caps k, candidates and top_k")
    ps.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes,
                    help="largest request body in bytes (413 above)")
    ps.add_argument("--max-query-chars", type=int, default=d.max_query_chars,
                    help="longest query in characters (422 above)")
    ps.add_argument("--api-key-env", metavar="NAME", default=None,
                    help="environment variable holding the API key; clients then send 'Authorization: Bearer "
                         "KEY' (/health stays open); none by default")
    ps.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                    help="allow browser calls from ORIGIN (repeat for several); none by default")
    ps.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                    help="uvicorn log level")


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .serve import ServeSettings, require_serve_extra

    require_serve_extra()
    import uvicorn

    from .serve.app import create_app, load_pruner, load_reranker, load_retriever

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty.")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}.")
    settings = ServeSettings(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                             max_queue=args.max_queue, max_documents=args.max_documents,
                             max_request_bytes=args.max_request_bytes, max_query_chars=args.max_query_chars,
                             api_key=api_key, cors_origins=tuple(args.cors_origin))
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        print(f"ragprune serve: listening on {args.host} without an API key (--api-key-env).", file=sys.stderr)
    opts = {"backend": args.backend, "quantize": None if args.quantize == "none" else args.quantize}
    reranker, pruner = load_reranker(args.reranker, **opts), load_pruner(args.pruner, **opts)
    retriever = load_retriever(args.index) if args.index is not None else None
    app = create_app(reranker, pruner, settings=settings, retriever=retriever,
                     index_name=None if args.index is None else str(args.index))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=30)
    return EXIT_OK


# The benchmark scripts of the workbench (eval/ in a source checkout; not part of the wheel):
# `ragprune eval SUITE ARGS` runs `python -m eval.SUITE ARGS`.
EVAL_SUITES = ("beir", "bm25_defaults", "bright", "dense_scale", "html", "lexical_sweep", "pipeline", "prp_pairs", "pruning",
               "pruning_misses", "qa", "scale", "scale_ray", "serve", "speed")


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
    from .retrieve.bm25 import DEFAULT_B, DEFAULT_K1, DEFAULT_METHOD

    p = argparse.ArgumentParser(prog="ragprune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("index", parents=[common], help="build a BM25 index from a BEIR folder or a .jsonl corpus")
    pi.add_argument("corpus", type=Path)
    pi.add_argument("index", type=Path)
    pi.add_argument("--method", default=DEFAULT_METHOD, help="BM25 variant (the library default, chosen on dev data)")
    pi.add_argument("--k1", type=float, default=DEFAULT_K1)
    pi.add_argument("--b", type=float, default=DEFAULT_B)
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
    _add_serve_parser(sub)
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
               "eval": cmd_eval, "serve": cmd_serve}[args.cmd]
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
