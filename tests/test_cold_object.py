"""A cold segment object answers every read exactly as the segment did in RocksDB."""

from __future__ import annotations

import random
import time
from pathlib import Path

from test_lifecycle import QUERIES, _request

from otelog.ingest.writer import Writer
from otelog.query.service import PageRequest, QueryService
from otelog.receiver.decode import decode_logs
from otelog.store.cold import (
    PAGE_TERMS,
    ColdSegmentReader,
    ColdSource,
    DiskCache,
    object_of_segment,
)
from otelog.store.store import Store


def test_every_column_and_posting_reads_back_from_the_object(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    try:
        raw = _request(random.Random(9), 1500, time.time_ns() - 10**12, "obj")
        batch, _ = decode_logs(raw, time.time_ns())
        writer.submit_logs("default", batch, raw, time.time_ns()).result()
        store.seal()
        (hot,) = store.snapshot("default").segments
        terms = hot.terms()
        assert len(terms) > 3 * PAGE_TERMS  # a trace id per row: several index pages
        data = object_of_segment(hot)
        cold = ColdSegmentReader(ColdSource.of_bytes("s3://b/k", data), hot.meta)
        assert sorted(cold.terms()) == sorted(terms)
        for t in terms:
            assert cold.posting(t) == hot.posting(t), t
        for absent in (b"", b"w" + b"zzzz", b"t" + b"\x00" * 16, b"\xff" * 40):
            assert not cold.posting(absent)
        assert (cold.ts == hot.ts).all() and (cold.lid == hot.lid).all()
        assert (cold.level == hot.level).all() and (cold.res == hot.res).all()
        assert cold.resources == hot.resources
        for blk in range(hot.meta.blocks):
            assert cold.block(blk) == hot.block(blk)
        # the same queries over the object as over RocksDB
        qs = QueryService(store)
        before = {q: qs.logs(PageRequest(query=q, limit=500)) for q in QUERIES}
        with store._lock:
            store._segments["default"][hot.meta.id] = cold
        for q in QUERIES:
            after = qs.logs(PageRequest(query=q, limit=500))
            assert after.total == before[q].total, q
            assert [r.log_id for r in after.rows] == [r.log_id for r in before[q].rows], q
    finally:
        writer.stop()
        store.close()


def test_disk_cache_stays_within_its_bound_and_forgets_objects(tmp_path: Path) -> None:
    cache = DiskCache(str(tmp_path / "c"), 10_000)
    for i in range(30):
        cache.put(f"s3://b/{i % 3}", i * 1000, bytes([i]) * 1000)
    assert cache.bytes <= 10_000
    assert sum(p.stat().st_size for p in (tmp_path / "c").iterdir()) == cache.bytes
    assert cache.get("s3://b/2", 29_000, 1000) == bytes([29]) * 1000
    assert cache.get("s3://b/0", 0, 1000) is None  # evicted long ago
    cache.forget("s3://b/2")
    assert cache.get("s3://b/2", 29_000, 1000) is None
    # a restart finds what is on disk
    again = DiskCache(str(tmp_path / "c"), 10_000)
    assert again.bytes == cache.bytes
