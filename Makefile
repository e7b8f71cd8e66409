# The README's two commands: `make demo` (main job) and `make test`. Both set up .venv themselves.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SHARED  ?= ../shared/data/
SMPL    ?= build/smpl
# `make train`: the shipped default's recipe (preset smpl = runs/smpl3-nowiden/config.json) on the SMPL conversion
DATA    ?= $(SMPL)/cmu
RUN     ?= runs/smpl
MODEL   ?= models/$(notdir $(RUN))
PRESET  ?= smpl
# the tiny model of CI and the tests: the tiny preset on the shared CMU splits (tests compare it with that data)
TINY_DATA ?= $(SHARED)cmu_pose
MINUTES ?= 60

.PHONY: install test train train-tiny train-bench export default-model demo bench bench-memory bindings clean data

# every source in ../shared/data converted to SMPL body_pose (runtime.convert): build/smpl/{cmu,cmu_bandai}/*.npz and
# MANIFEST.json with the sha256 of every source and output (never committed; about 2 min on 2 cores)
data: $(SMPL)/MANIFEST.json
$(SMPL)/MANIFEST.json: | install
	$(PY) -m runtime.tools.smpl_data --shared $(SHARED) --out $(SMPL)

install: $(STAMP)
$(STAMP): pyproject.toml
	python3 -m venv .venv
	# torch first, pinned: this wheel is on disk here; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

# the suite runs in TEST_JOBS processes (pytest-xdist; a test file stays in one process): `auto` = one per core
TEST_JOBS ?= auto
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

train: install $(if $(filter $(SMPL)/%,$(DATA)),data,)
	$(PY) -m train.cli train --data $(DATA) --out $(RUN) --config $(PRESET) --max-minutes $(MINUTES) \
		$(if $(wildcard $(RUN)/last.pt),--resume,)

train-tiny: install
	$(PY) -m train.cli train --data $(TINY_DATA) --out runs/tiny --config tiny --quiet $(if $(wildcard runs/tiny/last.pt),--resume,)

export: install
	$(PY) -m train.cli export $(RUN) --out $(MODEL)

# ship RUN as the runtime's default model (ONNX graphs + weights + manifest only, as package data)
default-model: install
	$(PY) -m train.cli export $(RUN) --out runtime/models/default --onnx-only

demo: install
	$(PY) -m runtime.demo --out demo.png --data $(SHARED)cmu_pose/test.npz --smpl $(SHARED)smpl_reference/amass_dev_sample.npz

bindings: install
	bash bindings_tests/build.sh

# BENCH_MODEL=models/NAME: bench that model directory instead of the shipped default
bench: install data
	$(PY) -m train.cli bench $(BENCH_MODEL)
	$(PY) -m runtime.tools.fitbench_rt $(or $(BENCH_MODEL),runtime/models/default) --threads 1 --data $(SMPL)/cmu/test.npz   # runtime.fit.denoise poses/s

# peak RSS of every graph on 200,000 inputs (fresh interpreter each, /usr/bin/time -v), chunked == one call
bench-memory: install
	$(PY) -m runtime.tools.membench

# training throughput (poses/s) of 1 process and of torchrun with 1 and 2 processes (train/trainbench.py)
train-bench: install $(if $(filter $(SMPL)/%,$(DATA)),data,)
	$(PY) -m train.trainbench --data $(DATA) --preset $(PRESET)

# training at scale on CMU + Bandai (~380k poses, memory-mapped through the ingest cache): poses/s, epoch time,
# peak RSS, 1 process vs --nproc 2, with the load average of each run (train/scalebench.py)
.PHONY: train-scale
train-scale: install data
	$(PY) -m train.scalebench --data $(SMPL)/cmu_bandai --cache build/cache

clean:
	rm -rf .venv build *.egg-info .pytest_cache bindings_tests/build

