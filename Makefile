# The two commands of the README: `make demo` (main job) and `make test` (test suite).
# Both create or reuse a local virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch is installed first so the package's torch range never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo blob-demo test lint venv clean experiments benchmarks test-reference venv-reference zoo-check gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The main job: the angiogram bundle on its embedded sample cines (XA DICOM + NIfTI).
demo: $(STAMP)
	cd bundles/angiogram_signature_activation && $(CURDIR)/$(PY) -m monai.bundle run \
		--config_file configs/inference.json --bundle_root . --output_dir $(CURDIR)/outputs/angiogram

# The first demo: a small CNN on generated 2D images, one NIfTI map + PNG overlay in outputs/demo.
blob-demo: $(STAMP)
	$(PY) -m monai_saliency.demo --output-dir outputs/demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Static checks of the whole tree (run by .ci/run): ruff's lint and format with the repo's config (pyproject.toml),
# and the import-layer contracts (also checked by tests/test_architecture.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# Optional reference environment (.venv-ref): independent implementations that need torchvision, which here comes
# only with a CUDA build of torch (it runs on CPU), so it is kept out of .venv. Tests under tests/reference/ compare
# our methods with them (pytorch-grad-cam: Grad-CAM, Grad-CAM++, Eigen-CAM); under `make test` they skip, here a
# missing reference package fails them (MONAI_SALIENCY_REFERENCE=1). Reusable: add tests to tests/reference/.
REF_VENV ?= .venv-ref
REF_PY := $(REF_VENV)/bin/python
REF_STAMP := $(REF_VENV)/.installed
REF_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

venv-reference: $(REF_STAMP)

$(REF_STAMP): pyproject.toml Makefile
	test -x $(REF_PY) || $(PYTHON) -m venv $(REF_VENV)
	$(REF_PY) -m pip install -q --upgrade pip
	$(REF_PY) -m pip install -q $(REF_TORCH_SPEC)
	$(REF_PY) -m pip install -q -e ".[test,reference]"
	touch $(REF_STAMP)

test-reference: $(REF_STAMP)
	MONAI_SALIENCY_REFERENCE=1 $(REF_PY) -m pytest -q tests/reference $(PYTEST_ARGS)

# Reproductions of the seed papers' experiments, the angiogram study and the image signature demo: each writes its
# tables, figures and verdicts.json to benchmarks/experiments/results/<name>/, the committed results (a rerun updates
# them). run_all runs them two at a time with one thread each, states the wall time in results/RUN.md and regenerates
# the README's summary (and results/SUMMARY.md) from the verdicts.
experiments: $(STAMP)
	$(PY) -m benchmarks.experiments.run_all

# Speed benchmarks (ratios against MONAI/captum/reference loops measured in the same run); run on a quiet machine.
# Each table goes to benchmarks/speed/results/ (the committed results, with the settings they were run with);
# forgrad_overhead.txt, gradients_2d_smoothgrad.txt and gradients_2d_chunk16_partial.txt there are one-off runs.
SPEED_RESULTS := benchmarks/speed/results
benchmarks: SHELL := /bin/bash
benchmarks: .SHELLFLAGS := -o pipefail -c
benchmarks: $(STAMP)
	$(PY) -m benchmarks.speed.bench_gradients --only 2d --chunk 8 --repeats 1 | tee $(SPEED_RESULTS)/gradients_2d.txt
	$(PY) -m benchmarks.speed.bench_gradients --only 3d | tee $(SPEED_RESULTS)/gradients_3d.txt
	$(PY) -m benchmarks.speed.bench_signature --repeats 15 | tee $(SPEED_RESULTS)/signature.txt
	$(PY) -m benchmarks.speed.bench_morch | tee $(SPEED_RESULTS)/morch.txt
	$(PY) -m benchmarks.speed.roundoff_signature | tee $(SPEED_RESULTS)/roundoff_signature.txt
	$(PY) -m benchmarks.speed.bench_cohort_throughput --out $(SPEED_RESULTS)/cohort_throughput.txt
	$(PY) -m benchmarks.speed.bench_loader_transfer --out $(SPEED_RESULTS)/loader_transfer.txt
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.speed.bench_clinical_cine  # writes $(SPEED_RESULTS)/clinical_cine.txt

# MONAI model-zoo checks of the three bundles (verify_metadata, verify_net_in_out, ckpt_export, check_properties,
# large_files), each command in its own `python -m monai.bundle` process; see bundles/conformance.py.
zoo-check: $(STAMP)
	$(PY) bundles/conformance.py --subprocess

# For a borrowed GPU: the CUDA-marked tests and the speed benchmarks on CUDA (benchmarks/speed/gpu_check.py), in
# under 8 minutes; installs nothing (point GPU_PY at an interpreter whose torch has CUDA, e.g. a CUDA venv).
# Without CUDA it prints "no CUDA" and exits 0.
GPU_PY ?= $(PY)
gpu-check:
	@test -x $(GPU_PY) || { echo "no interpreter $(GPU_PY): run 'make venv' or set GPU_PY=/path/to/python"; exit 2; }
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m benchmarks.speed.gpu_check

clean:
	rm -rf $(VENV) $(REF_VENV) outputs .pytest_cache
