"""Many agents on one catalog and one object store, in one process (the Broker API, no gRPC): identity,
lease deadlines, balance and handoff, redirects, the failover promise of acks=wal. Real PostgreSQL and a
real S3 server (and the embedded set-up where one agent is enough). The same scenarios with agents as
separate processes killed for real are in test_many_agents.py. Timing is never asserted: waits poll for
a state with a generous bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent import Agent
from streamhouse.config import Config
from streamhouse.objstore import open_object_store
from tests.integration.helpers import DelegatingStore

pytestmark = pytest.mark.integration

TOPIC = "orders"
TTL_MS = 1500  # renewal every 250 ms, writes stop 375 ms before a lease could lapse


class Cluster:
    def __init__(self, tmp: Path, settings: dict[str, Any]) -> None:
        self.tmp = tmp
        self.settings = settings
        self.agents: list[Agent] = []
        self.eng = engines.load()

    def config(self, agent_id: str, data_dir: str | None = None, **overrides: Any) -> Config:
        return Config.from_mapping(
            {
                **self.settings,
                "agent_id": agent_id,
                "advertised_address": f"{agent_id}.test:50051",
                "data_dir": data_dir or str(self.tmp / agent_id),
                **overrides,
            }
        )

    async def start(self, agent_id: str, data_dir: str | None = None, **overrides: Any) -> Agent:
        store_kw = self._store_kw(overrides)  # pops _wrap_store
        agent = await Agent.start(self.config(agent_id, data_dir, **overrides), **store_kw)
        self.agents.append(agent)
        return agent

    def _store_kw(self, overrides: dict[str, Any]) -> dict[str, Any]:
        wrap = overrides.pop("_wrap_store", None)
        if wrap is None:
            return {}
        if "object_store" in self.settings:
            inner = open_object_store(
                self.settings["object_store"], s3_endpoint_url=self.settings["s3_endpoint_url"]
            )
        else:
            inner = open_object_store(str(self.tmp / "objects"))
        return {"object_store": wrap(inner)}

    def batch(self, start: int, count: int) -> bytes:
        return bytes(
            self.eng.encode_batch(
                [(None, f"v{i}".encode(), 1_700_000_000_000 + i, []) for i in range(start, start + count)],
                1_700_000_000_000,
            )
        )

    async def read(self, agent: Agent, partition: int) -> list[bytes]:
        out: list[bytes] = []
        offset = 0
        while True:
            res = await agent.fetch(TOPIC, partition, offset, 1 << 20, 0)
            if not res.record_set:
                return out
            records = self.eng.decode_records(res.record_set, offset)
            out.extend(bytes(r[3]) for r in records)
            offset = records[-1][0] + 1


@pytest.fixture
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    postgres_url = request.getfixturevalue("postgres_url")
    s3 = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    c = Cluster(
        tmp_path,
        {
            "metadata_url": postgres_url,
            "object_store": f"s3://{bucket}/sh",
            "s3_endpoint_url": s3.endpoint_url,
            "metrics_listen": "",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "segment_max_age_ms": 50,
            "upload_retry_initial_ms": 20,
            "upload_retry_max_ms": 200,
            "lease_ttl_ms": TTL_MS,
            "shutdown_timeout_ms": 10_000,
            "failover_grace_ms": 2_000,
        },
    )
    yield c
    for agent in c.agents:
        await agent.abort()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(
        tmp_path,
        {
            "metadata_url": str(tmp_path / "catalog.sqlite3"),
            "object_store": str(tmp_path / "objects"),
            "metrics_listen": "",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "segment_max_age_ms": 50,
            "lease_ttl_ms": TTL_MS,
        },
    )
    c.settings.pop("s3_endpoint_url", None)
    yield c
    for agent in c.agents:
        await agent.abort()


async def until(what: str, check: Callable[[], Awaitable[bool]], limit_s: float = 60) -> None:
    for _ in range(int(limit_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {limit_s}s: {what}")


def owned(agent: Agent) -> set[int]:
    return {p for t, p in agent.owned_partitions() if t == TOPIC}


# --- one identity, one process ---------------------------------------------------------------------------


async def test_a_second_agent_on_the_same_data_directory_refuses_to_start(embedded: Cluster) -> None:
    first = await embedded.start("a")
    await first.create_topic(TOPIC, 1)
    with pytest.raises(errors.AgentIdentityInUse, match=r"data directory .* in use by another agent process"):
        await embedded.start("b", data_dir=str(embedded.tmp / "a"))
    # The first one is untouched: it still writes, at its epoch.
    result = await first.produce(TOPIC, 0, embedded.batch(0, 3), "wal")
    assert result.base_offset == 0
    assert first.writer(TOPIC, 0) is not None and first.writer(TOPIC, 0).epoch == 1  # type: ignore[union-attr]


async def test_an_agent_id_live_elsewhere_refuses_to_start_and_changes_nothing(cluster: Cluster) -> None:
    first = await cluster.start("same")
    await first.create_topic(TOPIC, 2)
    epochs = {p: first.writer(TOPIC, p).epoch for p in owned(first)}  # type: ignore[union-attr]
    with pytest.raises(errors.AgentIdentityInUse, match=r"in use by a live agent at same\.test:50051"):
        await cluster.start("same", data_dir=str(cluster.tmp / "elsewhere"))
    assert {p: first.writer(TOPIC, p).epoch for p in owned(first)} == epochs  # type: ignore[union-attr]
    await asyncio.sleep(3 * TTL_MS / 6000)  # a few renewals: the first agent's identity still holds
    assert not first.fatal.is_set()
    assert (await first.produce(TOPIC, 0, cluster.batch(0, 2), "durable")).base_offset == 0


async def test_a_restart_after_a_crash_takes_over_at_once_at_a_new_epoch_and_recovers_the_wal(
    cluster: Cluster,
) -> None:
    first = await cluster.start("a", _wrap_store=lambda s: _NoPuts(s))  # nothing commits: all in the WAL
    await first.create_topic(TOPIC, 1)
    await first.produce(TOPIC, 0, cluster.batch(0, 5), "wal")
    await first.abort()  # a crash: leases and the agent row stay, live
    second = await cluster.start("a")  # same host and data directory: no wait for the ttl
    assert owned(second) == {0}
    writer = second.writer(TOPIC, 0)
    assert writer is not None and writer.epoch == 2
    await until("recovered records committed", lambda: _committed(second, 0, 5))
    assert await cluster.read(second, 0) == [f"v{i}".encode() for i in range(5)]


async def test_a_frozen_process_cannot_write_once_its_identity_is_taken_over(cluster: Cluster) -> None:
    old = await cluster.start("a")
    await old.create_topic(TOPIC, 1)
    await old.produce(TOPIC, 0, cluster.batch(0, 2), "durable")
    lease_task = old._lease_task
    assert lease_task is not None
    lease_task.cancel()  # frozen: no renewal, no heartbeat (what SIGSTOP does to the lease loop)
    with contextlib.suppress(asyncio.CancelledError):
        await lease_task
    new = await cluster.start("a", data_dir=str(cluster.tmp / "a2"))  # waits out the ttl, then takes over
    assert owned(new) == {0} and new.writer(TOPIC, 0).epoch == 2  # type: ignore[union-attr]
    with pytest.raises(errors.NotLeader, match="cannot prove its lease"):
        await old.produce(TOPIC, 0, cluster.batch(100, 1), "wal")
    # Thawed: its first heartbeat finds the identity taken, and it stops writing everything.
    old._lease_task = asyncio.create_task(old._lease_loop())
    await asyncio.wait_for(old.fatal.wait(), 30)
    assert "taken over" in old.fatal_reason and old.owned_partitions() == []
    assert (await new.produce(TOPIC, 0, cluster.batch(2, 2), "durable")).base_offset == 2
    assert await cluster.read(new, 0) == [f"v{i}".encode() for i in range(4)]


# --- lease deadline ---------------------------------------------------------------------------------------


async def test_an_owner_that_cannot_renew_stops_accepting_writes_and_resumes_after(cluster: Cluster) -> None:
    agent = await cluster.start("a")
    await agent.create_topic(TOPIC, 1)
    real = agent.catalog.renew_leases
    hang = asyncio.Event()

    async def stalled(*args: Any, **kw: Any) -> Any:
        await hang.wait()  # a PostgreSQL that accepts the query and never answers
        return await real(*args, **kw)

    agent.catalog.renew_leases = stalled  # type: ignore[method-assign]

    async def refused() -> bool:
        try:
            await agent.produce(TOPIC, 0, cluster.batch(0, 1), "buffered")
        except errors.NotLeader as exc:
            assert "cannot prove its lease" in str(exc) or "lease not renewed" in str(exc)
            return True
        return False

    await until("produce refused", refused)
    agent.catalog.renew_leases = real  # type: ignore[method-assign]
    hang.set()

    async def written_again() -> bool:
        if not owned(agent):
            return False
        with contextlib.suppress(errors.NotLeader):
            await agent.produce(TOPIC, 0, cluster.batch(0, 1), "durable")
            return True
        return False

    # Either the lease was renewed in time (same epoch) or it lapsed and was taken again (new epoch).
    await until("writes accepted again", written_again)


# --- balance, handoff, redirects --------------------------------------------------------------------------


async def test_agents_split_partitions_evenly_by_handoff_and_lose_nothing(cluster: Cluster) -> None:
    a = await cluster.start("a")
    await a.create_topic(TOPIC, 6)
    assert owned(a) == set(range(6))
    for p in range(6):
        await a.produce(TOPIC, p, cluster.batch(0, 3), "wal")
    b = await cluster.start("b")

    async def split() -> bool:
        return len(owned(a)) == 3 and len(owned(b)) == 3 and not (owned(a) & owned(b))

    await until("3 and 3", split)
    assert a.metrics.ownership_changes.labels("handed_over")._value.get() == 3
    for p in owned(b):
        assert b.writer(TOPIC, p).epoch == 2  # type: ignore[union-attr]
        result = await b.produce(TOPIC, p, cluster.batch(3, 2), "durable")
        assert result.base_offset == 3  # offsets continue: the handoff committed everything first
    for p in range(6):
        owner = a if p in owned(a) else b
        expected = [f"v{i}".encode() for i in range(5 if owner is b else 3)]
        await until(f"partition {p} committed", lambda o=owner, p=p: _committed_all(o, p))
        assert await cluster.read(owner, p) == expected


async def test_any_agent_redirects_produce_and_fetch_to_the_owner(cluster: Cluster) -> None:
    a = await cluster.start("a", max_partitions_per_agent=1)
    await a.create_topic(TOPIC, 1)
    b = await cluster.start("b")
    assert owned(a) == {0} and owned(b) == set()
    with pytest.raises(errors.NotLeader, match=r"owner: agent a at a\.test:50051") as produced:
        await b.produce(TOPIC, 0, cluster.batch(0, 1), "wal")
    assert produced.value.owner_address == "a.test:50051"
    with pytest.raises(errors.NotLeader) as fetched:
        await b.fetch(TOPIC, 0, 0, 1 << 20, 0)
    assert fetched.value.owner_address == "a.test:50051"


@pytest.fixture(params=["cluster", "embedded"])
def either(request: pytest.FixtureRequest) -> Cluster:
    """PostgreSQL and S3, then SQLite and a local directory."""
    cluster: Cluster = request.getfixturevalue(request.param)
    return cluster


async def test_a_commit_above_the_catalogs_high_watermark_is_sent_to_the_owner(either: Cluster) -> None:
    """Records acknowledged at ``wal`` are read from their owner before the catalog counts them: a commit
    of their offsets to another agent is redirected to the owner (which knows them) rather than refused;
    above the owner's high watermark it is refused."""
    cluster = either
    a = await cluster.start("a", max_partitions_per_agent=1, segment_max_age_ms=3_600_000)
    await a.create_topic(TOPIC, 1)
    b = await cluster.start("b")
    assert owned(a) == {0} and owned(b) == set()
    await a.produce(TOPIC, 0, cluster.batch(0, 3), "wal")  # on a, not in the catalog yet
    await b.commit_offset("g", TOPIC, 0, 0)
    with pytest.raises(errors.NotLeader, match=r"commit offset 3 there") as redirected:
        await b.commit_offset("g", TOPIC, 0, 3)
    assert redirected.value.owner_address == "a.test:50051"
    await a.commit_offset("g", TOPIC, 0, 3)
    with pytest.raises(errors.OffsetOutOfRange, match=r"high watermark 3 "):
        await a.commit_offset("g", TOPIC, 0, 4)
    assert await b.fetch_offset("g", TOPIC, 0) == 3