# evaluation report (KS, FID, APD, NN distance, figures) of the shipped default model vs the baselines;
# ABLATION=models/NAME adds an ablation panel (that model vs the default)
EVAL_MODEL ?= runtime/models/default
EVAL_OUT   ?= reports/default
EVAL_N     ?= 10000
EVAL_SEED  ?= 0
EVAL_DATA  ?= $(SMPL)/cmu
BASELINES  ?= runs/smpl3-vposer runs/smpl3-gmm
ABLATION   ?=
.PHONY: evaluate
evaluate: install data $(if $(ABLATION),$(ABLATION)/manifest.json,) $(foreach b,$(BASELINES),$(b)/best.pt)
	$(PY) -m train.cli evaluate $(EVAL_MODEL) --data $(EVAL_DATA)/test.npz --train $(EVAL_DATA)/train.npz \
		$(foreach b,$(BASELINES),--baselines $(b)) --out $(EVAL_OUT) --n $(EVAL_N) --seed $(EVAL_SEED) \
		$(if $(ABLATION),--ablation $(ABLATION),)

models/%/manifest.json: runs/%/best.pt
	$(PY) -m train.cli export runs/$* --out models/$* --onnx-only

# checkpoints are not committed: a committed run (config.json, summary.json, metrics.jsonl) is retrained from its
# own config when its best.pt is missing; training is seeded, so the weights (and the reports) come out the same.
# First use: the default flow ~3 min, GMM < 1 min, VPoser ~3 min on 2 shared cores (runs/smpl3-*: 173, 19, 176 s).
# The data set is the one the run's summary.json names: cmu, cmu_bandai (make data), else a folder of $(SHARED).
runs/%/best.pt: | install
	rm -rf build/retrain/$*
	d=$$($(PY) -c "import json; print(next(iter(json.load(open('runs/$*/summary.json'))['data_sha256'])).split('/')[0])"); \
	case $$d in cmu|cmu_bandai) $(MAKE) data; src=$(SMPL)/$$d;; *) src=$(SHARED)$$d;; esac; \
	$(PY) -m train.cli train --out build/retrain/$* --quiet --config runs/$*/config.json --data $$src \
		--model $$($(PY) -c "import json; print(json.load(open('runs/$*/config.json')).get('model', 'flow'))")
	cp build/retrain/$*/best.pt $@

# is it an SMPL prior? real SMPL frames vs glitched copies, unseen takes, left-arm completion, NN distances
# (runtime/tools/plausibility.py); PL_RECORD=--record stores the threshold tau in the model's manifest
PL_MODEL ?= runtime/models/default
PL_OUT   ?= reports/smpl
PL_RECORD ?=
.PHONY: plausibility noncommercial
plausibility: install data
	$(PY) -m runtime.tools.plausibility $(PL_MODEL) --data $(SMPL)/cmu --dev $(SHARED)smpl_reference/amass_dev_sample.npz \
		--out $(PL_OUT) $(PL_RECORD)

# the NON-COMMERCIAL model (CC BY-NC 4.0: Bandai Namco data): CMU + Bandai in SMPL convention (379,059 poses), the
# default's recipe with Bandai's constant virtual spine2 masked (preset smpl-bandai); not shipped, no record committed.
# First use trains it from the preset, capped at NC_MINUTES (an epoch took 166 s on 2 shared cores, so about 14 epochs
# in 40 min, plus ~15 s of loading; --resume continues an interrupted run), then exports it and writes its
# plausibility report to reports/smpl-cmu-bandai
NC_RUN     ?= runs/smpl-cmu-bandai
NC_MINUTES ?= 40
noncommercial: install data $(NC_RUN)/best.pt
	$(PY) -m train.cli export $(NC_RUN) --out models/$(notdir $(NC_RUN)) --onnx-only
	$(MAKE) plausibility PL_MODEL=models/$(notdir $(NC_RUN)) PL_OUT=reports/$(notdir $(NC_RUN))
$(NC_RUN)/best.pt: | install data
	$(PY) -m train.cli train --data $(SMPL)/cmu_bandai --out $(NC_RUN) --quiet --max-minutes $(NC_MINUTES) \
		$(if $(wildcard $(NC_RUN)/last.pt),--resume,--config smpl-bandai)

