"""A gRPC front process: serves the agent's port (SO_REUSEPORT, beside the agent's other fronts) and
passes every StreamHouse call to the agent over its relay, as raw bytes both ways; it serves the health
and reflection services itself. Started by the agent (``front.relay``), never by hand.

It exits when the agent does: when the relay connection ends, and (through PR_SET_PDEATHSIG) when its
parent dies. On SIGTERM it reports NOT_SERVING, finishes its calls in flight and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from streamhouse.front import wire
from streamhouse.server import (
    REPLY_HEADROOM_BYTES,
    SERVICE_NAME,
    add_health_and_reflection,
    add_service,
)

log = logging.getLogger("streamhouse.front")

_PR_SET_PDEATHSIG = 1


class RelayClient:
    """Calls on the agent's relay: one CALL frame out, one REPLY frame back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int) -> None:
        self._reader = reader
        self._sender = wire.Sender(writer)
        self._max_frame = max_frame
        self._pending: dict[int, asyncio.Future[wire.Reply]] = {}
        self._next_id = 0
        self.closed = asyncio.Event()

    def ready(self) -> None:
        self._sender.send(wire.ready())

    async def read_replies(self) -> None:
        try:
            while True:
                kind, arg, call_id, body = await wire.read_frame(self._reader, self._max_frame)
                if kind != wire.REPLY:
                    raise wire.FrameError(f"unexpected frame kind {kind}")
                fut = self._pending.pop(call_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(wire.parse_reply(arg, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("The agent closed the relay connection; this front process exits")
        except wire.FrameError as exc:
            log.error("Bad frame from the agent (%s); this front process exits", exc)
        finally:
            gone = (grpc.StatusCode.UNAVAILABLE, b"", "the agent is not reachable; retry", ())
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result(gone)
            self._pending.clear()
            self.closed.set()

    async def call(self, method: int, request: bytes, context: Any) -> bytes:
        if self.closed.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent is not reachable; retry")
        self._next_id += 1
        call_id = self._next_id
        fut: asyncio.Future[wire.Reply] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        self._sender.send(wire.call(call_id, method, request))
        try:
            status, data, details, metadata = await fut
        except asyncio.CancelledError:
            if self._pending.pop(call_id, None) is not None and not self.closed.is_set():
                self._sender.send(wire.cancel(call_id))  # the client went away: the agent stops the call
            raise
        if status is grpc.StatusCode.OK:
            return data
        await context.abort(status, details, metadata)
        raise AssertionError("abort returned")  # pragma: no cover


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the call above
        sys.exit(1)


async def serve(args: argparse.Namespace) -> int:
    max_frame = args.max_request_size + wire.FRAME_SLACK_BYTES
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + args.relay)
    except OSError as exc:
        sock.close()
        log.error("Cannot reach the agent's relay: %s", exc)
        return 1
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    relay = RelayClient(reader, writer, max_frame)
    replies = asyncio.create_task(relay.read_replies())

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", args.max_request_size),
            ("grpc.max_send_message_length", args.max_request_size + REPLY_HEADROOM_BYTES),
            ("grpc.so_reuseport", 1),
        ]
    )
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            functools.partial(relay.call, index), request_deserializer=None, response_serializer=None
        )
        for index, name in enumerate(wire.METHODS)
    }
    add_service(server, handlers)
    health = add_health_and_reflection(server)
    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError:
        port = 0
    if port == 0:
        log.error("Cannot listen on %s (listen)", args.listen)
        return 2
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    relay.ready()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    lost = asyncio.create_task(relay.closed.wait())
    await asyncio.wait([stopping, lost], return_when=asyncio.FIRST_COMPLETED)
    if lost.done():
        await server.stop(0)
        return 1
    await health.enter_graceful_shutdown()
    await server.stop(args.grace_s)
    replies.cancel()
    writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamhouse.front.process", description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--relay", required=True, help="the relay's abstract socket name (without NUL)")
    parser.add_argument("--max-request-size", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True, help="the agent's process id")
    parser.add_argument("--grace-s", type=float, default=10.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--event-loop", default="uvloop")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    from streamhouse.agent.pressure import tune_gc
    from streamhouse.cli import event_loop_factory
    from streamhouse.logs import setup_logging

    setup_logging(args.log_level)
    tune_gc()
    with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
        return runner.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
