"""Serve a GGUF model over llama.cpp's OpenAI-compatible HTTP API until SIGTERM or SIGINT.

The test fixture in ``tests/test_llm_local.py`` runs this as a subprocess. It uses the
prebuilt ``xllamacpp`` wheel (the ``llm`` extra), whose ``Server`` is llama.cpp's own HTTP
server: nothing is compiled. Usage::

    python tests/llama_server.py --model model.gguf --port 8080 [--alias smollm2] [--threads 1]
"""

from __future__ import annotations

import argparse
import signal
import threading


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="path of the .gguf file")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--alias", default=None, help="model name the server reports")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=2048)
    args = p.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.port = args.port
    params.hostnames = [args.host]
    if args.alias:
        params.model_alias = {args.alias}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = xllamacpp.Server(params)  # listens from here on
    print(f"listening on {server.listening_address}", flush=True)
    stop.wait()
    del server  # joins the server's loop
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
