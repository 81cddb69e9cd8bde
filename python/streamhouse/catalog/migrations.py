"""Versioned schema migrations for both catalog backends.

A migration is applied once, in one transaction, and recorded in ``schema_migrations``; applying the list
again is a no-op. Append new migrations at the end, never edit an applied one. The SQL below is the common
subset of SQLite and PostgreSQL (``BIGINT`` is a 64-bit integer in both), so both backends run the same
statements and cannot drift apart. Offsets, epochs and millisecond timestamps are ``BIGINT``; ``config`` and
``metadata`` are JSON text. Table and column names are part of the operator interface (the runbook queries
``partition_leases`` directly), so they do not change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     BIGINT PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  BIGINT NOT NULL
)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            """
            CREATE TABLE topics (
                name        TEXT PRIMARY KEY,
                partitions  INTEGER NOT NULL CHECK (partitions >= 1),
                config      TEXT NOT NULL DEFAULT '{}',
                created_at  BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE partitions (
                topic             TEXT NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
                partition         INTEGER NOT NULL CHECK (partition >= 0),
                high_watermark    BIGINT NOT NULL DEFAULT 0 CHECK (high_watermark >= 0),
                log_start_offset  BIGINT NOT NULL DEFAULT 0 CHECK (log_start_offset >= 0),
                leader_epoch      BIGINT NOT NULL DEFAULT 0 CHECK (leader_epoch >= 0),
                leader_agent_id   TEXT,
                PRIMARY KEY (topic, partition)
            )
            """,
            """
            CREATE TABLE segments (
                topic         TEXT NOT NULL,
                partition     INTEGER NOT NULL,
                base_offset   BIGINT NOT NULL CHECK (base_offset >= 0),
                end_offset    BIGINT NOT NULL,
                record_count  BIGINT NOT NULL,
                size_bytes    BIGINT NOT NULL CHECK (size_bytes >= 0),
                object_key    TEXT NOT NULL UNIQUE,
                epoch         BIGINT NOT NULL CHECK (epoch >= 0),
                min_ts        BIGINT NOT NULL,
                max_ts        BIGINT NOT NULL,
                crc32c        BIGINT NOT NULL CHECK (crc32c >= 0 AND crc32c <= 4294967295),
                compression   TEXT NOT NULL,
                created_at    BIGINT NOT NULL,
                PRIMARY KEY (topic, partition, base_offset),
                FOREIGN KEY (topic, partition) REFERENCES partitions (topic, partition) ON DELETE CASCADE,
                CHECK (end_offset > base_offset),
                CHECK (record_count = end_offset - base_offset)
            )
            """,
            "CREATE INDEX segments_end_offset ON segments (topic, partition, end_offset)",
            """
            CREATE TABLE consumer_offsets (
                group_id          TEXT NOT NULL,
                topic             TEXT NOT NULL,
                partition         INTEGER NOT NULL,
                committed_offset  BIGINT NOT NULL CHECK (committed_offset >= 0),
                updated_at        BIGINT NOT NULL,
                PRIMARY KEY (group_id, topic, partition),
                FOREIGN KEY (topic, partition) REFERENCES partitions (topic, partition) ON DELETE CASCADE
            )
            """,
            """
            CREATE TABLE agents (
                agent_id      TEXT PRIMARY KEY,
                address       TEXT NOT NULL,
                started_at    BIGINT NOT NULL,
                heartbeat_at  BIGINT NOT NULL,
                metadata      TEXT NOT NULL DEFAULT '{}'
            )
            """,
            """
            CREATE TABLE partition_leases (
                topic       TEXT NOT NULL,
                partition   INTEGER NOT NULL,
                agent_id    TEXT NOT NULL,
                epoch       BIGINT NOT NULL CHECK (epoch >= 1),
                expires_at  BIGINT NOT NULL,
                PRIMARY KEY (topic, partition),
                FOREIGN KEY (topic, partition) REFERENCES partitions (topic, partition) ON DELETE CASCADE
            )
            """,
            "CREATE INDEX partition_leases_agent ON partition_leases (agent_id)",
        ),
    ),
)

MIGRATIONS += (
    # One object per agent-level flush: several rows share an object key, each at its own byte range. The
    # UNIQUE on object_key alone goes, so the table is rebuilt (SQLite cannot drop a constraint); existing
    # rows are whole per-partition objects, i.e. position 0.
    Migration(
        2,
        "segments are byte ranges of shared objects",
        (
            """
            CREATE TABLE segments_v2 (
                topic            TEXT NOT NULL,
                partition        INTEGER NOT NULL,
                base_offset      BIGINT NOT NULL CHECK (base_offset >= 0),
                end_offset       BIGINT NOT NULL,
                record_count     BIGINT NOT NULL,
                size_bytes       BIGINT NOT NULL CHECK (size_bytes >= 0),
                object_key       TEXT NOT NULL,
                epoch            BIGINT NOT NULL CHECK (epoch >= 0),
                min_ts           BIGINT NOT NULL,
                max_ts           BIGINT NOT NULL,
                crc32c           BIGINT NOT NULL CHECK (crc32c >= 0 AND crc32c <= 4294967295),
                compression      TEXT NOT NULL,
                created_at       BIGINT NOT NULL,
                object_position  BIGINT NOT NULL DEFAULT 0 CHECK (object_position >= 0),
                PRIMARY KEY (topic, partition, base_offset),
                FOREIGN KEY (topic, partition) REFERENCES partitions (topic, partition) ON DELETE CASCADE,
                CHECK (end_offset > base_offset),
                CHECK (record_count = end_offset - base_offset),
                UNIQUE (object_key, object_position)
            )
            """,
            """
            INSERT INTO segments_v2 (topic, partition, base_offset, end_offset, record_count, size_bytes,
                                     object_key, epoch, min_ts, max_ts, crc32c, compression, created_at,
                                     object_position)
            SELECT topic, partition, base_offset, end_offset, record_count, size_bytes, object_key, epoch,
                   min_ts, max_ts, crc32c, compression, created_at, 0
            FROM segments
            """,
            "DROP TABLE segments",
            "ALTER TABLE segments_v2 RENAME TO segments",
            "CREATE INDEX segments_end_offset ON segments (topic, partition, end_offset)",
        ),
    ),
)

MIGRATIONS += (
    # One identity, one process: every agent process registers under a fresh incarnation, and its leases
    # carry it, so that a stale process of the same agent id (frozen, partitioned, or a duplicate) can never
    # renew them. ``acked_offset``: the holder reports, at each renewal, the offset through which it has
    # acknowledged records with acks=wal; a new owner compares it with the high watermark to know whether
    # acknowledged records are still only in the old owner's WAL (agent/leases.py).
    Migration(
        3,
        "agent incarnations; acknowledged offsets in leases",
        (
            "ALTER TABLE agents ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE partition_leases ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE partition_leases ADD COLUMN acked_offset BIGINT NOT NULL DEFAULT 0",
        ),
    ),
)

MIGRATIONS += (
    # The schema registry (streamhouse/schemas/): schemas by global id (one row per distinct normalised
    # text, never deleted, so an id is never reused), subjects' versions (soft-deleted ones kept with
    # deleted = 1 until a permanent delete), and compatibility levels ('' is the global one).
    Migration(
        4,
        "schema registry",
        (
            """
            CREATE TABLE registry_schemas (
                id           BIGINT PRIMARY KEY CHECK (id >= 1),
                fingerprint  TEXT NOT NULL UNIQUE,
                schema_type  TEXT NOT NULL,
                schema_text  TEXT NOT NULL,
                created_at   BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE registry_versions (
                subject     TEXT NOT NULL,
                version     BIGINT NOT NULL CHECK (version >= 1),
                schema_id   BIGINT NOT NULL REFERENCES registry_schemas (id),
                deleted     INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
                created_at  BIGINT NOT NULL,
                PRIMARY KEY (subject, version)
            )
            """,
            "CREATE INDEX registry_versions_schema ON registry_versions (schema_id)",
            """
            CREATE TABLE registry_config (
                subject        TEXT PRIMARY KEY,
                compatibility  TEXT NOT NULL
            )
            """,
        ),
    ),
)

MIGRATIONS += (
    # Idempotent producers: ids issued once (``producers``, with the epoch that fences an older session of
    # the same id), and per partition the last few batches of each producer as of the high watermark
    # (``producer_states``, written in the transaction that commits the segment holding them). ``batches``
    # is JSON: ``[[first_sequence, last_sequence, base_offset, end_offset], ...]``, oldest first.
    Migration(
        5,
        "idempotent producers",
        (
            """
            CREATE TABLE producers (
                producer_id  BIGINT PRIMARY KEY CHECK (producer_id >= 1),
                epoch        BIGINT NOT NULL DEFAULT 0 CHECK (epoch >= 0),
                created_at   BIGINT NOT NULL,
                updated_at   BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE producer_states (
                topic           TEXT NOT NULL,
                partition       INTEGER NOT NULL,
                producer_id     BIGINT NOT NULL,
                producer_epoch  BIGINT NOT NULL,
                batches         TEXT NOT NULL,
                updated_at      BIGINT NOT NULL,
                PRIMARY KEY (topic, partition, producer_id),
                FOREIGN KEY (topic, partition) REFERENCES partitions (topic, partition) ON DELETE CASCADE
            )
            """,
            "CREATE INDEX producer_states_updated ON producer_states (updated_at)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def pending(applied: set[int]) -> list[Migration]:
    """The migrations not yet applied, in order."""
    return [m for m in MIGRATIONS if m.version not in applied]
