"""The frames between an agent and its gRPC front processes, over a local stream socket.

A front sends each StreamHouse RPC it receives as a CALL frame holding the raw request bytes; the agent
runs it through the handlers its own gRPC server would use and answers with one REPLY frame: the raw reply
bytes, or a status code with its details and trailing metadata. A CANCEL frame stops a call whose client
went away; READY tells the agent that a front serves its port. Both ends are one installation on one
machine, so frames carry no version.

Every frame is a u32 (little-endian) length of what follows, then a u8 kind and a u64 call id:

- CALL: a u8 method index (``METHODS``), then the request bytes;
- CANCEL, READY: nothing more (READY's call id is 0);
- REPLY: a u8 status (0 OK, else a ``grpc.StatusCode`` value), then for OK the reply bytes, and for an
  error a u32 length and the details (UTF-8), then the trailing metadata as pairs of (u16 length, key,
  u16 length, value).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Final

import grpc

from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb

METHODS: Final = tuple(m.name for m in pb.DESCRIPTOR.services_by_name["StreamHouse"].methods)
"""The StreamHouse service's methods; a CALL names one by its index here."""

CALL: Final = 1
CANCEL: Final = 2
REPLY: Final = 3
READY: Final = 4

HEAD: Final = struct.Struct("<IBQ")  # length of the rest, kind, call id
_B: Final = struct.Struct("<B")
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")
FRAME_SLACK_BYTES: Final = 64 << 10
"""How much larger than ``max_request_size`` a frame may be (its own fields and the reply's headroom)."""

STATUS_BY_VALUE: Final = {code.value[0]: code for code in grpc.StatusCode}


class FrameError(Exception):
    """A frame that does not parse, or is larger than allowed: the connection is closed."""


def _frame(kind: int, call_id: int, *parts: bytes) -> list[bytes]:
    rest = sum(len(p) for p in parts)
    return [HEAD.pack(HEAD.size - 4 + rest, kind, call_id), *parts]


def call(call_id: int, method: int, request: bytes) -> list[bytes]:
    return _frame(CALL, call_id, _B.pack(method), request)


def cancel(call_id: int) -> list[bytes]:
    return _frame(CANCEL, call_id)


def ready() -> list[bytes]:
    return _frame(READY, 0)


def reply_ok(call_id: int, data: bytes) -> list[bytes]:
    return _frame(REPLY, call_id, b"\x00", data)


def reply_error(
    call_id: int, code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str]] = ()
) -> list[bytes]:
    text = details.encode("utf-8", "replace")
    parts = [_B.pack(code.value[0]), _U32.pack(len(text)), text]
    for key, value in metadata:
        k, v = key.encode(), str(value).encode()
        parts += [_U16.pack(len(k)), k, _U16.pack(len(v)), v]
    return _frame(REPLY, call_id, *parts)


def parse_call(body: bytes) -> tuple[int, bytes]:
    """A CALL's (method index, request bytes)."""
    if not body or body[0] >= len(METHODS):
        raise FrameError(f"CALL names no method of the service (index {body[:1]!r})")
    return body[0], body[1:]


def parse_reply(body: bytes) -> tuple[grpc.StatusCode, bytes, str, tuple[tuple[str, str], ...]]:
    """A REPLY's (status, reply bytes, details, trailing metadata)."""
    try:
        status = STATUS_BY_VALUE[body[0]]
        if status is grpc.StatusCode.OK:
            return status, body[1:], "", ()
        (n,) = _U32.unpack_from(body, 1)
        at = 5 + n
        details = body[5:at].decode("utf-8", "replace")
        metadata = []
        while at < len(body):
            (kn,) = _U16.unpack_from(body, at)
            key = body[at + 2 : at + 2 + kn].decode()
            at += 2 + kn
            (vn,) = _U16.unpack_from(body, at)
            metadata.append((key, body[at + 2 : at + 2 + vn].decode()))
            at += 2 + vn
    except (IndexError, KeyError, struct.error, UnicodeDecodeError) as exc:
        raise FrameError(f"malformed REPLY ({exc})") from None
    return status, b"", details, tuple(metadata)


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> tuple[int, int, bytes]:
    """The next frame's (kind, call id, body); IncompleteReadError at the end of the stream."""
    head = await reader.readexactly(HEAD.size)
    length, kind, call_id = HEAD.unpack(head)
    rest = length - (HEAD.size - 4)
    if rest < 0 or rest > max_bytes:
        raise FrameError(f"frame of {length} bytes (at most {max_bytes + HEAD.size} allowed)")
    body = await reader.readexactly(rest) if rest else b""
    return kind, call_id, body


class Sender:
    """Frames queued in one loop turn go out in one write."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._queued: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def send(self, frame: list[bytes]) -> None:
        if not self._queued:
            self._loop.call_soon(self._flush)
        self._queued.extend(frame)

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        if queued and not self._writer.is_closing():
            self._writer.writelines(queued)
