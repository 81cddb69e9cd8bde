"""`STREAMHOUSE_ENGINE` picks the storage engine; rust is the default; a bad name is a clear error."""

from __future__ import annotations

import pytest

from streamhouse import engine
from streamhouse.errors import ConfigError


def test_default_is_rust_and_the_variable_selects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMHOUSE_ENGINE", raising=False)
    assert engine.load().ENGINE == "rust"
    monkeypatch.setenv("STREAMHOUSE_ENGINE", "python")
    assert engine.load().ENGINE == "python"
    assert engine.load("rust").ENGINE == "rust"  # an explicit name beats the variable


def test_unknown_engine_names_the_variable_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMHOUSE_ENGINE", "java")
    with pytest.raises(ConfigError, match="STREAMHOUSE_ENGINE") as info:
        engine.load()
    assert "rust" in str(info.value) and "python" in str(info.value)
