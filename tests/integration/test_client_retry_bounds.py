"""How long the client library retries or waits before it raises: a consumer retries a partition's retriable
errors for ``retry_timeout_s``; a producer's full buffer blocks ``send`` for ``max_block_s`` (real gRPC over
loopback, to a port where no agent listens)."""

from __future__ import annotations

import time

import pytest

from streamhouse import errors
from streamhouse.client import Client, Consumer
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_an_unreachable_agent_is_retried_for_retry_timeout_s_then_raised() -> None:
    with Client(f"127.0.0.1:{free_port()}", timeout_s=5) as client:
        consumer = Consumer(client, "orders", partitions=[0, 1], retry_timeout_s=1.0)
        for p in (0, 1):
            consumer.seek(p, 0)
        assert consumer.poll(timeout_ms=100) == []  # retried by the next polls, not raised
        empty_polls = 1
        deadline = time.monotonic() + 60
        with pytest.raises(errors.Unavailable) as raised:
            while time.monotonic() < deadline:
                assert consumer.poll(timeout_ms=100) == []
                empty_polls += 1
        assert "retry_timeout_s" in str(raised.value) and "orders/" in str(raised.value)
        assert isinstance(raised.value.__cause__, Exception)  # the grpc.RpcError
        # Each long poll whose fetches all failed waited a little instead of spinning: a second cannot
        # hold thousands of them.
        assert 2 <= empty_polls < 200, empty_polls
        # The clock starts again: the next poll is retried, not raised.
        assert consumer.poll(timeout_ms=100) == []


def test_retry_timeout_s_must_not_be_negative() -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(errors.InvalidArgument, match="retry_timeout_s"):
        Consumer(client, "orders", partitions=[0], retry_timeout_s=-1)


def test_a_full_producer_buffer_blocks_send_for_max_block_s_then_raises() -> None:
    """The backpressure wait is bounded too (Kafka's max.block.ms): the agent is unreachable, so the one
    buffered record is retried and never acknowledged, and the next send finds no room."""
    from streamhouse.producer import Producer

    with Client(f"127.0.0.1:{free_port()}", timeout_s=5) as client:
        producer = Producer(client, max_buffered_records=1, max_block_s=0.5, delivery_timeout_s=30)
        try:
            first = producer.send("orders", b"first", partition=0)
            with pytest.raises(errors.Unavailable, match=r"max_buffered_records=1 .*max_block_s=0\.5s"):
                producer.send("orders", b"second", partition=0)
            with pytest.raises(errors.Unavailable, match="max_block_s"):
                producer.send_batch("orders", 0, [b"third"])
            assert not first.done()  # still being retried: the refused sends took nothing from it
        finally:
            producer.close(timeout_s=0.1)
