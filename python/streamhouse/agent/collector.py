"""Garbage collection of unreferenced segment objects (DESIGN.md section 3, invariant 3).

A segment exists for readers iff its catalog row is committed. A segment object that no row references is
garbage: the orphan of a crash (or a lost lease) between upload and commit, or a segment of a deleted topic
whose delete failed. ``collect_garbage`` deletes such objects once they are older than a grace period; the
agent runs it every ``object_gc_interval_ms`` with ``object_gc_grace_ms`` (docs/architecture.md, "Object
garbage collection").

Invariants:

- A referenced object is never deleted. The store is listed first and the catalog's references are read
  after (see the comment in ``collect_garbage``), and an unreferenced object is deleted only when it is
  older than the grace period, which is longer than any upload-to-commit window: an object that is still
  waiting for its commit is young.
- Only keys agents write are candidates: per-partition segment objects (compaction's output)
  ``topics/<topic>/<partition:05>/<base:020>-<epoch:010>[-<nonce>].seg`` and shared flush objects
  ``flushes/<time_ms:013>-<nonce>.flush``, relative to the store (``names.parse_segment_key``,
  ``names.is_flush_key``). Anything else under ``topics/`` or ``flushes/`` is foreign and left alone.
- A shared flush object is referenced while any row references any of its slices: rows reference it by
  key, so it is deleted only once the last of its slices has been compacted away or its topic deleted.
- An object whose time the store did not report (``last_modified_ms`` of 0 or less) counts as young.
- Age is judged on the catalog's clock (``Catalog.now_ms``) against the store's timestamps, so agents
  agree; the grace period absorbs the skew between the two clocks.
- Runs are idempotent and may overlap (every agent runs one; deletes of missing keys are no-ops).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from streamhouse.catalog.base import Catalog
from streamhouse.errors import InvalidArgument, InvalidArgumentType
from streamhouse.logs import get_logger
from streamhouse.names import FLUSHES_PREFIX, is_flush_key, parse_segment_key
from streamhouse.objstore.base import ObjectInfo, ObjectStore

log = get_logger(__name__)

SEGMENTS_PREFIX: Final = "topics/"
"""Where the agent's per-partition segment objects live in the store (``names.segment_key``, no prefix)."""
PREFIXES: Final = (SEGMENTS_PREFIX, FLUSHES_PREFIX)
"""Every prefix the collector lists."""


@dataclass(frozen=True, slots=True)
class GcResult:
    """What one garbage-collection run saw and did.

    ``scanned`` objects under ``topics/`` and ``flushes/`` = ``referenced`` + ``deleted`` + ``kept_young`` +
    ``skipped_foreign``. With ``dry_run``, ``deleted`` counts (and ``deleted_keys`` names) the objects
    that would have been deleted; nothing was."""

    scanned: int
    referenced: int
    deleted: int
    kept_young: int
    skipped_foreign: int
    dry_run: bool = False
    deleted_keys: tuple[str, ...] = ()


def _is_segment_key(key: str) -> bool:
    if is_flush_key(key):
        return True
    try:
        parsed = parse_segment_key(key)
    except (InvalidArgument, InvalidArgumentType):
        return False
    # The agent writes keys relative to the store, without a prefix of its own: "topics/x/topics/t/..."
    # parses (prefix "topics/x") but is not one of ours.
    return parsed.prefix == ""


async def collect_garbage(
    catalog: Catalog,
    store: ObjectStore,
    *,
    grace_ms: int,
    now_ms: int | None = None,
    dry_run: bool = False,
    on_delete: Callable[[str], None] | None = None,
) -> GcResult:
    """Delete every segment or flush object under ``topics/`` and ``flushes/`` that no committed catalog
    row references and that was last modified more than ``grace_ms`` before ``now_ms`` (default: the
    catalog's clock, read before the listing). ``on_delete(key)`` is called after each deletion (the
    agent counts them in a metric, so the count is right even when a later deletion fails).

    Store and catalog errors propagate (ObjectStoreError, CatalogUnavailable...); objects deleted before
    the error stay deleted, and the next run carries on, since every step is idempotent."""
    if type(grace_ms) is not int:
        raise InvalidArgumentType(f"grace_ms must be an int, not {type(grace_ms).__name__}")
    if grace_ms < 0:
        raise InvalidArgument(f"invalid grace_ms {grace_ms}: must be 0 or more")
    if now_ms is None:
        now_ms = await catalog.now_ms()
    elif type(now_ms) is not int:
        raise InvalidArgumentType(f"now_ms must be an int, not {type(now_ms).__name__}")
    cutoff_ms = now_ms - grace_ms

    # Order matters: list the objects FIRST, read the catalog's references AFTER. The uploader puts an
    # object and then commits its row. Read the other way round, an object uploaded just before the
    # reference read and committed just after it would appear in the listing but not in the (older)
    # references, and would look unreferenced although it is committed. Listed first, every object we see
    # was uploaded before the listing, so if its commit has happened by the time of the reference read, the
    # references include it. An object whose commit comes even later is still inside its upload-to-commit
    # window, which the grace period (longer than that window) protects.
    listed: list[ObjectInfo] = []
    for prefix in PREFIXES:
        listed.extend(await store.list(prefix))
    referenced_keys = await catalog.list_object_keys()

    referenced = kept_young = skipped_foreign = 0
    doomed: list[str] = []
    for info in listed:
        if not _is_segment_key(info.key):
            skipped_foreign += 1
        elif info.key in referenced_keys:
            referenced += 1
        elif info.last_modified_ms <= 0 or info.last_modified_ms >= cutoff_ms:
            kept_young += 1
        else:
            doomed.append(info.key)

    deleted: list[str] = []
    for key in doomed:
        if not dry_run:
            await store.delete(key)  # idempotent: another agent's run may have deleted it already
            if on_delete is not None:
                on_delete(key)
        log.debug(
            "Object GC: %s unreferenced segment object %s", "would delete" if dry_run else "deleted", key
        )
        deleted.append(key)

    return GcResult(
        scanned=len(listed),
        referenced=referenced,
        deleted=len(deleted),
        kept_young=kept_young,
        skipped_foreign=skipped_foreign,
        dry_run=dry_run,
        deleted_keys=tuple(deleted),
    )


def format_duration_ms(ms: int) -> str:
    """``3600000`` → ``1h``, ``5400000`` → ``90m``, ``90000`` → ``90s``, ``1500`` → ``1500ms`` (for logs)."""
    for unit, factor in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms >= factor and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


__all__ = ["PREFIXES", "SEGMENTS_PREFIX", "GcResult", "collect_garbage", "format_duration_ms"]
