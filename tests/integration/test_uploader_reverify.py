"""A commit retried long after its put re-checks the object first: garbage collection may have deleted it
as unreferenced meanwhile, and a committed row must never point at a missing object (DESIGN invariant 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamhouse import engine
from streamhouse.agent.uploader import Uploader
from streamhouse.catalog import open_catalog
from streamhouse.catalog.base import Catalog, SegmentRecord
from streamhouse.errors import CatalogUnavailable
from streamhouse.metrics import AgentMetrics
from streamhouse.objstore import open_object_store
from streamhouse.objstore.base import ObjectStore


class CommitFailsWhileGcRuns:
    """The real catalog, whose first commits fail while a "collector" deletes the uploaded object."""

    def __init__(self, inner: Catalog, store: ObjectStore, failures: int) -> None:
        self.inner = inner
        self.store = store
        self.failures = failures

    async def commit_segment(self, segment: SegmentRecord, *, expected_epoch: int) -> Any:
        if self.failures:
            self.failures -= 1
            await self.store.delete(segment.object_key)  # what GC does to an old unreferenced object
            raise CatalogUnavailable("injected: catalog unreachable")
        return await self.inner.commit_segment(segment, expected_epoch=expected_epoch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_commit_after_a_long_wait_puts_the_object_again_if_it_was_collected(tmp_path: Path) -> None:
    eng = engine.load()
    catalog = await open_catalog(str(tmp_path / "catalog.sqlite3"))
    store = open_object_store(str(tmp_path / "objects"))
    try:
        await catalog.create_topic("orders", 1)
        lease = await catalog.acquire_lease("orders", 0, "agent-1", 60_000)
        assert lease is not None
        buf = eng.SegmentBuffer(0, compression="zstd")
        buf.append(0, eng.encode_batch([(None, b"kept", None, None)], 1000))
        sealed = buf.seal()
        flaky = CommitFailsWhileGcRuns(catalog, store, failures=2)
        uploader = Uploader(
            store,
            flaky,  # type: ignore[arg-type]
            AgentMetrics(),
            concurrency=1,
            retry_initial_ms=1,
            retry_max_ms=5,
            reverify_after_s=0.0,  # every retry re-checks
        )
        record = await uploader.upload_and_commit("orders", 0, lease.epoch, sealed)
        assert flaky.failures == 0
        assert await store.get(record.object_key) == sealed.data, "the committed row points at its object"
        assert [s.object_key for s in await catalog.list_segments("orders", 0)] == [record.object_key]
    finally:
        await store.close()
        await catalog.close()


class CommitLandsButReplyIsLost:
    """The first commit is made, then its reply is lost (the caller sees CatalogUnavailable)."""

    def __init__(self, inner: Catalog) -> None:
        self.inner = inner
        self.lost = 0

    async def commit_segment(self, segment: SegmentRecord, *, expected_epoch: int) -> Any:
        result = await self.inner.commit_segment(segment, expected_epoch=expected_epoch)
        if not self.lost:
            self.lost += 1
            raise CatalogUnavailable("injected: reply lost after the commit was made")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_lost_commit_reply_then_a_re_put_returns_the_row_that_was_committed(tmp_path: Path) -> None:
    """With re-puts under fresh keys, the retry meets OffsetConflict: it must recognise its own earlier row
    (under the first key) and hand that row back, so reads use the object the catalog refers to."""
    eng = engine.load()
    catalog = await open_catalog(str(tmp_path / "catalog.sqlite3"))
    store = open_object_store(str(tmp_path / "objects"))
    try:
        await catalog.create_topic("orders", 1)
        lease = await catalog.acquire_lease("orders", 0, "agent-1", 60_000)
        assert lease is not None
        buf = eng.SegmentBuffer(0, compression="lz4")
        buf.append(0, eng.encode_batch([(None, b"once", None, None)], 1000))
        sealed = buf.seal()
        uploader = Uploader(
            store,
            CommitLandsButReplyIsLost(catalog),  # type: ignore[arg-type]
            AgentMetrics(),
            concurrency=1,
            retry_initial_ms=1,
            retry_max_ms=5,
            reverify_after_s=0.0,
        )
        record = await uploader.upload_and_commit("orders", 0, lease.epoch, sealed)
        rows = await catalog.list_segments("orders", 0)
        assert [r.object_key for r in rows] == [record.object_key]
        assert await store.get(record.object_key) == sealed.data
        assert (await catalog.get_partition("orders", 0)).high_watermark == 1
    finally:
        await store.close()
        await catalog.close()
