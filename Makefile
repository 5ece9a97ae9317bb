# The two commands of the README.  Each one sets up what is missing first (scripts/bootstrap.sh).
.PHONY: demo test lint bench bootstrap

VENV := .venv/bin

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@bash scripts/demo.sh

lint: bootstrap
	$(VENV)/ruff check src tests examples bench
	$(VENV)/ruff format --check src tests examples bench
	$(VENV)/mypy

test: lint
	$(VENV)/pytest -q

bench: bootstrap
	$(VENV)/python bench/run.py
