"""The production catalog: PostgreSQL through an asyncpg connection pool.

Every multi-statement operation is one transaction at READ COMMITTED. Operations that read then write a
partition's state (the commit compare-and-set, lease acquire/renew/release) first lock that partition's row
(``UPDATE`` or ``SELECT ... FOR UPDATE``), so they are serialized per partition across all agents, and they
read the clock only after taking the lock. The clock is the database server's (``clock_timestamp()``), so
agents' clocks never decide lease expiry. Connection trouble raises ``CatalogUnavailable`` (retriable);
the URL in messages is always redacted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from streamhouse.errors import (
    CatalogError,
    CatalogUnavailable,
    InvalidArgument,
    LeaseLost,
    OffsetConflict,
    StaleEpoch,
    StreamhouseError,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)

from . import _validate as v
from ._rows import (
    AGENT_COLUMNS,
    LEASE_COLUMNS,
    PARTITION_COLUMNS,
    PRODUCER_STATE_COLUMNS,
    PRODUCER_STATE_UPSERT,
    SEGMENT_COLUMNS,
    TOPIC_COLUMNS,
    agent_from_row,
    commit_failure,
    heartbeat_refused,
    lease_from_row,
    lease_lost_message,
    partition_from_row,
    producer_from_row,
    producer_values,
    segment_from_row,
    segment_values,
    topic_from_row,
)
from ._url import redact_url
from .base import (
    AgentInfo,
    Catalog,
    CommitRefused,
    Lease,
    PartitionState,
    ProducerSnapshot,
    SegmentRecord,
    TopicInfo,
)
from .migrations import LATEST_VERSION, SCHEMA_MIGRATIONS_DDL, pending

# The database server's clock in milliseconds since the epoch; clock_timestamp() advances within a
# transaction, unlike now().
NOW_MS = "(floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint"
# pg_advisory_xact_lock key serializing migrations between agents starting at once ("STRMHOUS").
MIGRATION_LOCK_KEY = 0x5354524D484F5553

_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.InterfaceError,  # connection closed or pool closing
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, cannot connect now, query cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40: serialization failure, deadlock
)


class PostgresCatalog(Catalog):
    """Open with ``await PostgresCatalog.open(url)``; close with ``await catalog.close()``."""

    def __init__(self, pool: Any, url: str, acquire_timeout_s: float) -> None:
        self._pool = pool
        self.url = redact_url(url)
        self._acquire_timeout_s = acquire_timeout_s
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
    ) -> PostgresCatalog:
        """Connect a pool to ``url`` (``postgres://`` or ``postgresql://``) and apply pending migrations."""
        redacted = redact_url(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                server_settings={"application_name": "streamhouse"},
            )
        except Exception as exc:
            raise _map_error(exc, redacted) from exc
        catalog = cls(pool, url, connect_timeout_s)
        try:
            await catalog._migrate()
        except BaseException:
            await catalog.close()
            raise
        return catalog

    @asynccontextmanager
    async def _conn(self, *, transaction: bool = False) -> AsyncIterator[Any]:
        if self._closed:
            raise CatalogError(f"the PostgreSQL catalog {self.url} is closed")
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except StreamhouseError:
            raise
        except Exception as exc:
            raise _map_error(exc, self.url) from exc

    async def _migrate(self) -> None:
        async with self._conn(transaction=True) as conn:
            # Held until this transaction ends: a concurrent agent waits, then finds nothing pending.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(SCHEMA_MIGRATIONS_DDL)
            applied = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if applied and max(applied) > LATEST_VERSION:
                raise CatalogError(
                    f"PostgreSQL catalog {self.url} has schema version {max(applied)}, newer than this "
                    f"build knows ({LATEST_VERSION}); upgrade StreamHouse"
                )
            for migration in pending(applied):
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, {NOW_MS})",
                    migration.version,
                    migration.name,
                )

    async def schema_version(self) -> int:
        """The highest applied migration (not part of the abstract interface; for tests and tools)."""
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    # -- lifecycle --

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()

    async def now_ms(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval(f"SELECT {NOW_MS}"))

    # -- topics --

    async def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> TopicInfo:
        v.check_topic_name(name)
        v.check_partition_count(partitions)
        config_json = v.encode_str_map("topic config", config)
        async with self._conn(transaction=True) as conn:
            try:
                created = await conn.fetchval(
                    "INSERT INTO topics (name, partitions, config, created_at) "
                    f"VALUES ($1, $2, $3, {NOW_MS}) RETURNING created_at",
                    name,
                    partitions,
                    config_json,
                )
            except asyncpg.UniqueViolationError as exc:
                raise TopicExists(f"topic {name!r} already exists") from exc
            await conn.execute(
                "INSERT INTO partitions (topic, partition) SELECT $1, g FROM generate_series(0, $2 - 1) AS g",
                name,
                partitions,
            )
        return TopicInfo(name, partitions, v.decode_str_map(config_json), int(created))

    async def alter_topic_config(
        self, name: str, set_keys: Mapping[str, str], delete_keys: Sequence[str] = ()
    ) -> TopicInfo:
        v.check_topic_name(name)
        v.encode_str_map("topic config", set_keys)  # checks the types
        deleted = v.check_str_list("topic config keys to delete", delete_keys)
        async with self._conn(transaction=True) as conn:
            row = await conn.fetchrow(f"SELECT {TOPIC_COLUMNS} FROM topics WHERE name = $1 FOR UPDATE", name)
            if row is None:
                raise UnknownTopic(f"unknown topic {name!r}")
            topic = topic_from_row(row)
            config = {k: val for k, val in topic.config.items() if k not in deleted}
            config.update(set_keys)
            config_json = v.encode_str_map("topic config", config)
            await conn.execute("UPDATE topics SET config = $2 WHERE name = $1", name, config_json)
        return TopicInfo(name, topic.partitions, v.decode_str_map(config_json), topic.created_at_ms)

    async def delete_topic(self, name: str) -> list[SegmentRecord]:
        v.check_topic_name(name)
        async with self._conn(transaction=True) as conn:
            if await conn.fetchval("SELECT 1 FROM topics WHERE name = $1 FOR UPDATE", name) is None:
                raise UnknownTopic(f"unknown topic {name!r}")
            rows = await conn.fetch(
                f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = $1 ORDER BY partition, base_offset",
                name,
            )
            for table in ("segments", "consumer_offsets", "partition_leases", "partitions"):
                await conn.execute(f"DELETE FROM {table} WHERE topic = $1", name)
            await conn.execute("DELETE FROM topics WHERE name = $1", name)
        return [segment_from_row(r) for r in rows]

    async def get_topic(self, name: str) -> TopicInfo:
        v.check_topic_name(name)
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {TOPIC_COLUMNS} FROM topics WHERE name = $1", name)
        if row is None:
            raise UnknownTopic(f"unknown topic {name!r}")
        return topic_from_row(row)

    async def list_topics(self) -> list[TopicInfo]:
        async with self._conn() as conn:
            rows = await conn.fetch(f"SELECT {TOPIC_COLUMNS} FROM topics ORDER BY name")
        return [topic_from_row(r) for r in rows]

    async def get_partition(self, topic: str, partition: int) -> PartitionState:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        async with self._conn() as conn:
            return await _partition(conn, topic, partition)

    async def list_partitions(self, topic: str | None = None) -> list[PartitionState]:
        async with self._conn() as conn:
            if topic is None:
                rows = await conn.fetch(
                    f"SELECT {PARTITION_COLUMNS} FROM partitions ORDER BY topic, partition"
                )
                return [partition_from_row(r) for r in rows]
            v.check_topic_name(topic)
            rows = await conn.fetch(
                f"SELECT {PARTITION_COLUMNS} FROM partitions WHERE topic = $1 ORDER BY partition", topic
            )
            if not rows:
                await _topic_partitions(conn, topic)
            return [partition_from_row(r) for r in rows]

    # -- segments --

    async def commit_segment(self, segment: SegmentRecord, *, expected_epoch: int) -> PartitionState:
        v.check_segment(segment, expected_epoch)
        async with self._conn(transaction=True) as conn:
            return await _commit_row(conn, segment, expected_epoch)

    async def commit_segments(
        self, segments: Sequence[SegmentRecord]
    ) -> list[PartitionState | CommitRefused]:
        rows = list(segments)
        for s in rows:
            v.check_segment(s, s.epoch)
            v.check_producers(s)
        outcomes: list[PartitionState | CommitRefused] = []
        async with self._conn(transaction=True) as conn:
            now = int(await conn.fetchval(f"SELECT {NOW_MS}")) if any(s.producers for s in rows) else 0
            for s in rows:
                try:
                    outcomes.append(await _commit_row(conn, s, s.epoch))
                except (StaleEpoch, OffsetConflict) as refused:
                    # A CAS that matched no row raised no SQL error: the transaction goes on.
                    outcomes.append(refused)
                    continue
                if s.producers:
                    await conn.executemany(
                        PRODUCER_STATE_UPSERT.format(", ".join(f"${i}" for i in range(1, 7))),
                        [producer_values(s, p, now) for p in s.producers],
                    )
        return outcomes

    async def replace_segments(
        self, old: Sequence[SegmentRecord], new: SegmentRecord, *, expected_epoch: int
    ) -> None:
        olds = v.check_replacement(old, new, expected_epoch)
        async with self._conn(transaction=True) as conn:
            # Lock the partition row: a lease change (epoch bump) waits for this swap, or wins first.
            epoch = await conn.fetchval(
                "SELECT leader_epoch FROM partitions WHERE topic = $1 AND partition = $2 FOR UPDATE",
                new.topic,
                new.partition,
            )
            if epoch is None:
                await _partition(conn, new.topic, new.partition)  # raises UnknownTopic/UnknownPartition
            if epoch != expected_epoch:
                raise StaleEpoch(v.replace_stale_message(new, expected_epoch, int(epoch)))
            for o in olds:
                gone = await conn.fetchval(
                    "WITH d AS (DELETE FROM segments WHERE topic = $1 AND partition = $2 "
                    "AND base_offset = $3 AND end_offset = $4 AND object_key = $5 AND object_position = $6 "
                    "RETURNING 1) "
                    "SELECT count(*) FROM d",
                    o.topic,
                    o.partition,
                    o.base_offset,
                    o.end_offset,
                    o.object_key,
                    o.object_position,
                )
                if gone != 1:
                    raise OffsetConflict(v.replace_conflict_message(o))
            await _insert_segment(conn, new)

    async def truncate_log(
        self, topic: str, partition: int, new_log_start: int, *, expected_epoch: int
    ) -> PartitionState:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_int("new_log_start", new_log_start)
        v.check_int("expected_epoch", expected_epoch)
        async with self._conn(transaction=True) as conn:
            # Lock the partition row: a lease change (epoch bump) or a commit waits for this, or wins first.
            row = await conn.fetchrow(
                f"SELECT {PARTITION_COLUMNS} FROM partitions WHERE topic = $1 AND partition = $2 FOR UPDATE",
                topic,
                partition,
            )
            if row is None:
                await _partition(conn, topic, partition)  # raises UnknownTopic/UnknownPartition
            current = partition_from_row(row)
            if current.leader_epoch != expected_epoch:
                raise StaleEpoch(
                    v.truncate_stale_message(topic, partition, expected_epoch, current.leader_epoch)
                )
            if new_log_start <= current.log_start_offset:
                return current
            v.check_truncation(current, new_log_start)
            split = await conn.fetchrow(
                "SELECT base_offset, end_offset FROM segments WHERE topic = $1 AND partition = $2 "
                "AND base_offset < $3 AND end_offset > $3 LIMIT 1",
                topic,
                partition,
                new_log_start,
            )
            if split is not None:
                raise InvalidArgument(v.truncate_split_message(topic, partition, new_log_start, tuple(split)))
            await conn.execute(
                "DELETE FROM segments WHERE topic = $1 AND partition = $2 AND end_offset <= $3",
                topic,
                partition,
                new_log_start,
            )
            await conn.execute(
                "UPDATE partitions SET log_start_offset = $3 WHERE topic = $1 AND partition = $2",
                topic,
                partition,
                new_log_start,
            )
            return await _partition(conn, topic, partition)

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int | None = None
    ) -> list[SegmentRecord]:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_int("from_offset", from_offset)
        if limit is not None:
            v.check_int("limit", limit)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = $1 AND partition = $2 "
                "AND end_offset > $3 ORDER BY base_offset LIMIT $4",
                topic,
                partition,
                from_offset,
                limit,
            )
            if not rows:
                await _partition(conn, topic, partition)
        return [segment_from_row(r) for r in rows]

    async def list_object_keys(self) -> set[str]:
        async with self._conn() as conn:
            return {r[0] for r in await conn.fetch("SELECT DISTINCT object_key FROM segments")}

    # -- consumer groups --

    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        v.check_group_id(group)
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_int("offset", offset)
        async with self._conn(transaction=True) as conn:
            await _partition(conn, topic, partition)
            await conn.execute(
                "INSERT INTO consumer_offsets (group_id, topic, partition, committed_offset, updated_at) "
                f"VALUES ($1, $2, $3, $4, {NOW_MS}) ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                "committed_offset = excluded.committed_offset, updated_at = excluded.updated_at",
                group,
                topic,
                partition,
                offset,
            )

    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None:
        v.check_group_id(group)
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT committed_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2 "
                "AND partition = $3",
                group,
                topic,
                partition,
            )
            if value is None:
                await _partition(conn, topic, partition)
                return None
        return int(value)

    # -- agents --

    async def register_agent(
        self,
        agent_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
        *,
        incarnation: str = "",
    ) -> None:
        v.check_agent_id(agent_id)
        v.check_incarnation(incarnation)
        if not isinstance(address, str):
            raise InvalidArgument(f"agent address must be str, not {type(address).__name__}")
        metadata_json = v.encode_str_map("agent metadata", metadata)
        async with self._conn() as conn:
            await conn.execute(
                f"INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, {NOW_MS}, {NOW_MS}, $3, $4) "
                "ON CONFLICT (agent_id) DO UPDATE SET address = excluded.address, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
                "metadata = excluded.metadata, incarnation = excluded.incarnation",
                agent_id,
                address,
                metadata_json,
                incarnation,
            )

    async def heartbeat(self, agent_id: str, incarnation: str = "") -> None:
        v.check_agent_id(agent_id)
        v.check_incarnation(incarnation)
        async with self._conn() as conn:
            status = await conn.execute(
                f"UPDATE agents SET heartbeat_at = {NOW_MS} WHERE agent_id = $1 AND incarnation = $2",
                agent_id,
                incarnation,
            )
            if status != "UPDATE 1":
                row = await conn.fetchrow(
                    "SELECT address, incarnation FROM agents WHERE agent_id = $1", agent_id
                )
                raise heartbeat_refused(agent_id, row)

    async def deregister_agent(self, agent_id: str) -> None:
        v.check_agent_id(agent_id)
        async with self._conn() as conn:
            await conn.execute("DELETE FROM agents WHERE agent_id = $1", agent_id)

    async def list_agents(self, live_within_ms: int | None = None) -> list[AgentInfo]:
        async with self._conn() as conn:
            if live_within_ms is None:
                rows = await conn.fetch(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY agent_id")
            else:
                v.check_int("live_within_ms", live_within_ms)
                rows = await conn.fetch(
                    f"SELECT {AGENT_COLUMNS} FROM agents WHERE heartbeat_at >= {NOW_MS} - $1 "
                    "ORDER BY agent_id",
                    live_within_ms,
                )
        return [agent_from_row(r) for r in rows]

    # -- leases --

    async def acquire_lease(
        self, topic: str, partition: int, agent_id: str, ttl_ms: int, *, incarnation: str = ""
    ) -> Lease | None:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_agent_id(agent_id)
        v.check_ttl_ms(ttl_ms)
        v.check_incarnation(incarnation)
        async with self._conn(transaction=True) as conn:
            # Lock the partition row first, then read the lease and the clock in a later statement: under
            # READ COMMITTED each statement sees what committed before it started, so an acquirer that
            # waited on the lock sees the winner's lease row (a join in the locking statement would not).
            leader_epoch = await _lock_partition(conn, topic, partition)
            if leader_epoch is None:
                await _partition(conn, topic, partition)  # raises the precise Unknown* error
                raise UnknownPartition(f"unknown partition {partition} of topic {topic!r}")
            row = await conn.fetchrow(
                f"SELECT l.agent_id, l.expires_at, {NOW_MS} AS now, l.incarnation FROM (SELECT 1) AS one "
                "LEFT JOIN partition_leases l ON l.topic = $1 AND l.partition = $2",
                topic,
                partition,
            )
            epoch, holder, expires_at, now = leader_epoch, row[0], row[1], int(row[2])
            if holder is not None and holder != agent_id and int(expires_at) > now:
                return None
            if holder == agent_id and row[3] != incarnation and int(expires_at) > now:
                registered = await conn.fetchval(
                    "SELECT incarnation FROM agents WHERE agent_id = $1", agent_id
                )
                if registered != incarnation:
                    return None  # a stale process of this agent: the registered one holds it
            if holder != agent_id or row[3] != incarnation:
                epoch += 1
            lease = Lease(topic, partition, agent_id, epoch, now + ttl_ms, incarnation, 0)
            await conn.execute(
                f"INSERT INTO partition_leases ({LEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 0) "
                "ON CONFLICT (topic, partition) DO UPDATE SET agent_id = excluded.agent_id, "
                "epoch = excluded.epoch, expires_at = excluded.expires_at, "
                "incarnation = excluded.incarnation, acked_offset = 0",
                topic,
                partition,
                agent_id,
                epoch,
                lease.expires_at_ms,
                incarnation,
            )
            await conn.execute(
                "UPDATE partitions SET leader_epoch = $1, leader_agent_id = $2 WHERE topic = $3 "
                "AND partition = $4",
                epoch,
                agent_id,
                topic,
                partition,
            )
        return lease

    async def renew_leases(
        self,
        agent_id: str,
        leases: Sequence[tuple[str, int, int]],
        ttl_ms: int,
        *,
        incarnation: str = "",
        acked_offsets: Sequence[int] | None = None,
    ) -> list[Lease | LeaseLost]:
        wanted = v.check_lease_keys(leases)
        v.check_agent_id(agent_id)
        v.check_ttl_ms(ttl_ms)
        v.check_incarnation(incarnation)
        acked = v.check_acked_offsets(acked_offsets, len(wanted))
        out: list[Lease | LeaseLost] = []
        async with self._conn(transaction=True) as conn:
            now = int(await conn.fetchval(f"SELECT {NOW_MS}"))
            for (topic, partition, epoch), acked_offset in zip(wanted, acked, strict=True):
                if await _lock_partition(conn, topic, partition) is None:
                    out.append(LeaseLost(lease_lost_message(topic, partition, agent_id, epoch, None, 0)))
                    continue
                updated = await conn.fetchval(
                    "UPDATE partition_leases SET expires_at = $1, acked_offset = GREATEST(acked_offset, $7) "
                    "WHERE topic = $2 "
                    "AND partition = $3 AND agent_id = $4 AND epoch = $5 AND expires_at > $6 "
                    "AND incarnation = $8 RETURNING expires_at",
                    now + ttl_ms,
                    topic,
                    partition,
                    agent_id,
                    epoch,
                    now,
                    acked_offset,
                    incarnation,
                )
                if updated is not None:
                    out.append(
                        Lease(topic, partition, agent_id, epoch, int(updated), incarnation, acked_offset)
                    )
                    continue
                row = await conn.fetchrow(
                    f"SELECT {LEASE_COLUMNS} FROM partition_leases WHERE topic = $1 AND partition = $2",
                    topic,
                    partition,
                )
                out.append(
                    LeaseLost(lease_lost_message(topic, partition, agent_id, epoch, row, now, incarnation))
                )
        return out

    async def report_acked(
        self, agent_id: str, incarnation: str, entries: Sequence[tuple[str, int, int, int]]
    ) -> list[bool]:
        v.check_agent_id(agent_id)
        v.check_incarnation(incarnation)
        checked = v.check_acked_entries(entries)
        out: list[bool] = []
        async with self._conn(transaction=True) as conn:
            for topic, partition, epoch, acked in checked:
                status = await conn.execute(
                    "UPDATE partition_leases SET acked_offset = GREATEST(acked_offset, $1) WHERE topic = $2 "
                    "AND partition = $3 AND agent_id = $4 AND incarnation = $5 AND epoch = $6 "
                    f"AND expires_at > {NOW_MS}",
                    acked,
                    topic,
                    partition,
                    agent_id,
                    incarnation,
                    epoch,
                )
                out.append(status == "UPDATE 1")
        return out

    async def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        if producer_id is not None:
            v.check_int("producer_id", producer_id, 1)
        async with self._conn(transaction=True) as conn:
            if producer_id is None:
                # Serialise id allocation (MAX + 1) across agents; the lock lasts one short transaction.
                await conn.execute("LOCK TABLE producers IN SHARE ROW EXCLUSIVE MODE")
                row = await conn.fetchrow(
                    "INSERT INTO producers (producer_id, epoch, created_at, updated_at) "
                    f"SELECT COALESCE(MAX(producer_id), 0) + 1, 0, {NOW_MS}, {NOW_MS} FROM producers "
                    "RETURNING producer_id, epoch"
                )
            else:
                row = await conn.fetchrow(
                    f"UPDATE producers SET epoch = epoch + 1, updated_at = {NOW_MS} WHERE producer_id = $1 "
                    f"AND epoch < {v.MAX_PRODUCER_EPOCH} RETURNING producer_id, epoch",
                    producer_id,
                )
                if row is None:
                    raise InvalidArgument(v.unknown_producer_message(producer_id))
            return int(row[0]), int(row[1])

    async def producer_states(self, topic: str, partition: int) -> list[ProducerSnapshot]:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {PRODUCER_STATE_COLUMNS} FROM producer_states WHERE topic = $1 AND partition = $2 "
                "ORDER BY producer_id",
                topic,
                partition,
            )
        return [producer_from_row(r) for r in rows]

    async def expire_producers(self, idle_ms: int) -> int:
        v.check_int("idle_ms", idle_ms)
        async with self._conn(transaction=True) as conn:
            cutoff = int(await conn.fetchval(f"SELECT {NOW_MS}")) - idle_ms
            gone = await conn.fetchval(
                "WITH d AS (DELETE FROM producer_states WHERE updated_at < $1 RETURNING 1) "
                "SELECT count(*) FROM d",
                cutoff,
            )
            # The highest id stays: new ids are above it, so no id is ever issued twice.
            await conn.execute(
                "DELETE FROM producers WHERE updated_at < $1 AND producer_id NOT IN "
                "(SELECT producer_id FROM producer_states) "
                "AND producer_id < (SELECT MAX(producer_id) FROM producers)",
                cutoff,
            )
            return int(gone)

    async def release_lease(self, topic: str, partition: int, agent_id: str, epoch: int) -> None:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_agent_id(agent_id)
        v.check_int("epoch", epoch)
        async with self._conn(transaction=True) as conn:
            if await _lock_partition(conn, topic, partition) is None:
                return
            now = int(await conn.fetchval(f"SELECT {NOW_MS}"))
            await conn.execute(
                "UPDATE partition_leases SET expires_at = $1 WHERE topic = $2 AND partition = $3 "
                "AND agent_id = $4 AND epoch = $5 AND expires_at > $1",
                now,
                topic,
                partition,
                agent_id,
                epoch,
            )

    async def list_leases(self, agent_id: str | None = None) -> list[Lease]:
        sql = f"SELECT {LEASE_COLUMNS} FROM partition_leases"
        async with self._conn() as conn:
            if agent_id is None:
                rows = await conn.fetch(sql + " ORDER BY topic, partition")
            else:
                v.check_agent_id(agent_id)
                rows = await conn.fetch(sql + " WHERE agent_id = $1 ORDER BY topic, partition", agent_id)
        return [lease_from_row(r) for r in rows]

    async def get_lease(self, topic: str, partition: int) -> tuple[Lease | None, int]:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {LEASE_COLUMNS}, {NOW_MS} AS now FROM (SELECT 1) AS one LEFT JOIN partition_leases "
                "ON topic = $1 AND partition = $2",
                topic,
                partition,
            )
        lease = None if row[0] is None else lease_from_row(row)
        return lease, int(row[7])

    # -- hook for stores kept in modules of their own (the schema registry) --

    def connection(self, *, transaction: bool = False) -> AbstractAsyncContextManager[Any]:
        """A pooled connection, inside a transaction if ``transaction``, with errors mapped like the
        catalog's own (asyncpg errors the caller does not handle become CatalogError/CatalogUnavailable)."""
        return self._conn(transaction=transaction)