# downstream fitting benchmark (part completion, sparse IK, denoising) of the default model vs the baselines
FIT_MODEL ?= runtime/models/default
FIT_OUT   ?= reports/fit
FIT_N     ?= 500
FIT_RUN   ?= runs/smpl3-nowiden#  the default model's training run (fit-bench's torch side loads its best.pt)
.PHONY: fit-bench
fit-bench: install data runs/smpl3-vposer/best.pt runs/smpl3-gmm/best.pt $(FIT_RUN)/best.pt
	$(PY) -m train.cli fit-bench $(FIT_MODEL) --data $(SMPL)/cmu/test.npz --val $(SMPL)/cmu/val.npz \
		--train $(SMPL)/cmu/train.npz --vposer runs/smpl3-vposer --gmm runs/smpl3-gmm --out $(FIT_OUT) --n $(FIT_N)
# the committed runs still retrain bit for bit (their first epoch; their normalisation buffers where the original
# checkpoints are here): needs make data, so not part of make test
.PHONY: check-runs
check-runs: install data
	$(PY) -m pytest -q tests/committed_runs_check.py

# two tiny trainings on one --out, 20 times with random start offsets: exactly one runs, the directory is consistent
concurrency-check: install data
	$(PY) tests/concurrent_runs.py --data $(DATA) --repeats 20

# take-QA benchmark (runtime/qabench.py): leave-one-subject-out calibration on the held-out takes (cmu_extra, cmu_pose
# test + val), injected glitches, recall / clean rate / repair / speed. QA_MODELS="DIR1 DIR2": candidate models
QA_MODELS ?= runtime/models/default
QA_OUT    ?= reports/qa
QA_ARGS   ?= --copies 4 --repair-takes 11 --repair-frames 600
.PHONY: qa-bench
qa-bench: install
	OMP_NUM_THREADS=1 $(PY) -m runtime.qabench --shared $(SHARED) --model "$(QA_MODELS)" --out $(QA_OUT) \
		--figure docs/qa_bench.png $(QA_ARGS)

# the Blender add-on (runtime/blender) tested in real Blender: bpy 4.5 as a Python module in its own venv (no torch),
# the package installed editable; a second, bare bpy venv (bpy only: no poseprior, no onnxruntime) that the extension
# zip is installed into; onnxruntime wheels for Blender's Python (3.11, this platform) for the zip to bundle.
# pip's downloads (bpy is ~370 MB) are cached under $(PIP_CACHE) between runs (CI: keep build/pip-cache).
BPY        := .venv-blender/bin/python
BPY_BARE   := .venv-blender-bare/bin/python
BSTAMP     := .venv-blender/.installed
BWHEELS    := build/blender-wheels
PIP_CACHE  ?= $(CURDIR)/build/pip-cache
.PHONY: test-blender bench-blender blender-addon
$(BSTAMP): pyproject.toml
	python3.11 -m venv .venv-blender
	PIP_CACHE_DIR=$(PIP_CACHE) $(BPY) -m pip install --quiet "bpy==4.5.*" pytest
	PIP_CACHE_DIR=$(PIP_CACHE) $(BPY) -m pip install --quiet -e ".[plot]"
	python3.11 -m venv .venv-blender-bare
	PIP_CACHE_DIR=$(PIP_CACHE) $(BPY_BARE) -m pip install --quiet "bpy==4.5.*"
	rm -rf $(BWHEELS)
	PIP_CACHE_DIR=$(PIP_CACHE) $(BPY) -m pip download --quiet --no-deps --only-binary=:all: -d $(BWHEELS) onnxruntime
	touch $(BSTAMP)

test-blender: $(BSTAMP)
	OMP_NUM_THREADS=1 $(BPY) -m pytest -q -p no:cacheprovider tests_blender

# poseprior.score on a 5,000-frame take in Blender vs `poseprior score` (medians; runtime/tools/blender_bench.py)
bench-blender: $(BSTAMP)
	OMP_NUM_THREADS=1 $(BPY) -m runtime.tools.blender_bench --frames 5000 --repeats 5

# the extension zip with onnxruntime bundled for this platform (docs/blender.md)
blender-addon: $(BSTAMP)
	$(BPY) -m runtime.cli blender-addon --out poseprior_blender.zip --wheels $(BWHEELS)

# docs/blender_repair.png: the stored log p of a glitched real take in Blender, before and after poseprior.repair
.PHONY: blender-figure
blender-figure: $(BSTAMP)
	OMP_NUM_THREADS=1 $(BPY) -m runtime.tools.blender_figure --out docs/blender_repair.png
