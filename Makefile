# smtplab: everyday commands. Everything runs inside ./.venv, created on first use.
# Stamp files in .venv/ remember what was installed, so pip only runs again when
# pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

# Use the platformdirs locations now (silences jupyter_client's DeprecationWarning,
# which filterwarnings=error would turn into a failure) and quiet debugpy's
# "frozen modules" notice in kernels.
export JUPYTER_PLATFORM_DIRS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: lab test test-all bench notebooks screenshots clean

# JupyterLab with the settings the project ships in jupyter/settings/ (overrides.json:
# no "news?" pop-up, no update check; Binder's postBuild installs the same file), and
# --allow-root when run as root (containers, CI runners), which Jupyter otherwise refuses.
# tests/peers/jupyter.py starts its servers with this same command line (make -n lab).
LAB_SETTINGS := $(CURDIR)/jupyter/settings
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(VENV)/.stamp-lab
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 '--LabServerApp.app_settings_dir=$(LAB_SETTINGS)' $(ALLOW_ROOT) notebooks/00-index.ipynb

test: $(VENV)/.stamp-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Python matrix (what .ci/run runs): `make test` on every Python here among the
# versions pyproject.toml's classifiers list, each in its own .venv-<version>, strict
# nbval on every one of them.
test-all:
	$(PYTHON) tools/test_matrix.py

# Receive, relay and bulk benchmarks against plain aiosmtpd, Postfix (smtp-sink, a
# private instance) and MailDev (npm, into bench/maildev/); writes bench/results.md.
# Postfix's parts need Debian's postfix package and root; missing parts are skipped.
bench: $(VENV)/.stamp-lab
	$(BIN)/python bench/run.py

# Re-execute every chapter in place, then drop widget state and timing metadata
# so the committed outputs reproduce under nbval and diffs stay small.
notebooks: $(VENV)/.stamp-lab
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace notebooks/[0-9]*.ipynb
	$(BIN)/python tools/strip_widget_state.py notebooks/*.ipynb

# The pictures of the dashboard above each chapter's lab.ui() cell (notebooks/images/), for
# readers who never run a cell: made from the real widget in JupyterLab by the browser tests,
# each with the hash of its inputs beside it; tests/test_static_read.py fails when one is stale.
screenshots: $(VENV)/.stamp-test
	SMTPLAB_SCREENSHOTS=write $(BIN)/python -m pytest -q tests/test_browser.py -k picture_of_each

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache bench/out test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +

# A new virtual environment, with an up-to-date pip.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.stamp-lab: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[lab]'
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[test]'
	touch $@
