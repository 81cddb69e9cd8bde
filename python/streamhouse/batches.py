"""How ``streamhouse produce`` cuts records into requests: lines of stdin or generated values, in lists of
values that each become one produce request.

Invariant: a request holds at most ``--batch-size`` records and, encoded, at most ``--batch-bytes`` bytes
(the whole ProduceRequest: records, the batch header and the request's other fields), except that a record
too large for any request goes alone (the agent then says whether it is over its ``max_record_size``).
Sizes are computed from the record format (docs/format.md section 1), not guessed from value lengths: a
16 KiB value costs 16 KiB and a few bytes, a one-byte value costs several times its length.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterable, Iterator
from typing import Final

REQUEST_OVERHEAD_BYTES: Final = 64
"""A ProduceRequest's bytes besides its records and its topic name: the topic's tag and length, partition,
acks, the batch's tag and length, the 20-byte batch header (docs/format.md section 2), and room for a few
more small fields."""

_MAX_FRAMING_BYTES: Final = 22
"""Most bytes one record adds to its key and value (docs/format.md section 1): length, offset delta, key
length and value length varints of up to 5 bytes each, a one-byte timestamp delta (the CLI's records all
take the batch's timestamp) and a one-byte header count (no headers)."""


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def record_size(key_len: int | None, value_len: int, index: int) -> int:
    """Encoded bytes of the CLI's record number ``index`` of a batch: no headers, the batch's timestamp."""
    key = 1 if key_len is None else _varint_size(2 * key_len) + key_len  # zig-zag: -1 is 1, n is 2n
    body = _varint_size(index) + 1 + key + _varint_size(value_len) + value_len + 1
    return _varint_size(body) + body


def records_budget(batch_bytes: int, topic: str) -> int:
    """Bytes of encoded records that fit in a request of ``batch_bytes`` to ``topic``."""
    return batch_bytes - REQUEST_OVERHEAD_BYTES - len(topic.encode())


def within_bytes(batches: Iterable[list[bytes]], budget: int, key_len: int | None) -> Iterator[list[bytes]]:
    """Each list of values cut, in order, into lists whose records take at most ``budget`` bytes encoded
    (``records_budget``); a single record over it goes alone."""
    key = key_len or 0
    for values in batches:
        if sum(map(len, values)) + len(values) * (_MAX_FRAMING_BYTES + key) <= budget:
            yield values  # the bound of every record's framing fits: no need to count one by one
            continue
        out: list[bytes] = []
        size = 0
        for v in values:
            n = record_size(key_len, len(v), len(out))
            if out and size + n > budget:
                yield out
                out, size = [], 0
                n = record_size(key_len, len(v), 0)
            out.append(v)
            size += n
        if out:
            yield out


def stdin_batches(
    max_records: int, budget: int, key_len: int | None, linger_s: float
) -> Iterator[list[bytes]]:
    """Lines of stdin in batches of at most ``max_records`` records and ``budget`` encoded bytes; a partial
    batch is released after ``linger_s`` without new input, so an interactive producer sees its lines
    sent."""
    fd = sys.stdin.fileno()
    batch: list[bytes] = []
    size = 0
    rest = b""
    while True:
        if batch:
            readable, _, _ = select.select([fd], [], [], linger_s)
            if not readable:
                yield batch
                batch, size = [], 0
                continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            value = line[:-1] if line.endswith(b"\r") else line
            n = record_size(key_len, len(value), len(batch))
            if batch and size + n > budget:
                yield batch
                batch, size = [], 0
                n = record_size(key_len, len(value), 0)
            batch.append(value)
            size += n
            if len(batch) >= max_records:
                yield batch
                batch, size = [], 0
    if rest:
        if batch and size + record_size(key_len, len(rest), len(batch)) > budget:
            yield batch
            batch = []
        batch.append(rest)
    if batch:
        yield batch


def generated_batches(
    count: int, size: int, max_records: int, budget: int, key_len: int | None
) -> Iterator[list[bytes]]:
    """``count`` generated values of ``size`` bytes, as many to a batch as ``max_records`` and ``budget``
    allow (at least one)."""
    value = (b"streamhouse-" * (size // 12 + 1))[:size]
    per_batch = total = 0
    while per_batch < max_records:
        n = record_size(key_len, size, per_batch)
        if per_batch and total + n > budget:
            break
        total += n
        per_batch += 1
    full = [value] * per_batch
    left = count
    while left > 0:
        n = min(left, per_batch)
        yield full if n == per_batch else full[:n]
        left -= n


__all__ = [
    "REQUEST_OVERHEAD_BYTES",
    "generated_batches",
    "record_size",
    "records_budget",
    "stdin_batches",
    "within_bytes",
]
