"""The agent's side of its gRPC front processes: the relay that runs their calls, and their supervision.

``RelayedServer.start`` stands where ``GrpcServer.start`` does when ``front_processes`` is above 0. It
reserves the ``listen`` port (a socket bound with SO_REUSEPORT, never listening, so it takes no
connections), opens the relay (a Unix socket in the abstract namespace, accepting only the processes it
started, checked by the peer's process id), starts the front processes and waits until each says it serves
the port. A call from a front runs through the same handlers as the agent's own gRPC server would use
(``server.service_handlers``), so validation, memory admission, errors and metrics are the same. A front
that dies is started again; the agent dying takes its fronts with it (they watch the relay and their
parent). Shutdown: produce is refused, the fronts finish their calls in flight and exit, then the agent
stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

from streamhouse import config as config_mod
from streamhouse import errors
from streamhouse.front import wire
from streamhouse.server import StreamHouseServicer, service_handlers

log = logging.getLogger("streamhouse.front")

READY_TIMEOUT_S = 60.0
RESTART_DELAY_S = 1.0


def _forget(calls: dict[int, asyncio.Task[None]], call_id: int, _task: object) -> None:
    calls.pop(call_id, None)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, metadata: tuple[tuple[str, str], ...]) -> None:
        super().__init__(details)
        self.code, self.details, self.metadata = code, details, metadata


class _RelayContext:
    """What the service's handlers use of a gRPC context: ``abort``."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise _Aborted(code, details, tuple((str(k), str(v)) for k, v in trailing_metadata or ()))


