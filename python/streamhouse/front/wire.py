"""The frames between an agent and its gRPC front processes, over a local stream socket.

A front sends each StreamHouse RPC it receives as a CALL frame holding the raw request bytes; the agent
runs it through the handlers its own gRPC server would use and answers with one REPLY frame: the raw reply
bytes, or a status code with its details and trailing metadata. A CANCEL frame stops a call whose client
went away; READY tells the agent that a front serves its port. Both ends are one installation on one
machine, so frames carry no version.

Every frame is a header, then a body. The header: a u32 (little-endian) length of what follows it, a
u8 kind, a u8 argument and a u64 call id. The argument is the method's index (``METHODS``) in a CALL and
the status (0 OK, else a ``grpc.StatusCode`` value) in a REPLY, 0 otherwise; so the body of a CALL is the
request bytes and that of an OK REPLY the reply bytes, as they are, and neither is copied to be cut out
of its frame. The body of an error REPLY: a u32 length and the details (UTF-8), then the trailing
metadata as pairs of (u16 length, key, u16 length, value). CANCEL and READY have none (READY's call id
is 0).
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

HEAD: Final = struct.Struct("<IBBQ")  # length of the rest, kind, argument, call id
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")
FRAME_SLACK_BYTES: Final = 64 << 10
"""How much larger than ``max_request_size`` a frame may be (its own fields and the reply's headroom)."""

STATUS_BY_VALUE: Final = {code.value[0]: code for code in grpc.StatusCode}


Reply = tuple[grpc.StatusCode, bytes, str, tuple[tuple[str, str], ...]]
"""A parsed REPLY: status, reply bytes (OK), details and trailing metadata (an error)."""


class FrameError(Exception):
    """A frame that does not parse, or is larger than allowed: the connection is closed."""


def _frame(kind: int, arg: int, call_id: int, *parts: bytes) -> list[bytes]:
    rest = sum(len(p) for p in parts)
    return [HEAD.pack(HEAD.size - 4 + rest, kind, arg, call_id), *parts]


def call(call_id: int, method: int, request: bytes) -> list[bytes]:
    return _frame(CALL, method, call_id, request)


def cancel(call_id: int) -> list[bytes]:
    return _frame(CANCEL, 0, call_id)


def ready() -> list[bytes]:
    return _frame(READY, 0, 0)


def reply_ok(call_id: int, data: bytes) -> list[bytes]:
    return _frame(REPLY, 0, call_id, data)


def reply_error(
    call_id: int, code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str]] = ()
) -> list[bytes]:
    text = details.encode("utf-8", "replace")
    parts = [_U32.pack(len(text)), text]
    for key, value in metadata:
        k, v = key.encode(), str(value).encode()
        parts += [_U16.pack(len(k)), k, _U16.pack(len(v)), v]
    return _frame(REPLY, code.value[0], call_id, *parts)


def check_method(arg: int) -> int:
    """A CALL's method index, if the service has that method."""
    if arg >= len(METHODS):
        raise FrameError(f"CALL names no method of the service (index {arg})")
    return arg


def parse_reply(arg: int, body: bytes) -> Reply:
    """A REPLY's (status, reply bytes, details, trailing metadata), from its argument and body."""
    try:
        status = STATUS_BY_VALUE[arg]
        if status is grpc.StatusCode.OK:
            return status, body, "", ()
        (n,) = _U32.unpack_from(body, 0)
        at = 4 + n
        details = body[4:at].decode("utf-8", "replace")
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


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> tuple[int, int, int, bytes]:
    """The next frame's (kind, argument, call id, body); IncompleteReadError at the end of the stream."""
    head = await reader.readexactly(HEAD.size)
    length, kind, arg, call_id = HEAD.unpack(head)
    rest = length - (HEAD.size - 4)
    if rest < 0 or rest > max_bytes:
        raise FrameError(f"frame of {length} bytes (at most {max_bytes + HEAD.size} allowed)")
    body = await reader.readexactly(rest) if rest else b""
    return kind, arg, call_id, body


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
