# StreamHouse: one command for each job. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
UV      := $(VENV)/bin/uv
UV_VERSION := 0.13.9
RUST_SOURCES := $(shell find rust bench -name '*.rs' 2>/dev/null) Cargo.toml Cargo.lock pyproject.toml
# `make dist` output, and the oldest glibc the wheel runs on (maturin links it against that glibc with zig).
DIST_DIR ?= dist
MANYLINUX ?= manylinux_2_17
# Where `make run` keeps its data; delete it to start over. ARGS: more agent flags for `make run`.
DATA_DIR ?= ./streamhouse-data
ARGS ?=

.PHONY: help venv build run test test-rust test-python bench bench-quick lint check-alerts format proto clean lock \
	dist image

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip sync -q --python $(PY) requirements.lock
	@touch $@

venv: $(VENV)/.deps ## Create .venv with the pinned dependencies (requirements.lock)

$(VENV)/.built: $(VENV)/.deps $(RUST_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin develop --release --uv -q
	@touch $@

build: $(VENV)/.built ## Build the Rust extension (release) and install streamhouse into .venv

run: build ## Run the agent on the embedded default (SQLite + local objects in ./streamhouse-data); ARGS="--listen ..." adds flags
	$(VENV)/bin/streamhouse agent --data-dir $(DATA_DIR) $(ARGS)

test: build test-rust test-python ## Build, then run cargo test and the whole pytest suite (starts PostgreSQL and S3)

test-rust: ## Rust tests, with and without the Python bindings
	cargo test --release --no-default-features
	cargo test --release

test-python: build ## pytest: unit, engine (both engines) and integration (real PostgreSQL + S3 server)
	$(PY) -m pytest -q

bench: build ## Full benchmarks: engine (Rust vs Python vs raw disk/codec), end to end, object-store cost, criterion
	$(VENV)/bin/streamhouse bench engine
	$(VENV)/bin/streamhouse bench produce
	$(VENV)/bin/streamhouse bench cost
	cargo bench --no-default-features

bench-quick: build ## Benchmark smoke run (what CI runs)
	$(VENV)/bin/streamhouse bench engine --quick
	$(VENV)/bin/streamhouse bench produce --quick
	$(VENV)/bin/streamhouse bench cost --quick

lint: venv ## ruff, mypy --strict, rustfmt, clippy -D warnings
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint deploy/Dockerfile
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

check-alerts: ## promtool: check deploy/prometheus/alerts.yml and run its unit tests (alerts_test.yml)
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

format: venv ## Format Python and Rust code
	$(VENV)/bin/ruff format python tests bench examples
	$(VENV)/bin/ruff check --fix python tests bench examples
	cargo fmt

proto: venv ## Regenerate the gRPC Python code from proto/
	$(PY) scripts/gen_proto.py

lock: venv ## Re-resolve requirements.lock (dev) and requirements-runtime.lock (image) from pyproject.toml
	$(UV) pip compile -q pyproject.toml --extra dev -o requirements.lock --python $(PY)
	$(UV) pip compile -q pyproject.toml -o requirements-runtime.lock --python $(PY)

dist: venv ## sdist, and from it one abi3 wheel (CPython 3.11+, $(MANYLINUX)) into dist/
	rm -rf $(DIST_DIR) target/dist/src && mkdir -p $(DIST_DIR) target/dist/src
	$(VENV)/bin/maturin sdist --out $(DIST_DIR)
	tar -xzf $(DIST_DIR)/*.tar.gz -C target/dist/src --strip-components=1
	cd target/dist/src && CARGO_TARGET_DIR=$(abspath target/dist/cargo) PATH=$(abspath $(VENV))/bin:$$PATH \
	  $(abspath $(VENV))/bin/maturin build --release --locked --zig --compatibility $(MANYLINUX) \
	  --interpreter $(abspath $(PY)) --out $(abspath $(DIST_DIR))
	@ls -l $(DIST_DIR)

image: dist ## Container image from dist/'s wheel on a Debian base (debootstrap, buildah, podman; see deploy/README.md)
	deploy/image/build.sh image $(DIST_DIR)/*.whl

clean: ## Remove build outputs (keeps .venv)
	cargo clean
	rm -rf $(DIST_DIR)
	rm -f $(VENV)/.built python/streamhouse/_core*.so
