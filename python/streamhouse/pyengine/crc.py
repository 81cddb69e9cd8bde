"""CRC32C (Castagnoli) as the format uses it, with the engine's argument checks."""

from __future__ import annotations

from typing import Any

import crc32c as _crc32c

from streamhouse.pyengine.codec import check_bytes


def crc32c(data: Any) -> int:
    """CRC32C of `data` (bytes-like); ``crc32c(b"123456789") == 0xE3069283``."""
    check_bytes(data, "data")
    return _crc32c.crc32c(data)
