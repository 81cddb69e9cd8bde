"""The relay between front processes and the agent, in one process over a real Unix socket: replies,
aborts with trailers, and a call whose client went away is cancelled in the agent too."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import grpc
import pytest

from streamhouse.front import wire
from streamhouse.front.process import RelayClient
from streamhouse.front.relay import Relay


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, metadata: Any) -> None:
        super().__init__(details)
        self.code, self.details, self.metadata = code, details, metadata


class Context:
    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise Aborted(code, details, tuple(trailing_metadata))


async def connected(
    handlers: dict[str, Any],
) -> tuple[Relay, RelayClient, asyncio.StreamWriter, asyncio.Task[None]]:
    """A relay over ``handlers`` that takes this process's connections, and a client connected to it
    (with its reply reader running)."""
    relay = Relay(handlers, 1 << 20)
    await relay.start()
    relay.allowed.add(os.getpid())
    reader, writer = await asyncio.open_unix_connection(relay.name)
    client = RelayClient(reader, writer, 1 << 20)
    return relay, client, writer, asyncio.create_task(client.read_replies())


async def test_calls_aborts_and_cancellation_cross_the_relay() -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def echo(raw: bytes, _context: Any) -> bytes:
        return raw[::-1]

    async def refuse(_raw: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", (("retry-after-ms", "40"),))
        raise AssertionError("abort returned")

    async def wait_forever(_raw: bytes, _context: Any) -> bytes:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return b""

    behaviours = {"ListTopics": echo, "Produce": refuse, "Consume": wait_forever}
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(behaviours.get(name, echo)) for name in wire.METHODS
    }
    relay, client, writer, replies = await connected(handlers)
    try:
        assert await client.call(wire.METHODS.index("ListTopics"), b"abc", Context()) == b"cba"
        with pytest.raises(Aborted) as refused:
            await client.call(wire.METHODS.index("Produce"), b"x", Context())
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details == "full"
        assert refused.value.metadata == (("retry-after-ms", "40"),)

        waiting = asyncio.create_task(client.call(wire.METHODS.index("Consume"), b"", Context()))
        await asyncio.wait_for(started.wait(), 10)
        waiting.cancel()  # what grpc does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(200):
            if outcome:
                break
            await asyncio.sleep(0.01)
        assert outcome == ["cancelled"]
        # The connection still serves.
        assert await client.call(wire.METHODS.index("ListTopics"), b"xy", Context()) == b"yx"
    finally:
        writer.close()
        replies.cancel()
        relay.close()


async def test_a_relay_that_goes_away_fails_the_calls_in_flight_as_unavailable() -> None:
    async def never(_raw: bytes, _context: Any) -> bytes:
        await asyncio.sleep(3600)
        return b""

    handlers = {name: grpc.unary_unary_rpc_method_handler(never) for name in wire.METHODS}
    relay, client, writer, replies = await connected(handlers)
    pending = asyncio.create_task(client.call(0, b"", Context()))
    await asyncio.sleep(0.1)
    relay.close()  # the agent is gone
    with pytest.raises(Aborted) as gone:
        await asyncio.wait_for(pending, 10)
    assert gone.value.code == grpc.StatusCode.UNAVAILABLE
    await asyncio.wait_for(client.closed.wait(), 10)
    await replies
    writer.close()
