# The README's two commands: `make run` (main job on the embedded defaults) and `make test`.
# Both build their own virtual environment first: torch==2.13.0 (the local CPU wheel), then the
# package with every version pinned by constraints.txt, through components/install.sh, the same
# script both container images run (components/Dockerfile, components/Dockerfile.cuda).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint lint-deploy bench clean browser

$(STAMP): pyproject.toml constraints.txt components/install.sh
	PYTHON=$(PYTHON) sh components/install.sh $(VENV) dev 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import cloudlulc, torch, rasterio, great_expectations, moto" \
		|| { echo "installation failed"; exit 1; }
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cloudlulc demo --out outputs/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian's Chromium and its driver, for the report-page tests (headless, driven by Selenium).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: $(STAMP) browser lint lint-deploy
	$(BIN)/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; rc=0; fi; exit $$rc

# Deploy linters (hadolint, checkov) from their own pinned venv: checkov's dependencies conflict with constraints.txt.
LINT_VENV ?= .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed

$(LINT_STAMP): requirements-lint.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install -q -r requirements-lint.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(LINT_VENV)/bin/checkov --version >/dev/null && $(LINT_VENV)/bin/hadolint --version >/dev/null \
		|| { echo "lint tools installation failed"; exit 1; }
	touch $(LINT_STAMP)

lint-deploy: $(LINT_STAMP)
	sh k8s/lint.sh $(LINT_VENV)/bin

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs validation-report .pytest_cache .ruff_cache
