"""The embedded catalog: one SQLite file in the data directory (stdlib ``sqlite3``).

Durability: WAL journal mode with ``synchronous=FULL``, so a commit that returned survives power loss.
Concurrency: every call runs on one dedicated worker thread that owns the connection (the event loop never
blocks), and every write is a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock up front, so
read-then-write sequences (the commit compare-and-set, lease acquisition) are serialized even against other
connections or processes opening the same file. The catalog clock is this host's wall clock, never allowed to
run backwards within one catalog instance.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

from streamhouse.errors import (
    CatalogError,
    CatalogUnavailable,
    InvalidArgument,
    LeaseLost,
    OffsetConflict,
    StaleEpoch,
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
    SEGMENT_COLUMN_COUNT,
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

T = TypeVar("T")

# Primary result codes that mean "try again later" rather than "this call is wrong".
_RETRIABLE_CODES = frozenset({5, 6, 10, 13, 14, 15})  # BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL


class SqliteCatalog(Catalog):
    """Open with ``await SqliteCatalog.open(path)``; close with ``await catalog.close()``."""

    def __init__(self, path: Path, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._conn = conn
        self._executor = executor
        self._closed = False
        self._last_now_ms = 0

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, busy_timeout_ms: int = 10_000) -> SqliteCatalog:
        """Open (creating if needed) the catalog file at ``path`` and apply pending migrations."""
        file = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamhouse-catalog-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, functools.partial(_connect, file, busy_timeout_ms))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        catalog = cls(file, conn, executor)
        try:
            await catalog._run(catalog._migrate)
        except BaseException:
            await catalog.close()
            raise
        return catalog

    # -- plumbing --

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise CatalogError(f"the SQLite catalog {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._call, fn))

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            message = f"SQLite catalog {self.path}: {exc}"
            if isinstance(exc, sqlite3.OperationalError) and code in _RETRIABLE_CODES:
                raise CatalogUnavailable(message) from exc
            raise CatalogError(message) from exc

    def _now(self) -> int:
        # Runs on the worker thread only, so the read-modify-write of _last_now_ms needs no lock.
        self._last_now_ms = max(self._last_now_ms, time.time_ns() // 1_000_000)
        return self._last_now_ms

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _write(conn):
            conn.execute(SCHEMA_MIGRATIONS_DDL)
            applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
            if applied and max(applied) > LATEST_VERSION:
                raise CatalogError(
                    f"SQLite catalog {self.path} has schema version {max(applied)}, newer than this build "
                    f"knows ({LATEST_VERSION}); upgrade StreamHouse"
                )
            for migration in pending(applied):
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, self._now()),
                )

    async def schema_version(self) -> int:
        """The highest applied migration (not part of the abstract interface; for tests and tools)."""

        def q(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

        return await self._run(q)

    # -- lifecycle --

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)

    async def now_ms(self) -> int:
        return await self._run(lambda conn: self._now())

    # -- topics --

    async def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> TopicInfo:
        v.check_topic_name(name)
        v.check_partition_count(partitions)
        config_json = v.encode_str_map("topic config", config)

        def q(conn: sqlite3.Connection) -> TopicInfo:
            now = self._now()
            with _write(conn):
                try:
                    conn.execute(
                        "INSERT INTO topics (name, partitions, config, created_at) VALUES (?, ?, ?, ?)",
                        (name, partitions, config_json, now),
                    )
                except sqlite3.IntegrityError as exc:
                    raise TopicExists(f"topic {name!r} already exists") from exc
                conn.executemany(
                    "INSERT INTO partitions (topic, partition) VALUES (?, ?)",
                    ((name, p) for p in range(partitions)),
                )
            return TopicInfo(name, partitions, v.decode_str_map(config_json), now)

        return await self._run(q)

    async def alter_topic_config(
        self, name: str, set_keys: Mapping[str, str], delete_keys: Sequence[str] = ()
    ) -> TopicInfo:
        v.check_topic_name(name)
        v.encode_str_map("topic config", set_keys)  # checks the types
        deleted = v.check_str_list("topic config keys to delete", delete_keys)

        def q(conn: sqlite3.Connection) -> TopicInfo:
            with _write(conn):
                row = conn.execute(f"SELECT {TOPIC_COLUMNS} FROM topics WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise UnknownTopic(f"unknown topic {name!r}")
                topic = topic_from_row(row)
                config = {k: val for k, val in topic.config.items() if k not in deleted}
                config.update(set_keys)
                config_json = v.encode_str_map("topic config", config)
                conn.execute("UPDATE topics SET config = ? WHERE name = ?", (config_json, name))
                return TopicInfo(name, topic.partitions, v.decode_str_map(config_json), topic.created_at_ms)

        return await self._run(q)

    async def delete_topic(self, name: str) -> list[SegmentRecord]:
        v.check_topic_name(name)

        def q(conn: sqlite3.Connection) -> list[SegmentRecord]:
            with _write(conn):
                _topic_partitions(conn, name)
                rows = conn.execute(
                    f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = ? ORDER BY partition, base_offset",
                    (name,),
                ).fetchall()
                for table in ("segments", "consumer_offsets", "partition_leases", "partitions"):
                    conn.execute(f"DELETE FROM {table} WHERE topic = ?", (name,))
                conn.execute("DELETE FROM topics WHERE name = ?", (name,))
            return [segment_from_row(r) for r in rows]

        return await self._run(q)

    async def get_topic(self, name: str) -> TopicInfo:
        v.check_topic_name(name)

        def q(conn: sqlite3.Connection) -> TopicInfo:
            row = conn.execute(f"SELECT {TOPIC_COLUMNS} FROM topics WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownTopic(f"unknown topic {name!r}")
            return topic_from_row(row)

        return await self._run(q)

    async def list_topics(self) -> list[TopicInfo]:
        def q(conn: sqlite3.Connection) -> list[TopicInfo]:
            rows = conn.execute(f"SELECT {TOPIC_COLUMNS} FROM topics ORDER BY name").fetchall()
            return [topic_from_row(r) for r in rows]

        return await self._run(q)

    async def get_partition(self, topic: str, partition: int) -> PartitionState:
        v.check_topic_name(topic)
        v.check_int("partition", partition)

        def q(conn: sqlite3.Connection) -> PartitionState:
            return _partition(conn, topic, partition)

        return await self._run(q)

    async def list_partitions(self, topic: str | None = None) -> list[PartitionState]:
        if topic is not None:
            v.check_topic_name(topic)

        def q(conn: sqlite3.Connection) -> list[PartitionState]:
            if topic is None:
                sql = f"SELECT {PARTITION_COLUMNS} FROM partitions ORDER BY topic, partition"
                return [partition_from_row(r) for r in conn.execute(sql)]
            _topic_partitions(conn, topic)
            sql = f"SELECT {PARTITION_COLUMNS} FROM partitions WHERE topic = ? ORDER BY partition"
            return [partition_from_row(r) for r in conn.execute(sql, (topic,))]

        return await self._run(q)

    # -- segments --

    async def commit_segment(self, segment: SegmentRecord, *, expected_epoch: int) -> PartitionState:
        v.check_segment(segment, expected_epoch)

        def q(conn: sqlite3.Connection) -> PartitionState:
            with _write(conn):
                return self._commit_row(conn, segment, expected_epoch)

        return await self._run(q)

    async def commit_segments(
        self, segments: Sequence[SegmentRecord]
    ) -> list[PartitionState | CommitRefused]:
        rows = list(segments)
        for s in rows:
            v.check_segment(s, s.epoch)
            v.check_producers(s)

        # The compare-and-sets go in one UPDATE ... FROM (VALUES ...) per round (a partition appears once
        # in a round; a flush holding two slices of one partition commits them in two rounds, in offset
        # order), the new partition states come back by RETURNING, and the segment rows go in by a few
        # multi-row INSERTs. Python's sqlite3 gives the GIL up at every statement step and taking it back
        # waits for a busy event loop: one statement per row made a flush of 250 partitions spend 50 ms
        # here (measured with 500 partitions under bench cost's load).
        def q(conn: sqlite3.Connection) -> list[PartitionState | CommitRefused]:
            outcomes: list[PartitionState | CommitRefused | None] = [None] * len(rows)
            committed: list[SegmentRecord] = []
            with _write(conn):
                now = self._now()
                for round_ in _rounds(rows):
                    for chunk in _per_statement(round_, _CAS_COLUMNS):
                        params = [
                            x
                            for _i, s in chunk
                            for x in (s.topic, s.partition, s.epoch, s.base_offset, s.end_offset)
                        ]
                        values = ", ".join([_CAS_ROW] * len(chunk))
                        states = {
                            (st.topic, st.partition): st
                            for st in map(
                                partition_from_row,
                                conn.execute(
                                    _CAS_SQL.format(values=values),
                                    params,
                                ).fetchall(),
                            )
                        }
                        for i, s in chunk:
                            state = states.get((s.topic, s.partition))
                            if state is None:
                                outcomes[i] = _refusal(conn, s, s.epoch)  # this row alone; the rest go on
                            else:
                                outcomes[i] = state
                                committed.append(s)
                self._insert_segments(conn, committed)
                states_rows = [producer_values(s, p, now) for s in committed for p in s.producers]
                if states_rows:
                    conn.executemany(PRODUCER_STATE_UPSERT.format(", ".join("?" * 6)), states_rows)
            assert all(o is not None for o in outcomes)
            return cast("list[PartitionState | CommitRefused]", outcomes)

        return await self._run(q)

    def _insert_segments(self, conn: sqlite3.Connection, segments: Sequence[SegmentRecord]) -> None:
        """Insert segment rows, many per statement (under SQLite's historical limit of 999 parameters)."""
        now = self._now()
        one = f"({', '.join('?' * SEGMENT_COLUMN_COUNT)})"
        for chunk in _per_statement(segments, SEGMENT_COLUMN_COUNT):
            values = [x for seg in chunk for x in segment_values(seg, now)]
            try:
                conn.execute(
                    f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES {', '.join([one] * len(chunk))}", values
                )
            except sqlite3.IntegrityError as exc:
                taken = next(
                    (
                        seg
                        for seg in chunk
                        if conn.execute(
                            "SELECT 1 FROM segments WHERE object_key = ? AND object_position = ?",
                            (seg.object_key, seg.object_position),
                        ).fetchone()
                    ),
                    chunk[0],
                )
                raise InvalidArgument(
                    f"object key {taken.object_key!r} at position {taken.object_position} is already "
                    "referenced by a committed segment"
                ) from exc

    def _commit_row(self, conn: sqlite3.Connection, s: SegmentRecord, expected_epoch: int) -> PartitionState:
        """One compare-and-set commit inside the caller's write transaction."""
        updated = conn.execute(
            "UPDATE partitions SET high_watermark = ? WHERE topic = ? AND partition = ? "
            "AND leader_epoch = ? AND high_watermark = ?",
            (s.end_offset, s.topic, s.partition, expected_epoch, s.base_offset),
        ).rowcount
        if updated != 1:
            raise _refusal(conn, s, expected_epoch)
        try:
            conn.execute(
                f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES ({', '.join('?' * SEGMENT_COLUMN_COUNT)})",
                segment_values(s, self._now()),
            )
        except sqlite3.IntegrityError as exc:
            raise InvalidArgument(
                f"object key {s.object_key!r} at position {s.object_position} is already referenced by a "
                "committed segment"
            ) from exc
        return _partition(conn, s.topic, s.partition)

    async def replace_segments(
        self, old: Sequence[SegmentRecord], new: SegmentRecord, *, expected_epoch: int
    ) -> None:
        olds = v.check_replacement(old, new, expected_epoch)

        def q(conn: sqlite3.Connection) -> None:
            with _write(conn):
                current = _partition(conn, new.topic, new.partition)
                if current.leader_epoch != expected_epoch:
                    raise StaleEpoch(v.replace_stale_message(new, expected_epoch, current.leader_epoch))
                for o in olds:
                    gone = conn.execute(
                        "DELETE FROM segments WHERE topic = ? AND partition = ? AND base_offset = ? "
                        "AND end_offset = ? AND object_key = ? AND object_position = ?",
                        (o.topic, o.partition, o.base_offset, o.end_offset, o.object_key, o.object_position),
                    ).rowcount
                    if gone != 1:
                        raise OffsetConflict(v.replace_conflict_message(o))
                try:
                    conn.execute(
                        f"INSERT INTO segments ({SEGMENT_COLUMNS}) "
                        f"VALUES ({', '.join('?' * SEGMENT_COLUMN_COUNT)})",
                        segment_values(new, self._now()),
                    )
                except sqlite3.IntegrityError as exc:
                    raise InvalidArgument(
                        f"object key {new.object_key!r} is already referenced by a committed segment"
                    ) from exc

        await self._run(q)

    async def truncate_log(
        self, topic: str, partition: int, new_log_start: int, *, expected_epoch: int
    ) -> PartitionState:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_int("new_log_start", new_log_start)
        v.check_int("expected_epoch", expected_epoch)

        def q(conn: sqlite3.Connection) -> PartitionState:
            with _write(conn):
                current = _partition(conn, topic, partition)
                if current.leader_epoch != expected_epoch:
                    raise StaleEpoch(
                        v.truncate_stale_message(topic, partition, expected_epoch, current.leader_epoch)
                    )
                if new_log_start <= current.log_start_offset:
                    return current
                v.check_truncation(current, new_log_start)
                split = conn.execute(
                    "SELECT base_offset, end_offset FROM segments WHERE topic = ? AND partition = ? "
                    "AND base_offset < ? AND end_offset > ? LIMIT 1",
                    (topic, partition, new_log_start, new_log_start),
                ).fetchone()
                if split is not None:
                    raise InvalidArgument(v.truncate_split_message(topic, partition, new_log_start, split))
                conn.execute(
                    "DELETE FROM segments WHERE topic = ? AND partition = ? AND end_offset <= ?",
                    (topic, partition, new_log_start),
                )
                conn.execute(
                    "UPDATE partitions SET log_start_offset = ? WHERE topic = ? AND partition = ?",
                    (new_log_start, topic, partition),
                )
                return _partition(conn, topic, partition)

        return await self._run(q)

    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int | None = None
    ) -> list[SegmentRecord]:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_int("from_offset", from_offset)
        row_limit = -1 if limit is None else v.check_int("limit", limit)

        def q(conn: sqlite3.Connection) -> list[SegmentRecord]:
            _partition(conn, topic, partition)
            rows = conn.execute(
                f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE topic = ? AND partition = ? "
                "AND end_offset > ? ORDER BY base_offset LIMIT ?",
                (topic, partition, from_offset, row_limit),
            ).fetchall()
            return [segment_from_row(r) for r in rows]

        return await self._run(q)

    async def list_object_keys(self) -> set[str]:
        def q(conn: sqlite3.Connection) -> set[str]:
            return {r[0] for r in conn.execute("SELECT DISTINCT object_key FROM segments")}

        return await self._run(q)

    # -- consumer groups --

    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        v.check_group_id(group)
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_int("offset", offset)

        def q(conn: sqlite3.Connection) -> None:
            with _write(conn):
                _partition(conn, topic, partition)
                conn.execute(
                    "INSERT INTO consumer_offsets (group_id, topic, partition, committed_offset, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                    "committed_offset = excluded.committed_offset, updated_at = excluded.updated_at",
                    (group, topic, partition, offset, self._now()),
                )

        await self._run(q)

    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None:
        v.check_group_id(group)
        v.check_topic_name(topic)
        v.check_int("partition", partition)

        def q(conn: sqlite3.Connection) -> int | None:
            _partition(conn, topic, partition)
            row = conn.execute(
                "SELECT committed_offset FROM consumer_offsets WHERE group_id = ? AND topic = ? "
                "AND partition = ?",
                (group, topic, partition),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._run(q)

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

        def q(conn: sqlite3.Connection) -> None:
            now = self._now()
            with _write(conn):
                conn.execute(
                    f"INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id) "
                    "DO UPDATE SET address = excluded.address, started_at = excluded.started_at, "
                    "heartbeat_at = excluded.heartbeat_at, metadata = excluded.metadata, "
                    "incarnation = excluded.incarnation",
                    (agent_id, address, now, now, metadata_json, incarnation),
                )

        await self._run(q)

    async def heartbeat(self, agent_id: str, incarnation: str = "") -> None:
        v.check_agent_id(agent_id)
        v.check_incarnation(incarnation)

        def q(conn: sqlite3.Connection) -> None:
            with _write(conn):
                n = conn.execute(
                    "UPDATE agents SET heartbeat_at = ? WHERE agent_id = ? AND incarnation = ?",
                    (self._now(), agent_id, incarnation),
                ).rowcount
                if n != 1:
                    row = conn.execute(
                        "SELECT address, incarnation FROM agents WHERE agent_id = ?", (agent_id,)
                    ).fetchone()
                    raise heartbeat_refused(agent_id, row)

        await self._run(q)

    async def deregister_agent(self, agent_id: str) -> None:
        v.check_agent_id(agent_id)

        def q(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))

        await self._run(q)

    async def list_agents(self, live_within_ms: int | None = None) -> list[AgentInfo]:
        if live_within_ms is not None:
            v.check_int("live_within_ms", live_within_ms)

        def q(conn: sqlite3.Connection) -> list[AgentInfo]:
            if live_within_ms is None:
                rows = conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY agent_id").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {AGENT_COLUMNS} FROM agents WHERE heartbeat_at >= ? ORDER BY agent_id",
                    (self._now() - live_within_ms,),
                ).fetchall()
            return [agent_from_row(r) for r in rows]

        return await self._run(q)

    # -- leases --

    async def acquire_lease(
        self, topic: str, partition: int, agent_id: str, ttl_ms: int, *, incarnation: str = ""
    ) -> Lease | None:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_agent_id(agent_id)
        v.check_ttl_ms(ttl_ms)
        v.check_incarnation(incarnation)

        def q(conn: sqlite3.Connection) -> Lease | None:
            with _write(conn):
                state = _partition(conn, topic, partition)
                now = self._now()
                row = conn.execute(
                    "SELECT agent_id, expires_at, incarnation FROM partition_leases WHERE topic = ? "
                    "AND partition = ?",
                    (topic, partition),
                ).fetchone()
                if row is not None and row[0] != agent_id and int(row[1]) > now:
                    return None
                if row is not None and row[0] == agent_id and row[2] != incarnation and int(row[1]) > now:
                    registered = conn.execute(
                        "SELECT incarnation FROM agents WHERE agent_id = ?", (agent_id,)
                    ).fetchone()
                    if registered is None or registered[0] != incarnation:
                        return None  # a stale process of this agent: the registered one holds it
                same_holder = row is not None and row[0] == agent_id and row[2] == incarnation
                epoch = state.leader_epoch if same_holder else state.leader_epoch + 1
                lease = Lease(topic, partition, agent_id, epoch, now + ttl_ms, incarnation, 0)
                conn.execute(
                    f"INSERT INTO partition_leases ({LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET agent_id = excluded.agent_id, "
                    "epoch = excluded.epoch, expires_at = excluded.expires_at, "
                    "incarnation = excluded.incarnation, acked_offset = 0",
                    (topic, partition, agent_id, epoch, lease.expires_at_ms, incarnation),
                )
                conn.execute(
                    "UPDATE partitions SET leader_epoch = ?, leader_agent_id = ? WHERE topic = ? "
                    "AND partition = ?",
                    (epoch, agent_id, topic, partition),
                )
                return lease

        return await self._run(q)

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

        def q(conn: sqlite3.Connection) -> list[Lease | LeaseLost]:
            out: list[Lease | LeaseLost] = []
            with _write(conn):
                now = self._now()
                for (topic, partition, epoch), acked_offset in zip(wanted, acked, strict=True):
                    n = conn.execute(
                        "UPDATE partition_leases SET expires_at = ?, acked_offset = MAX(acked_offset, ?) "
                        "WHERE topic = ? "
                        "AND partition = ? AND agent_id = ? AND incarnation = ? AND epoch = ? "
                        "AND expires_at > ?",
                        (now + ttl_ms, acked_offset, topic, partition, agent_id, incarnation, epoch, now),
                    ).rowcount
                    if n == 1:
                        out.append(
                            Lease(topic, partition, agent_id, epoch, now + ttl_ms, incarnation, acked_offset)
                        )
                        continue
                    row = conn.execute(
                        f"SELECT {LEASE_COLUMNS} FROM partition_leases WHERE topic = ? AND partition = ?",
                        (topic, partition),
                    ).fetchone()
                    out.append(
                        LeaseLost(
                            lease_lost_message(topic, partition, agent_id, epoch, row, now, incarnation)
                        )
                    )
            return out

        return await self._run(q)

    async def report_acked(
        self, agent_id: str, incarnation: str, entries: Sequence[tuple[str, int, int, int]]
    ) -> list[bool]:
        v.check_agent_id(agent_id)
        v.check_incarnation(incarnation)
        checked = v.check_acked_entries(entries)

        def q(conn: sqlite3.Connection) -> list[bool]:
            with _write(conn):
                now = self._now()
                return [
                    conn.execute(
                        "UPDATE partition_leases SET acked_offset = MAX(acked_offset, ?) WHERE topic = ? "
                        "AND partition = ? AND agent_id = ? AND incarnation = ? AND epoch = ? "
                        "AND expires_at > ?",
                        (acked, topic, partition, agent_id, incarnation, epoch, now),
                    ).rowcount
                    == 1
                    for topic, partition, epoch, acked in checked
                ]

        return await self._run(q)

    async def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        if producer_id is not None:
            v.check_int("producer_id", producer_id, 1)

        def q(conn: sqlite3.Connection) -> tuple[int, int]:
            with _write(conn):
                now = self._now()
                if producer_id is None:
                    row = conn.execute(
                        "INSERT INTO producers (producer_id, epoch, created_at, updated_at) "
                        "SELECT COALESCE(MAX(producer_id), 0) + 1, 0, ?, ? FROM producers "
                        "RETURNING producer_id, epoch",
                        (now, now),
                    ).fetchone()
                else:
                    row = conn.execute(
                        "UPDATE producers SET epoch = epoch + 1, updated_at = ? WHERE producer_id = ? "
                        f"AND epoch < {v.MAX_PRODUCER_EPOCH} RETURNING producer_id, epoch",
                        (now, producer_id),
                    ).fetchone()
                    if row is None:
                        raise InvalidArgument(v.unknown_producer_message(producer_id))
                return int(row[0]), int(row[1])

        return await self._run(q)

    async def producer_states(self, topic: str, partition: int) -> list[ProducerSnapshot]:
        v.check_topic_name(topic)
        v.check_int("partition", partition)

        def q(conn: sqlite3.Connection) -> list[ProducerSnapshot]:
            return [
                producer_from_row(r)
                for r in conn.execute(
                    f"SELECT {PRODUCER_STATE_COLUMNS} FROM producer_states WHERE topic = ? AND partition = ? "
                    "ORDER BY producer_id",
                    (topic, partition),
                )
            ]

        return await self._run(q)

    async def expire_producers(self, idle_ms: int) -> int:
        v.check_int("idle_ms", idle_ms)

        def q(conn: sqlite3.Connection) -> int:
            with _write(conn):
                cutoff = self._now() - idle_ms
                gone = conn.execute("DELETE FROM producer_states WHERE updated_at < ?", (cutoff,)).rowcount
                conn.execute(
                    # The highest id stays: new ids are above it, so no id is ever issued twice.
                    "DELETE FROM producers WHERE updated_at < ? AND producer_id NOT IN "
                    "(SELECT producer_id FROM producer_states) "
                    "AND producer_id < (SELECT MAX(producer_id) FROM producers)",
                    (cutoff,),
                )
                return int(gone)

        return await self._run(q)

    async def release_lease(self, topic: str, partition: int, agent_id: str, epoch: int) -> None:
        v.check_topic_name(topic)
        v.check_int("partition", partition)
        v.check_agent_id(agent_id)
        v.check_int("epoch", epoch)

        def q(conn: sqlite3.Connection) -> None:
            with _write(conn):
                now = self._now()
                conn.execute(
                    "UPDATE partition_leases SET expires_at = ? WHERE topic = ? AND partition = ? "
                    "AND agent_id = ? AND epoch = ? AND expires_at > ?",
                    (now, topic, partition, agent_id, epoch, now),
                )

        await self._run(q)

    async def list_leases(self, agent_id: str | None = None) -> list[Lease]:
        if agent_id is not None:
            v.check_agent_id(agent_id)

        def q(conn: sqlite3.Connection) -> list[Lease]:
            sql = f"SELECT {LEASE_COLUMNS} FROM partition_leases"
            if agent_id is None:
                rows = conn.execute(sql + " ORDER BY topic, partition").fetchall()
            else:
                rows = conn.execute(
                    sql + " WHERE agent_id = ? ORDER BY topic, partition", (agent_id,)
                ).fetchall()
            return [lease_from_row(r) for r in rows]

        return await self._run(q)

    async def get_lease(self, topic: str, partition: int) -> tuple[Lease | None, int]:
        v.check_topic_name(topic)
        v.check_int("partition", partition)

        def q(conn: sqlite3.Connection) -> tuple[Lease | None, int]:
            row = conn.execute(
                f"SELECT {LEASE_COLUMNS} FROM partition_leases WHERE topic = ? AND partition = ?",
                (topic, partition),
            ).fetchone()
            return (None if row is None else lease_from_row(row)), self._now()

        return await self._run(q)

    # -- hook for stores kept in modules of their own (the schema registry) --

    async def run_sql(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``fn(conn)`` on the catalog's thread, with its errors mapped like the catalog's own; with
        ``write``, inside one ``BEGIN IMMEDIATE`` transaction (committed if ``fn`` returns)."""
        if not write:
            return await self._run(fn)

        def in_transaction(conn: sqlite3.Connection) -> T:
            with _write(conn):
                return fn(conn)

        return await self._run(in_transaction)


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> str:
    """Switch the file to WAL journal mode, which persists in the file. Switching needs an exclusive lock,
    and SQLite answers "database is locked" at once, without its busy handler, while another connection
    is switching or migrating; so the first agents to open a fresh file retry here within the busy timeout.
    Once the file is in WAL mode, reading the mode takes no lock."""
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while mode.lower() != "wal":
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    return mode


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = _enable_wal(conn, busy_timeout_ms)
        if str(mode).lower() != "wal":
            raise CatalogError(f"SQLite catalog {path}: cannot enable WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise CatalogUnavailable(f"SQLite catalog {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction holding SQLite's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls some failures back by itself; a failed COMMIT leaves the transaction open.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_CAS_COLUMNS = 5
_CAS_ROW = f"({', '.join('?' * _CAS_COLUMNS)})"
# The compare-and-set of many segment rows at once: (topic, partition, epoch, base, end) per row.
_CAS_SQL = (
    "UPDATE partitions SET high_watermark = v.column5 FROM (VALUES {values}) AS v "
    "WHERE partitions.topic = v.column1 AND partitions.partition = v.column2 "
    "AND partitions.leader_epoch = v.column3 AND partitions.high_watermark = v.column4 "
    f"RETURNING {PARTITION_COLUMNS}"
)


def _rounds(rows: Sequence[SegmentRecord]) -> list[list[tuple[int, SegmentRecord]]]:
    """``rows`` (with their indexes) in rounds where each partition appears at most once, its rows in
    their order: the k-th row of a partition goes in round k."""
    rounds: list[list[tuple[int, SegmentRecord]]] = []
    seen: dict[tuple[str, int], int] = {}
    for i, s in enumerate(rows):
        k = seen.get((s.topic, s.partition), 0)
        seen[(s.topic, s.partition)] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append((i, s))
    return rounds


def _per_statement(items: Sequence[T], columns: int) -> list[Sequence[T]]:
    """``items`` split into the rows of multi-row statements of ``columns`` parameters a row, each under
    SQLite's historical limit of 999 parameters a statement."""
    n = 999 // columns
    return [items[i : i + n] for i in range(0, len(items), n)]


def _refusal(conn: sqlite3.Connection, s: SegmentRecord, expected_epoch: int) -> CommitRefused:
    """Why the compare-and-set of ``s`` matched no row: a stale epoch or an offset conflict."""
    current = _partition(conn, s.topic, s.partition)
    stale, message = commit_failure(
        s.topic, s.partition, expected_epoch, s.base_offset, current.leader_epoch, current.high_watermark
    )
    return StaleEpoch(message) if stale else OffsetConflict(message)


def _topic_partitions(conn: sqlite3.Connection, topic: str) -> int:
    row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None:
        raise UnknownTopic(f"unknown topic {topic!r}")
    return int(row[0])


def _partition(conn: sqlite3.Connection, topic: str, partition: int) -> PartitionState:
    row = conn.execute(
        f"SELECT {PARTITION_COLUMNS} FROM partitions WHERE topic = ? AND partition = ?", (topic, partition)
    ).fetchone()
    if row is None:
        count = _topic_partitions(conn, topic)
        raise UnknownPartition(f"unknown partition {partition} of topic {topic!r} ({count} partitions)")
    return partition_from_row(row)
