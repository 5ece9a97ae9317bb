# The two commands of the README.  Each one sets up what is missing first (scripts/bootstrap.sh).
.PHONY: demo test lint bench bench-nbd bench-nfs bench-fd bench-kuiper bootstrap

VENV := .venv/bin

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@bash scripts/demo.sh

lint: bootstrap
	$(VENV)/ruff check src tests examples bench
	$(VENV)/ruff format --check src tests examples bench
	$(VENV)/mypy

# Real peers are installed by bootstrap, so a missing nfs-ganesha is a failure, not a skip.
test: lint
	TRIONFS_REQUIRE_GANESHA=1 $(VENV)/pytest -q

# Benchmarks are never part of the test suite; each runs ours and the reference tool side by side.
bench: bench-nbd bench-nfs bench-fd bench-kuiper

bench-nbd: bootstrap
	$(VENV)/python bench/run.py

bench-nfs: bootstrap
	$(VENV)/python bench/nfs.py

bench-fd: bootstrap
	$(VENV)/python bench/fd.py

bench-kuiper: bootstrap
	$(VENV)/python bench/kuiper.py
