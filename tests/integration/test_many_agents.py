"""Many agents on one PostgreSQL and one bucket: separate agent processes, a real PostgreSQL, a real
S3-compatible server. Each test tries to break one promise of the coordination (docs/operations.md, "Many
agents"): balanced ownership, failover after kill -9, handover on SIGTERM, a joining agent, a frozen owner,
a PostgreSQL restart, more partitions than the agents may own, one identity per process, and an owner cut
off from PostgreSQL by the network (network namespaces, tests/fixtures/netns.py).

Short leases keep them fast (ttl 3 s, renewal every 500 ms). Durations are printed, never asserted; what is
asserted is what must hold however slow the machine: who owns what, and what reads back.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from streamhouse import errors
from streamhouse.client import Client
from tests.fixtures.netns import CIDR, SERVICE_A, SERVICE_B, netlab_or_skip
from tests.fixtures.postgres import private_server_or_skip
from tests.fixtures.s3 import S3TestServer
from tests.integration.agentproc import read_partition
from tests.integration.cluster import (
    CatalogReader,
    Cluster,
    LeaseWatch,
    Load,
    check_segment_rows,
    in_background,
    raw_produce,
    verify,
    wait_until,
)
from tests.integration.helpers import free_port
from tests.integration.test_cli import env

pytestmark = pytest.mark.integration

TTL_MS = 3000
RENEW_MS = 500
LEASES = {"lease_ttl_ms": TTL_MS, "lease_renew_interval_ms": RENEW_MS, "segment_max_age_ms": 100}
TOPIC = "orders"


def cli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streamhouse", *args],
        input=input,
        capture_output=True,
        env=env(),
        timeout=60,
        check=False,
    )


@pytest.fixture
def storage(postgres_url: str, s3_server: object, s3_bucket: str) -> dict[str, str]:
    return {
        "metadata_url": postgres_url,
        "object_store": f"s3://{s3_bucket}/many",
        "s3_endpoint_url": s3_server.endpoint_url,  # type: ignore[attr-defined]
    }


@pytest.fixture
def cluster(tmp_path: Path, storage: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(tmp_path, **storage, **LEASES)  # type: ignore[arg-type]
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def reader(storage: dict[str, str]) -> Iterator[CatalogReader]:
    r = CatalogReader(storage["metadata_url"])
    try:
        yield r
    finally:
        r.close()


def balanced(cluster: Cluster, reader: CatalogReader, agents: list[str], partitions: int) -> None:
    """Wait until every partition has a live owner and the agents own ceil or floor of their share each."""
    low, high = partitions // len(agents), math.ceil(partitions / len(agents))

    def ok() -> bool:
        leases = reader.live_leases(TOPIC)
        counts = cluster.owner_counts(reader, TOPIC)
        return (
            len(leases) == partitions
            and set(counts) == set(agents)
            and all(low <= n <= high for n in counts.values())
        )

    took = wait_until(
        f"{partitions} partitions balanced over {agents}",
        ok,
        60,
        cluster,
        state=lambda: f"{len(reader.live_leases(TOPIC))} owned, {cluster.owner_counts(reader, TOPIC)}",
    )
    print(f"balanced over {agents} after {took:.1f}s: {cluster.owner_counts(reader, TOPIC)}")


def moved_away(
    cluster: Cluster,
    reader: CatalogReader,
    victim: str,
    partitions: list[int],
    started: float,
    what: str,
    watch: LeaseWatch | None = None,
) -> float:
    took = wait_until(
        f"partitions {partitions} of {victim} owned by another agent",
        lambda: all(
            (le := reader.live_leases(TOPIC).get(p)) is not None and le.agent_id != victim for p in partitions
        ),
        60,
        cluster,
        state=lambda: {p: reader.live_leases(TOPIC).get(p) for p in partitions},
    )
    if watch is not None:
        # When the lease watch first saw each partition under a new owner, not when this poll noticed.
        wait_until(
            "the lease watch to sample the new owners",
            lambda: all(watch.moved_at(TOPIC, p, victim, started) is not None for p in partitions),
            10,
        )
        elapsed = max(watch.moved_at(TOPIC, p, victim, started) or 0.0 for p in partitions) - started
    else:
        elapsed = time.monotonic() - started
    print(f"{what}: {len(partitions)} partitions of {victim} owned again within {elapsed * 1000:.0f}ms")
    return took


def three_agents_and_a_topic(cluster: Cluster, reader: CatalogReader, partitions: int = 12) -> Client:
    cluster.start("a0", "a1", "a2")
    client = Client(cluster.members["a0"].server)
    client.create_topic(TOPIC, partitions)
    balanced(cluster, reader, ["a0", "a1", "a2"], partitions)
    return client


def owned_by(reader: CatalogReader, agent_id: str) -> list[int]:
    return sorted(p for p, le in reader.live_leases(TOPIC).items() if le.agent_id == agent_id)


@pytest.mark.timeout(240)
def test_three_agents_and_twelve_partitions_give_four_each_and_one_owner_each(
    cluster: Cluster, reader: CatalogReader
) -> None:
    client = three_agents_and_a_topic(cluster, reader)
    assert cluster.owner_counts(reader, TOPIC) == {"a0": 4, "a1": 4, "a2": 4}
    # The CLI, against an agent that owns only some of them, shows the same assignment.
    r = cli("partitions", TOPIC, "--json", "--server", cluster.members["a2"].server)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["partitions"]
    assert [p["partition"] for p in rows] == list(range(12))
    leases = reader.live_leases(TOPIC)
    for row in rows:
        owner = row["owner_agent_id"]
        assert owner == leases[row["partition"]].agent_id
        assert row["owner_address"] == cluster.members[owner].server
        assert row["epoch"] == leases[row["partition"]].epoch
    r = cli("agents", "--json", "--server", cluster.members["a1"].server)
    agents = {a["agent_id"]: a for a in json.loads(r.stdout)["agents"]}
    assert {a: (v["live"], v["partitions"]) for a, v in agents.items()} == {
        "a0": (True, 4),
        "a1": (True, 4),
        "a2": (True, 4),
    }
    # Any agent routes a produce to the owner.
    with Client(cluster.members["a2"].server) as other:
        for p in range(12):
            assert other.produce(TOPIC, [b"x"], partition=p).base_offset == 0
    client.close()


@pytest.mark.timeout(300)
def test_sigkill_of_an_owner_moves_its_partitions_and_loses_no_acknowledged_record(
    cluster: Cluster, reader: CatalogReader
) -> None:
    client = three_agents_and_a_topic(cluster, reader)
    watch = LeaseWatch(reader)
    load = Load(cluster.members["a0"].server, TOPIC, list(range(12))).start()
    try:
        load.wait_progress(range(12), 5, cluster=cluster)
        victims = owned_by(reader, "a2")
        before = {p: reader.live_leases(TOPIC)[p] for p in victims}
        killed = time.monotonic()
        cluster.members["a2"].proc.kill()
        moved_away(cluster, reader, "a2", victims, killed, "SIGKILL", watch)
        after = reader.live_leases(TOPIC)
        for p in victims:
            # On the catalog's clock: the new owner took the lease only once the old one had expired.
            first = watch.first_seen[(TOPIC, p, after[p].epoch)]
            taken_at = first.expires_at_ms - TTL_MS
            assert taken_at >= before[p].expires_at_ms, (p, before[p], first)
            assert after[p].epoch > before[p].epoch
            print(
                f"  {TOPIC}-{p}: taken {taken_at - before[p].expires_at_ms}ms after the old lease expired "
                "(catalog clock)"
            )
        load.wait_progress(victims, 5, cluster=cluster)
    finally:
        load.stop()
        watch.stop()
    counts = verify(client, load)
    print(f"SIGKILL: {counts}, failures {dict(load.failures)}")
    assert not watch.split_brains(), watch.split_brains()
    check_segment_rows(reader, TOPIC, range(12), watch)
    client.close()


@pytest.mark.timeout(300)
def test_sigterm_hands_partitions_over_and_a_retrying_producer_sees_no_error(
    cluster: Cluster, reader: CatalogReader
) -> None:
    from streamhouse.producer import Producer

    client = three_agents_and_a_topic(cluster, reader)
    watch = LeaseWatch(reader)
    victims = owned_by(reader, "a2")
    futures = []
    with Producer(Client(cluster.members["a0"].server), acks="durable", linger_ms=5) as producer:
        sent = 0

        def send(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                p = sent % 12
                futures.append(producer.send(TOPIC, f"{p}:p:{sent}".encode(), partition=p))
                sent += 1

        send(240)
        producer.flush(60)
        started = time.monotonic()
        cluster.members["a2"].proc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        while cluster.members["a2"].proc.alive() or time.monotonic() - started < 2:
            send(12)
            time.sleep(0.02)
        moved_away(cluster, reader, "a2", victims, started, "SIGTERM", watch)
        assert cluster.members["a2"].proc.proc.returncode == 0  # type: ignore[union-attr]
        send(240)
        assert producer.flush(120)
    errors_seen = [f.exception() for f in futures if f.exception() is not None]
    assert not errors_seen, errors_seen[:3]
    watch.stop()
    # Every record once, at the offset its future named.
    acked: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(12)}
    for i, f in enumerate(futures):
        meta = f.result()
        acked[meta.partition].append((meta.offset, f"{meta.partition}:p:{i}".encode()))
    load = Load("", TOPIC, list(range(12)))
    load.acked.update(acked)
    counts = verify(client, load, strict=True)
    print(f"SIGTERM: {counts}")
    assert counts["read"] == len(futures)
    assert not watch.split_brains(), watch.split_brains()
    check_segment_rows(reader, TOPIC, range(12), watch)
    client.close()


@pytest.mark.timeout(300)
def test_a_fourth_agent_gets_its_share_and_nothing_is_lost_or_duplicated(
    cluster: Cluster, reader: CatalogReader
) -> None:
    client = three_agents_and_a_topic(cluster, reader)
    watch = LeaseWatch(reader)
    load = Load(cluster.members["a0"].server, TOPIC, list(range(12))).start()
    try:
        load.wait_progress(range(12), 5, cluster=cluster)
        started = time.monotonic()
        cluster.start("a3")
        wait_until(
            "a3 owning 3 partitions and every agent 3",
            lambda: (
                cluster.owner_counts(reader, TOPIC) == {"a0": 3, "a1": 3, "a2": 3, "a3": 3}
                and len(reader.live_leases(TOPIC)) == 12
            ),
            60,
            cluster,
            state=lambda: cluster.owner_counts(reader, TOPIC),
        )
        print(f"join: balanced 3 each {time.monotonic() - started:.1f}s after a3 started")
        load.wait_progress(owned_by(reader, "a3"), 5, cluster=cluster)
    finally:
        load.stop()
        watch.stop()
    counts = verify(client, load, strict=True)
    print(f"join: {counts}, failures {dict(load.failures)}")
    assert not watch.split_brains(), watch.split_brains()
    check_segment_rows(reader, TOPIC, range(12), watch)
    client.close()


@pytest.mark.timeout(300)
def test_an_owner_frozen_past_its_lease_is_fenced_when_it_resumes(
    cluster: Cluster, reader: CatalogReader
) -> None:
    """SIGSTOP an owner past its lease and the failover grace, then SIGCONT it: the writes that reached it
    meanwhile are refused, what it acknowledged at ``wal`` and had not committed never lands at its old
    epoch after the new owner's records (its commits fail the compare-and-set), and no epoch ever had two
    holders. The frozen agent flushes once a second, so it holds uncommitted records when it stops."""
    cluster.knobs["failover_grace_ms"] = 1000
    cluster.start("a0", "a1")
    frozen = cluster.spawn("a2", segment_max_age_ms=1000)
    cluster.ready(frozen)
    client = Client(cluster.members["a0"].server)
    client.create_topic(TOPIC, 12)
    balanced(cluster, reader, ["a0", "a1", "a2"], 12)
    watch = LeaseWatch(reader)
    victims = owned_by(reader, "a2")
    epochs_before = {p: reader.live_leases(TOPIC)[p].epoch for p in victims}
    load = Load(cluster.members["a0"].server, TOPIC, list(range(12))).start()
    pending = []
    try:
        load.wait_progress(range(12), 5, cluster=cluster)
        wal_acked = {
            p: raw_produce(frozen.server, TOPIC, p, f"{p}:wal-acked".encode(), "wal", 10) for p in victims
        }
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        # Requests that reach the frozen owner now: it reads them only after SIGCONT.
        for p in victims:
            for acks in ("wal", "durable", "buffered"):
                value = f"{p}:frozen:{acks}".encode()
                fut = in_background(
                    lambda p=p, v=value, a=acks: raw_produce(frozen.server, TOPIC, p, v, a, 60)
                )
                pending.append((p, acks, fut))
        moved_away(cluster, reader, "a2", victims, stopped, "SIGSTOP", watch)
        load.wait_progress(victims, 5, cluster=cluster)
        time.sleep(1.5)  # past the failover grace: the new owners have written past what a2 acknowledged
        os.kill(frozen.proc.pid, signal.SIGCONT)
        outcomes = {(p, acks): fut.result(90) for p, acks, fut in pending}
        print(f"writes pending at the frozen owner: {outcomes}")
        for key, outcome in outcomes.items():
            assert isinstance(outcome, grpc.StatusCode), (
                f"the fenced owner acknowledged {key} at offset {outcome}"
            )
        load.wait_progress(range(12), 5, cluster=cluster)
        time.sleep(2)  # the resumed agent's flush runs (and is refused)
        assert frozen.proc.alive(), frozen.proc.log_tail()
    finally:
        if frozen.proc.alive():
            os.kill(frozen.proc.pid, signal.SIGCONT)
        load.stop()
        watch.stop()
    counts = verify(client, load)
    print(f"SIGSTOP: {counts}, failures {dict(load.failures)}, wal acks before the freeze {wal_acked}")
    assert not watch.split_brains(), watch.split_brains()
    check_segment_rows(reader, TOPIC, range(12), watch)
    leases = reader.live_leases(TOPIC)
    for p in victims:
        assert leases[p].epoch > epochs_before[p], (p, leases[p], epochs_before[p])
    resumed_log = [
        line
        for line in frozen.proc.log_tail(20000).splitlines()
        if "StaleEpoch" in line or "lease" in line.lower()
    ]
    print("the resumed agent's log on its leases:\n" + "\n".join(resumed_log[-10:]))
    # A wal acknowledgement the frozen owner made just before the freeze reads back at its offset, or the
    # agent that took the partition over says at ERROR that it is lost (never silent).
    silent = []
    for p, offset in wal_acked.items():
        assert isinstance(offset, int), (p, offset)
        records = {r.offset: r.value for r in read_partition(client, TOPIC, p)}
        if records.get(offset) == f"{p}:wal-acked".encode():
            continue
        (successor,) = watch.agents_at(TOPIC, p, epochs_before[p] + 1)
        said = [
            line
            for line in cluster.members[successor].proc.log_tail(50_000).splitlines()
            if " ERROR " in line and f"{TOPIC}-{p}" in line
        ]
        print(f"  {TOPIC}-{p}: wal ack at {offset} not read back; {successor} said: {said}")
        if not said:
            silent.append((p, offset, successor))
    assert not silent, f"wal acks lost without an ERROR from the new owner: {silent}"
    client.close()


@pytest.mark.timeout(300)
def test_agents_ride_out_a_postgresql_restart_under_load(
    tmp_path: Path, s3_server: object, s3_bucket: str
) -> None:
    server = private_server_or_skip()
    try:
        cluster = Cluster(
            tmp_path,
            metadata_url=server.url,
            object_store=f"s3://{s3_bucket}/restart",
            s3_endpoint_url=s3_server.endpoint_url,  # type: ignore[attr-defined]
            **LEASES,  # type: ignore[arg-type]
        )
        reader = CatalogReader(server.url)
        try:
            cluster.start("a0", "a1")
            client = Client(cluster.members["a0"].server)
            client.create_topic(TOPIC, 6)
            balanced(cluster, reader, ["a0", "a1"], 6)
            load = Load(cluster.members["a0"].server, TOPIC, list(range(6))).start()
            try:
                load.wait_progress(range(6), 5, cluster=cluster)
                started = time.monotonic()
                server.restart()
                print(f"pg_ctl restart took {time.monotonic() - started:.1f}s")
                took = load.wait_progress(range(6), 10, timeout_s=120, cluster=cluster)
                print(f"every partition acknowledged 10 more records {took:.1f}s after the restart")
            finally:
                load.stop()
            assert all(m.proc.alive() for m in cluster.members.values()), cluster.logs()
            wait_until(
                "every partition owned again", lambda: len(reader.live_leases(TOPIC)) == 6, 60, cluster
            )
            counts = verify(client, load)
            print(f"PostgreSQL restart: {counts}, failures {dict(load.failures)}")
            client.close()
        finally:
            reader.close()
            cluster.close()
    finally:
        server.stop()


@pytest.mark.timeout(240)
def test_more_partitions_than_the_agents_may_own_is_said_at_creation_and_in_every_error(
    cluster: Cluster, reader: CatalogReader
) -> None:
    cluster.knobs["max_partitions_per_agent"] = 2
    cluster.start("a0", "a1")
    server = cluster.members["a0"].server
    r = cli("topic", "create", TOPIC, "--partitions", "6", "--server", server)
    said = (r.stdout + r.stderr).decode()
    print(f"topic create: rc {r.returncode}: {said}")
    assert "max_partitions_per_agent" in said
    wait_until(
        "4 partitions owned",
        lambda: len(reader.live_leases(TOPIC)) == 4,
        60,
        cluster,
        state=lambda: cluster.owner_counts(reader, TOPIC),
    )
    unowned = sorted(set(range(6)) - set(reader.live_leases(TOPIC)))
    assert len(unowned) == 2
    for p in unowned:
        r = cli("produce", TOPIC, "--partition", str(p), "--server", server, "--acks", "wal", input=b"x\n")
        message = r.stderr.decode()
        assert r.returncode == 1 and "max_partitions_per_agent" in message, message
        with (
            Client(cluster.members["a1"].server, retries=0) as client,
            pytest.raises(errors.StreamhouseError, match="max_partitions_per_agent"),
        ):
            client.produce(TOPIC, [b"x"], partition=p)


@pytest.mark.timeout(240)
def test_a_second_agent_with_the_same_data_directory_or_id_refuses_to_start(
    cluster: Cluster, reader: CatalogReader
) -> None:
    (first,) = cluster.start("a0")
    client = Client(first.server)
    client.create_topic(TOPIC, 4)
    load = Load(first.server, TOPIC, list(range(4)), acks="wal").start()
    try:
        load.wait_progress(range(4), 5, cluster=cluster)
        same_dir = cluster.spawn("b0", data_dir=first.data_dir)
        same_id = cluster.spawn("a0")
        refusals = []
        for member, says in ((same_dir, str(first.data_dir)), (same_id, first.server)):
            assert member.proc.proc is not None
            rc = member.proc.proc.wait(60)
            text = member.proc.log_tail().strip()
            print(f"second agent exited {rc}: {text.splitlines()[-1:]}")
            refusals.append((rc, says in text, text))
        # Exit 2, as for an address in use: a start-up refusal the operator fixes in the configuration.
        assert [(rc, named) for rc, named, _text in refusals] == [(2, True), (2, True)], refusals
        assert first.proc.alive()
        load.wait_progress(range(4), 5, cluster=cluster)
        # kill -9: the same id on another data directory starts once the dead one's heartbeat is stale.
        first.proc.kill()
        killed = time.monotonic()
        restarted = cluster.spawn("a0")
        cluster.ready(restarted)
        print(f"same id restarted after kill -9: serving {time.monotonic() - killed:.1f}s after the kill")
        client.close()
        client = Client(restarted.server)
        load.bootstrap = restarted.server
        wait_until(
            "a0 owning all 4 again",
            lambda: cluster.owner_counts(reader, TOPIC) == {"a0": 4},
            60,
            cluster,
            state=lambda: cluster.owner_counts(reader, TOPIC),
        )
    finally:
        load.stop()
    # acks=wal records acknowledged by the killed process stay in its WAL (another data directory): the
    # promise checked here is that no offset was ever acknowledged twice.
    for p in range(4):
        offsets = [o for o, _v in load.acked[p]]
        assert len(offsets) == len(set(offsets)), f"partition {p}: an offset acknowledged twice"
    client.close()


@pytest.mark.timeout(300)
def test_an_owner_cut_off_from_postgresql_is_fenced_while_clients_still_reach_it(
    tmp_path: Path,
    s3_server: S3TestServer,  # for its dummy credentials, which the agents inherit
) -> None:
    """Each agent in a network namespace of its own; PostgreSQL and the S3 server on the host. The link from
    one owner to PostgreSQL goes silent (its packets are dropped) while clients and S3 still reach it: it
    stops taking writes once it cannot prove its lease, its partitions move, and when the link comes back
    its writes and commits are refused. Nothing acknowledged is lost or stored twice; no epoch has two
    holders."""
    lab = netlab_or_skip(3)
    server = s3 = None
    try:
        server = private_server_or_skip(listen=f"127.0.0.1,{SERVICE_A}", trust_cidr=CIDR)
        port = server.port
        # The session's S3 server listens on loopback only, out of the namespaces' reach: one more here.
        s3_port = free_port()
        s3 = S3TestServer(
            f"http://{SERVICE_B}:{s3_port}", port=s3_port, log_path=str(tmp_path / "moto.log"), host=SERVICE_B
        )
        s3.start()
        s3.create_bucket("netns")
        url_in_lab = f"postgresql://postgres@{SERVICE_A}:{port}/postgres"
        cluster = Cluster(
            tmp_path,
            metadata_url=url_in_lab,
            object_store="s3://netns/many",
            s3_endpoint_url=s3.endpoint_url,
            failover_grace_ms=1000,
            **LEASES,  # type: ignore[arg-type]
        )
        reader = CatalogReader(server.url)
        try:
            members = [
                cluster.spawn(f"a{i - 1}", host=lab.address(i), wrapper=lab.exec_prefix(i)) for i in (1, 2, 3)
            ]
            cluster.ready(*members)
            client = Client(members[0].server)
            client.create_topic(TOPIC, 12)
            balanced(cluster, reader, ["a0", "a1", "a2"], 12)
            watch = LeaseWatch(reader)
            victims = owned_by(reader, "a2")
            epochs_before = {p: reader.live_leases(TOPIC)[p].epoch for p in victims}
            load = Load(members[0].server, TOPIC, list(range(12))).start()
            try:
                load.wait_progress(range(12), 5, cluster=cluster)
                lab.cut(3, SERVICE_A)
                cut = time.monotonic()
                moved_away(cluster, reader, "a2", victims, cut, "PostgreSQL cut off", watch)
                # Clients still reach the cut-off agent: it refuses, naming no stale self as the owner.
                refused = {
                    (p, acks): raw_produce(members[2].server, TOPIC, p, f"{p}:cut:{acks}".encode(), acks, 10)
                    for p in victims
                    for acks in ("wal", "durable")
                }
                print(f"writes to the cut-off owner after its partitions moved: {refused}")
                for key, outcome in refused.items():
                    assert isinstance(outcome, grpc.StatusCode), f"the cut-off owner acknowledged {key}"
                load.wait_progress(victims, 5, cluster=cluster)
                lab.heal(3, SERVICE_A)
                load.wait_progress(range(12), 5, cluster=cluster)
                time.sleep(2)  # the healed agent's lease loop and flush run again
                assert members[2].proc.alive(), members[2].proc.log_tail()
            finally:
                load.stop()
                watch.stop()
            counts = verify(client, load)
            print(f"network split: {counts}, failures {dict(load.failures)}")
            assert not watch.split_brains(), watch.split_brains()
            check_segment_rows(reader, TOPIC, range(12), watch)
            leases = reader.live_leases(TOPIC)
            for p in victims:
                assert leases[p].epoch > epochs_before[p], (p, leases[p], epochs_before[p])
            client.close()
        finally:
            reader.close()
            cluster.close()
    finally:
        if s3 is not None:
            s3.stop()
        if server is not None:
            server.stop()
        lab.close()