class Relay:
    """Runs the calls of the front processes whose process ids are in ``allowed``."""

    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler], max_frame_bytes: int) -> None:
        self._handlers = [handlers[name] for name in wire.METHODS]
        self._max_frame = max_frame_bytes
        self.name = f"\0streamhouse-relay-{os.getpid()}-{secrets.token_hex(8)}"
        self.allowed: set[int] = set()
        self.ready: dict[int, asyncio.Event] = {}
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.name)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        if pid not in self.allowed:
            log.warning("Relay: refused a connection from process %d, not one of this agent's fronts", pid)
            writer.close()
            self._connections.discard(task)
            return
        sender = wire.Sender(writer)
        calls: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                kind, arg, call_id, body = await wire.read_frame(reader, self._max_frame)
                if kind == wire.CALL:
                    method = wire.check_method(arg)
                    call = asyncio.create_task(self._call(sender, call_id, method, body))
                    calls[call_id] = call
                    call.add_done_callback(functools.partial(_forget, calls, call_id))
                elif kind == wire.CANCEL:
                    running = calls.get(call_id)
                    if running is not None:
                        running.cancel()
                elif kind == wire.READY:
                    self.ready.setdefault(pid, asyncio.Event()).set()
                else:
                    raise wire.FrameError(f"unknown frame kind {kind}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the front went away: its clients saw their calls fail
        except wire.FrameError as exc:
            log.error("Relay: front process %d sent a bad frame (%s); closing its connection", pid, exc)
        finally:
            for running in list(calls.values()):
                running.cancel()
            writer.close()
            self._connections.discard(task)

    async def _call(self, sender: wire.Sender, call_id: int, method: int, request: bytes) -> None:
        handler = self._handlers[method]
        try:
            reply = await handler.unary_unary(request, _RelayContext())
            serialize = handler.response_serializer
            sender.send(wire.reply_ok(call_id, serialize(reply) if serialize is not None else reply))
        except _Aborted as exc:
            sender.send(wire.reply_error(call_id, exc.code, exc.details, exc.metadata))
        except Exception as exc:  # the handlers turn every error into an abort; this is a bug
            log.exception("Relay: %s failed with an unexpected error", wire.METHODS[method])
            sender.send(
                wire.reply_error(
                    call_id,
                    grpc.StatusCode.INTERNAL,
                    f"internal error in {wire.METHODS[method]} ({type(exc).__name__}); see the agent's log",
                )
            )


def reserve_port(listen: str) -> socket.socket:
    """A socket bound to ``listen`` with SO_REUSEPORT and not listening: it holds the port (a port of 0
    becomes a free one) for the front processes, which bind it with SO_REUSEPORT too, and takes no
    connections. ``errors.ConfigError`` naming the knob if the port is taken."""
    host, port = config_mod.parse_host_port(listen)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        reason = "address in use" if exc.errno == errno.EADDRINUSE else str(exc)
        raise errors.ConfigError(f"cannot listen on {listen} (listen): {reason}") from None
    return sock


class RelayedServer:
    """The agent's gRPC service served by ``count`` front processes; ``GrpcServer``'s interface."""

    def __init__(
        self,
        servicer: StreamHouseServicer,
        relay: Relay,
        reservation: socket.socket,
        listen: str,
        count: int,
        front_args: list[str],
        stop_broker: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.servicer = servicer
        self._relay = relay
        self._reservation = reservation
        host, _ = config_mod.parse_host_port(listen)
        self.port: int = reservation.getsockname()[1]
        self._listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self._count = count
        self._front_args = front_args
        self._stop_broker = stop_broker
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self._stopped = False
        self._supervisor: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        broker: Any,
        *,
        count: int,
        listen: str,
        max_request_size: int,
        default_acks: Any,
        max_fetch_bytes: int,
        stop_broker: Callable[[], Awaitable[None]] | None = None,
        on_error: Any = None,
        admission: Any = None,
        log_level: str = "info",
        event_loop: str = "uvloop",
        grace_s: float = 10.0,
    ) -> RelayedServer:
        servicer = StreamHouseServicer(
            broker,
            default_acks=default_acks,
            max_fetch_bytes=max_fetch_bytes,
            on_error=on_error,
            admission=admission,
            max_request_size=max_request_size,
        )
        relay = Relay(service_handlers(servicer), max_request_size + wire.FRAME_SLACK_BYTES)
        reservation = reserve_port(listen)
        front_args = [
            "--relay",
            relay.name[1:],
            "--max-request-size",
            str(max_request_size),
            "--parent",
            str(os.getpid()),
            "--log-level",
            log_level,
            "--event-loop",
            event_loop,
            "--grace-s",
            str(grace_s),
        ]
        server = cls(servicer, relay, reservation, listen, count, front_args, stop_broker)
        try:
            await relay.start()
            for _ in range(count):
                server._spawn()
            await server._wait_ready(list(server._procs))
        except BaseException:
            await server._stop_fronts(0)
            raise
        server._supervisor = asyncio.create_task(server._supervise())
        return server

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamhouse.front.process", "--listen", self._listen, *self._front_args],
            stdin=subprocess.DEVNULL,
        )
        self._relay.allowed.add(proc.pid)
        self._relay.ready.setdefault(proc.pid, asyncio.Event())
        self._procs.append(proc)
        return proc

    async def _wait_ready(self, procs: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc in procs:
            event = self._relay.ready[proc.pid]
            while not event.is_set():
                code = proc.poll()
                if code is not None:
                    raise errors.ConfigError(
                        f"a gRPC front process exited with status {code} while starting (its error is "
                        f"above); front_processes={self._count}, listen {self._listen}"
                    )
                if time.monotonic() > deadline:
                    raise errors.StreamhouseError(
                        f"a gRPC front process did not start serving {self._listen} in {READY_TIMEOUT_S:g} s"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 0.1)

    async def _supervise(self) -> None:
        """Start a front again when one exits while the agent runs."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            for proc in list(self._procs):
                code = proc.poll()
                if code is None or self._stopping:
                    continue
                self._procs.remove(proc)
                self._relay.allowed.discard(proc.pid)
                self._relay.ready.pop(proc.pid, None)
                log.error(
                    "gRPC front process %d exited with status %s; starting another in %g s",
                    proc.pid,
                    code,
                    RESTART_DELAY_S,
                )
                await asyncio.sleep(RESTART_DELAY_S)
                if self._stopping:
                    return
                try:
                    await self._wait_ready([self._spawn()])
                except errors.StreamhouseError as exc:
                    log.error("gRPC front process failed to start: %s; trying again", exc)

    async def _stop_fronts(self, grace_s: float) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 5
        while any(p.poll() is None for p in self._procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in self._procs:
            if proc.poll() is None:
                log.warning("gRPC front process %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._relay.close()
        self._reservation.close()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Graceful shutdown: refuse new produce, let the fronts finish their calls in flight within
        ``grace_s`` and exit, then stop the broker. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.servicer.draining = True
        await self._stop_fronts(grace_s)
        if self._stop_broker is not None:
            await self._stop_broker()


__all__ = ["Relay", "RelayedServer", "reserve_port"]
