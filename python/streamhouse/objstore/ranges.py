"""Range-read arithmetic shared by the backends, so that both return the same bytes for every range.

``get_range(key, start, length)`` returns bytes ``[start, start + length)`` clipped to the object; a negative
``start`` counts from the end (``-16`` is the last 16 bytes, as an HTTP suffix range ``bytes=-16``), clipped
to the start of the object. A range that begins past the end returns ``b""``.
"""

from __future__ import annotations

from streamhouse.errors import InvalidArgument, InvalidArgumentType


def check_range(start: object, length: object) -> None:
    """Raise InvalidArgument unless ``start`` is an int and ``length`` a non-negative int."""
    if type(start) is not int:
        raise InvalidArgumentType(f"range start must be an int, not {type(start).__name__}")
    if type(length) is not int:
        raise InvalidArgumentType(f"range length must be an int, not {type(length).__name__}")
    if length < 0:
        raise InvalidArgument(f"range length must be >= 0, not {length}")


def slice_range(size: int, start: int, length: int) -> tuple[int, int]:
    """The ``[begin, end)`` byte positions that ``get_range(start, length)`` returns from an object of
    ``size`` bytes (``begin >= end`` means no bytes)."""
    begin = max(0, size + start) if start < 0 else min(start, size)
    end = min(begin + length, size)
    return begin, max(begin, end)


def http_range(start: int, length: int) -> str:
    """The HTTP Range header for a non-empty ``get_range`` (``length > 0``). A suffix range asks for the
    last ``-start`` bytes; the caller keeps the first ``length`` of them."""
    if start < 0:
        return f"bytes={start}"  # "bytes=-N"
    return f"bytes={start}-{start + length - 1}"
