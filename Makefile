# Everything runs in .venv, created on first use with the exact versions of constraints/ci.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo app screenshots test test-fast lint typecheck docs pytest pytest-fast clean

$(STAMP): pyproject.toml constraints/ci.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/ci.txt -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/instructedit demo --output outputs/demo.png

# The web app on the embedded default, offline: http://127.0.0.1:7860
app: $(STAMP)
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/instructedit app --model shapes

# The docs' pictures: the demo grid, and the app's screenshot taken by its browser test.
screenshots: $(STAMP)
	$(BIN)/instructedit demo --output docs/_static/demo.png
	INSTRUCTEDIT_SCREENSHOTS=docs/_static INSTRUCTEDIT_BROWSER_TESTS=required \
		$(BIN)/pytest -q tests/app/test_browser.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/ruff format --check src tests benchmarks examples docs

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

pytest: $(STAMP)
	$(BIN)/pytest

# The contributor's loop: lint, types and every test not marked slow (a few minutes).
pytest-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

test-fast: lint typecheck pytest-fast

# The whole suite, as CI runs it.
test: lint typecheck docs pytest

clean:
	rm -rf docs/_build docs/api/generated dist build outputs .mypy_cache .ruff_cache .pytest_cache
