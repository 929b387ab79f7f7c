# The two commands of the README: `make demo` (main job) and `make test` (test suite).
# Both create or reuse a local virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch is installed first so the package's torch range never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo blob-demo test venv clean experiments benchmarks

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

# Reproductions of the seed papers' experiments: tables and figures in outputs/<name>/.
experiments: $(STAMP)
	$(PY) benchmarks/exp_seed000_structured.py
	$(PY) benchmarks/exp_forgrad.py
	$(PY) benchmarks/exp_sanity.py
	$(PY) benchmarks/exp_morch.py
	$(PY) benchmarks/study_angiogram.py --out outputs/angiogram_study
	$(PY) benchmarks/demo_image_signature.py

# Speed benchmarks (ratios against MONAI/captum/reference loops measured in the same run); run on a quiet machine.
benchmarks: $(STAMP)
	mkdir -p outputs/benchmarks
	$(PY) benchmarks/bench_gradients.py | tee outputs/benchmarks/gradients.txt
	$(PY) benchmarks/bench_signature.py | tee outputs/benchmarks/signature.txt
	$(PY) benchmarks/bench_morch.py | tee outputs/benchmarks/morch.txt

clean:
	rm -rf $(VENV) outputs .pytest_cache