async def test_sigterm_hands_every_partition_over_before_its_lease_expires(cluster: Cluster) -> None:
    a = await cluster.start("a")
    await a.create_topic(TOPIC, 4)
    b = await cluster.start("b")
    await until("balanced", lambda: _true(len(owned(a)) == 2 and len(owned(b)) == 2))
    for p in owned(a):
        await a.produce(TOPIC, p, cluster.batch(0, 4), "wal")
    moving = owned(a)
    await a.stop()
    # Released, not expired: b finds them free at its next tick.
    leases = {(le.topic, le.partition): le for le in await b.catalog.list_leases()}
    now = await b.catalog.now_ms()
    assert all(leases[(TOPIC, p)].expires_at_ms <= now for p in moving if leases[(TOPIC, p)].agent_id == "a")
    await until("b owns all", lambda: _true(owned(b) == set(range(4))))
    for p in moving:
        assert await cluster.read(b, p) == [f"v{i}".encode() for i in range(4)]


async def test_one_agent_at_a_time_collects_garbage(cluster: Cluster) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    assert await b._collect_garbage() is None  # "a" < "b": a collects
    assert await a._collect_garbage() is not None


# --- what a wal acknowledgement promises across a failover -----------------------------------------------


async def test_a_new_owner_waits_for_a_lost_owner_to_commit_its_wal_acks(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = await cluster.start("a", _wrap_store=lambda s: _NoPuts(s), failover_grace_ms=60_000)
    await a.create_topic(TOPIC, 1)
    await a.produce(TOPIC, 0, cluster.batch(0, 4), "wal")
    await until("acked offset reported", lambda: _acked_in_catalog(a, 4))
    await a.abort()
    b = await cluster.start("b", failover_grace_ms=60_000)
    await asyncio.sleep(4 * TTL_MS / 1000)  # a's lease has long lapsed: b waits for the grace period
    assert owned(b) == set()
    assert "waiting up to" in caplog.text and "acknowledged (acks=wal) but did not commit" in caplog.text
    a2 = await cluster.start("a")  # a comes back within the grace period: it commits what it acknowledged
    await until("committed by its owner", lambda: _committed(a2, 0, 4))
    assert await cluster.read(a2, 0) == [f"v{i}".encode() for i in range(4)]
    assert b.metrics.wal_acked_records_lost._value.get() == 0


async def test_past_the_grace_period_the_loss_is_reported_and_superseded_frames_are_removed(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a = await cluster.start("a", _wrap_store=lambda s: _NoPuts(s))
    await a.create_topic(TOPIC, 1)
    await a.produce(TOPIC, 0, cluster.batch(0, 10), "wal")  # one WAL frame, offsets 0..9
    await until("acked offset reported", lambda: _acked_in_catalog(a, 10))
    await a.abort()
    b = await cluster.start("b")  # grace 2 s in this cluster
    await until("b takes over", lambda: _true(owned(b) == {0}))
    assert b.metrics.wal_acked_records_lost._value.get() == 10
    assert "offsets 0..9 were acknowledged (acks=wal) by agent a and never committed" in caplog.text
    await b.produce(TOPIC, 0, cluster.batch(100, 6), "durable")
    await b.stop()  # hands it over: a, back, takes it and finds its WAL frame overtaken (0..9 vs 6)
    a2 = await cluster.start("a")
    await until("a owns it again", lambda: _true(owned(a2) == {0}))
    assert a2.metrics.wal_acked_records_lost._value.get() == 10
    assert "holds offsets 0..9 written by this agent at epoch 1" in caplog.text
    assert "are superseded" in caplog.text
    assert await cluster.read(a2, 0) == [f"v{i}".encode() for i in range(100, 106)]
    assert (await a2.produce(TOPIC, 0, cluster.batch(200, 1), "durable")).base_offset == 6


# --- more partitions than the agents may own --------------------------------------------------------------


async def test_more_partitions_than_agents_may_own_is_said_at_creation_and_in_every_error(
    embedded: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await embedded.start("a", max_partitions_per_agent=2)
    await agent.create_topic(TOPIC, 5)
    assert len(owned(agent)) == 2
    note = await agent.ownership_warning()
    assert note is not None and "max_partitions_per_agent=2" in note and "2 more agent(s)" in note
    assert "Topic orders created with 5 partitions, but" in caplog.text
    unowned = min(set(range(5)) - owned(agent))
    with pytest.raises(errors.NotLeader, match="max_partitions_per_agent"):
        await agent.produce(TOPIC, unowned, embedded.batch(0, 1), "wal")


# --- helpers ----------------------------------------------------------------------------------------------


class _NoPuts(DelegatingStore):
    """Segment uploads fail (the start-up probe goes through): everything stays in the WAL."""

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        if key.startswith("_streamhouse/probe/"):
            await self.inner.put(key, data, if_absent=if_absent)
            return
        raise errors.ObjectStoreError("uploads are down in this test")


async def _true(value: bool) -> bool:
    return value


async def _committed(agent: Agent, partition: int, offset: int) -> bool:
    return (await agent.catalog.get_partition(TOPIC, partition)).high_watermark >= offset


async def _committed_all(agent: Agent, partition: int) -> bool:
    writer = agent.writer(TOPIC, partition)
    state = await agent.catalog.get_partition(TOPIC, partition)
    return writer is None or state.high_watermark == writer.next_offset


async def _acked_in_catalog(agent: Agent, offset: int) -> bool:
    lease, _now = await agent.catalog.get_lease(TOPIC, 0)
    return lease is not None and lease.acked_offset >= offset
