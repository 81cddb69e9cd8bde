"""Fixtures for the engine tests: every test runs against both engines.

When the Rust extension is not built, its parameters fail under CI=true (a CI run must test both) and are
skipped locally with the reason.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from streamhouse import engine as engine_mod
from streamhouse import errors


def require_engine(name: str) -> ModuleType:
    try:
        return engine_mod.load(name)
    except errors.ConfigError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"engine {name!r} is not available under CI=true: {exc}")
        pytest.skip(f"engine {name!r} is not available (run `make build`): {exc}")


@pytest.fixture(params=engine_mod.ENGINES)
def engine(request: pytest.FixtureRequest) -> ModuleType:
    """One engine module, `streamhouse._core` or `streamhouse.pyengine`."""
    return require_engine(request.param)


@pytest.fixture
def engines() -> tuple[ModuleType, ModuleType]:
    """(python, rust) for differential tests."""
    return require_engine("python"), require_engine("rust")


@pytest.fixture(params=[(w, r) for w in engine_mod.ENGINES for r in engine_mod.ENGINES])
def writer_reader(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    """(writer engine, reader engine) in every combination, to read each engine's files with the other."""
    writer, reader = request.param
    return require_engine(writer), require_engine(reader)
