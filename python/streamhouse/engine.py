"""Selects the storage engine: the Rust extension ``streamhouse._core`` or the pure-Python
``streamhouse.pyengine``. Both export the API of ``_core.pyi`` and write byte-identical files."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from streamhouse import errors

ENGINES = ("rust", "python")
ENV_VAR = "STREAMHOUSE_ENGINE"
_MODULES = {"rust": "streamhouse._core", "python": "streamhouse.pyengine"}


def load(name: str | None = None) -> ModuleType:
    """Return the engine module for `name`, or for $STREAMHOUSE_ENGINE (default "rust") when None."""
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or "rust"
    if not isinstance(name, str):
        raise errors.InvalidArgumentType(f"engine name must be a str, not {type(name).__name__}")
    if name not in _MODULES:
        raise errors.ConfigError(
            f"unknown storage engine {name!r} ({ENV_VAR}): expected one of {', '.join(ENGINES)}"
        )
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        if name == "rust":
            raise errors.ConfigError(
                f"the Rust engine (streamhouse._core) is not built: run `make build`, "
                f"or set {ENV_VAR}=python to use the pure-Python engine ({exc})"
            ) from None
        raise
