# The README's two commands: `make demo` (main job) and `make test`. Both set up .venv themselves.
PY      := .venv/bin/python
STAMP   := .venv/.installed
DATA    ?= ../shared/data/cmu_pose
RUN     ?= runs/paper-cmu
MODEL   ?= models/$(notdir $(RUN))
PRESET  ?= paper
MINUTES ?= 60

.PHONY: install test train train-tiny train-bench export default-model demo bench bench-memory bindings clean data

# every source in ../shared/data converted to SMPL body_pose (runtime.convert): build/smpl/{cmu,cmu_bandai}/*.npz and
# MANIFEST.json with the sha256 of every source and output (never committed; about 2 min on 2 cores)
SHARED  ?= $(dir $(abspath $(DATA)))
SMPL    ?= build/smpl
data: $(SMPL)/MANIFEST.json
$(SMPL)/MANIFEST.json: | install
	$(PY) -m train.smpl_data --shared $(SHARED) --out $(SMPL)

install: $(STAMP)
$(STAMP): pyproject.toml
	python3 -m venv .venv
	# torch first, pinned: this wheel is on disk here; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

train: install
	$(PY) -m train.cli train --data $(DATA) --out $(RUN) --config $(PRESET) --max-minutes $(MINUTES) \
		$(if $(wildcard $(RUN)/last.pt),--resume,)

train-tiny: install
	$(PY) -m train.cli train --data $(DATA) --out runs/tiny --config tiny --quiet $(if $(wildcard runs/tiny/last.pt),--resume,)

export: install
	$(PY) -m train.cli export $(RUN) --out $(MODEL)

# ship RUN as the runtime's default model (ONNX graphs + weights + manifest only, as package data)
default-model: install
	$(PY) -m train.cli export $(RUN) --out runtime/models/default --onnx-only

demo: install
	$(PY) -m runtime.demo --out demo.png

bindings: install
	bash bindings_tests/build.sh

# BENCH_MODEL=models/NAME: bench that model directory instead of the shipped default
bench: install data
	$(PY) -m train.cli bench $(BENCH_MODEL)
	$(PY) -m export.fitbench_rt $(or $(BENCH_MODEL),runtime/models/default) --threads 1 --data $(SMPL)/cmu/test.npz   # runtime.fit.denoise poses/s

# peak RSS of every graph on 200,000 inputs (fresh interpreter each, /usr/bin/time -v), chunked == one call
bench-memory: install
	$(PY) -m runtime.membench

# training throughput (poses/s) of 1 process and of torchrun with 1 and 2 processes (train/trainbench.py)
train-bench: install
	$(PY) -m train.trainbench --data $(DATA) --preset $(PRESET)

clean:
	rm -rf .venv build *.egg-info .pytest_cache bindings_tests/build

# evaluation report (KS, FID, APD, NN distance, figures) of the shipped default model vs the baselines; the
# ablation panel is the sweep's no-augmentation run (its weights are committed; exported here on first use)
EVAL_MODEL ?= runtime/models/default
EVAL_OUT   ?= reports/default
EVAL_N     ?= 10000
EVAL_SEED  ?= 0
EVAL_DATA  ?= $(SMPL)/cmu
BASELINES  ?= runs/smpl-vposer runs/smpl-gmm
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
# First use: the default flow and the no-augmentation run ~3 min each, GMM ~1 min, VPoser ~10 min on 2 cores.
# The data set is the one the run's summary.json names (cmu_pose, bandai_pose), beside $(DATA).
runs/%/best.pt: | install
	rm -rf build/retrain/$*
	d=$$($(PY) -c "import json; print(next(iter(json.load(open('runs/$*/summary.json'))['data_sha256'])).split('/')[0])"); \
	case $$d in cmu|cmu_bandai) $(MAKE) data; src=$(SMPL)/$$d;; *) src=$(SHARED)$$d;; esac; \
	$(PY) -m train.cli train --out build/retrain/$* --quiet --config runs/$*/config.json --data $$src \
		--model $$($(PY) -c "import json; print(json.load(open('runs/$*/config.json')).get('model', 'flow'))")
	cp build/retrain/$*/best.pt $@