async def _lock_partition(conn: Any, topic: str, partition: int) -> int | None:
    """Row-lock the partition until the transaction ends (serializing every lease change and commit on
    it); its leader epoch, or None if it does not exist. Read the clock after this, not in it."""
    epoch = await conn.fetchval(
        "SELECT leader_epoch FROM partitions WHERE topic = $1 AND partition = $2 FOR UPDATE", topic, partition
    )
    return None if epoch is None else int(epoch)


async def _topic_partitions(conn: Any, topic: str) -> int:
    count = await conn.fetchval("SELECT partitions FROM topics WHERE name = $1", topic)
    if count is None:
        raise UnknownTopic(f"unknown topic {topic!r}")
    return int(count)


async def _commit_row(conn: Any, s: SegmentRecord, expected_epoch: int) -> PartitionState:
    """One compare-and-set commit inside the caller's transaction. The conditional UPDATE is the
    compare-and-set; it also row-locks the partition, so a concurrent commit of the same base offset waits,
    re-reads the new high watermark and matches nothing."""
    row = await conn.fetchrow(
        f"UPDATE partitions SET high_watermark = $1 WHERE topic = $2 AND partition = $3 "
        f"AND leader_epoch = $4 AND high_watermark = $5 RETURNING {PARTITION_COLUMNS}",
        s.end_offset,
        s.topic,
        s.partition,
        expected_epoch,
        s.base_offset,
    )
    if row is None:
        current = await _partition(conn, s.topic, s.partition)
        stale, message = commit_failure(
            s.topic, s.partition, expected_epoch, s.base_offset, current.leader_epoch, current.high_watermark
        )
        raise StaleEpoch(message) if stale else OffsetConflict(message)
    await _insert_segment(conn, s)
    return partition_from_row(row)