# is it an SMPL prior? real SMPL frames vs glitched copies, unseen takes, left-arm completion, NN distances
# (train/evaluation/plausibility.py); PL_RECORD=--record stores the threshold tau in the model's manifest
PL_MODEL ?= runtime/models/default
PL_OUT   ?= reports/smpl
PL_RECORD ?=
.PHONY: plausibility noncommercial
plausibility: install data
	$(PY) -m train.evaluation.plausibility $(PL_MODEL) --data $(SMPL)/cmu --out $(PL_OUT) $(PL_RECORD)

# the NON-COMMERCIAL model (CC BY-NC 4.0: Bandai Namco data): CMU + Bandai in SMPL convention, the default's recipe
# with Bandai's constant virtual spine2 masked; not shipped. Evaluated beside the default in reports/smpl-cmu-bandai
noncommercial: install data runs/smpl-cmu-bandai/best.pt
	$(PY) -m train.cli export runs/smpl-cmu-bandai --out models/smpl-cmu-bandai --onnx-only
	$(MAKE) plausibility PL_MODEL=models/smpl-cmu-bandai PL_OUT=reports/smpl-cmu-bandai

# downstream fitting benchmark (part completion, sparse IK, denoising) of the default model vs the baselines
FIT_MODEL ?= runtime/models/default
FIT_OUT   ?= reports/fit
FIT_N     ?= 500
FIT_RUN   ?= runs/smpl-mix#  the default model's training run (fit-bench's torch side loads its best.pt)
.PHONY: fit-bench
fit-bench: install data runs/smpl-vposer/best.pt runs/smpl-gmm/best.pt $(FIT_RUN)/best.pt
	$(PY) -m train.cli fit-bench $(FIT_MODEL) --data $(SMPL)/cmu/test.npz --val $(SMPL)/cmu/val.npz \
		--train $(SMPL)/cmu/train.npz --vposer runs/smpl-vposer --gmm runs/smpl-gmm --out $(FIT_OUT) --n $(FIT_N)

# ablations and the hyper-parameter sweep of issue 4, judged on the validation split (resumable: run it again to
# continue); SWEEP=name1 name2 … runs a subset (train/sweep.py lists them)
SWEEP ?=
.PHONY: sweep
sweep: install
	$(PY) -m train.cli sweep --data $(DATA) $(foreach s,$(SWEEP),--only $(s))

# the Blender add-on (runtime/blender) tested in real Blender: bpy 4.5 as a Python module in its own venv (no torch),
# the package installed editable; pip's downloads (bpy is ~370 MB) are cached under build/pip-cache between runs
BPY      := .venv-blender/bin/python
BSTAMP   := .venv-blender/.installed
.PHONY: test-blender blender-bench blender-addon
$(BSTAMP): pyproject.toml
	python3 -m venv .venv-blender
	PIP_CACHE_DIR=$(CURDIR)/build/pip-cache $(BPY) -m pip install --quiet "bpy==4.5.*" pytest
	PIP_CACHE_DIR=$(CURDIR)/build/pip-cache $(BPY) -m pip install --quiet -e .
	touch $(BSTAMP)

test-blender: $(BSTAMP)
	PIP_CACHE_DIR=$(CURDIR)/build/pip-cache $(BPY) -m pytest -q -p no:cacheprovider tests_blender

# poseprior.score in Blender vs `poseprior score` on the same 5,000-frame take (a table, not a test)
blender-bench: $(BSTAMP)
	$(BPY) -m tests_blender.bench

# the installable extension zip (bundles the package and the platform's onnxruntime wheel)
blender-addon: $(BSTAMP)
	PIP_CACHE_DIR=$(CURDIR)/build/pip-cache $(BPY) -m runtime.cli blender-addon --out build/poseprior_blender.zip