async def _insert_segment(conn: Any, s: SegmentRecord) -> None:
    """Insert a segment row, stamped with the catalog's clock."""
    values = list(segment_values(s, 0))
    created = SEGMENT_COLUMNS.replace(" ", "").split(",").index("created_at")
    del values[created]
    placeholders = [f"${i}" for i in range(1, len(values) + 1)]
    placeholders.insert(created, NOW_MS)
    # A failed INSERT aborts the transaction in PostgreSQL: nothing of it commits.
    try:
        await conn.execute(
            f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES ({', '.join(placeholders)})", *values
        )
    except asyncpg.UniqueViolationError as exc:
        raise InvalidArgument(
            f"object key {s.object_key!r} at position {s.object_position} is already referenced by a "
            "committed segment"
        ) from exc


async def _partition(conn: Any, topic: str, partition: int) -> PartitionState:
    row = await conn.fetchrow(
        f"SELECT {PARTITION_COLUMNS} FROM partitions WHERE topic = $1 AND partition = $2", topic, partition
    )
    if row is None:
        count = await _topic_partitions(conn, topic)
        raise UnknownPartition(f"unknown partition {partition} of topic {topic!r} ({count} partitions)")
    return partition_from_row(row)


def _map_error(exc: BaseException, redacted_url: str) -> StreamhouseError:
    if isinstance(exc, StreamhouseError):
        return exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, _UNAVAILABLE):
        return CatalogUnavailable(f"PostgreSQL catalog {redacted_url} is unavailable: {detail}")
    if isinstance(
        exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.exceptions.InvalidCatalogNameError
    ):
        return CatalogError(
            f"PostgreSQL catalog {redacted_url} refused the connection (check metadata_url): {detail}"
        )
    return CatalogError(f"PostgreSQL catalog {redacted_url}: {detail}")
