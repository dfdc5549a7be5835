"""Merging segments keeps every row, every posting and the query results; GC removes inputs."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otelog.ingest.writer import Writer
from otelog.query.service import PageRequest, QueryService
from otelog.receiver.decode import decode_logs
from otelog.store import format as fmt
from otelog.store.store import Store


def _request(rng: random.Random, n: int, base_ns: int, tag: str) -> bytes:
    req = ExportLogsServiceRequest()
    for svc in ("auth", "cart"):
        rl = req.resource_logs.add()
        rl.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=svc))
        )
        sl = rl.scope_logs.add()
        for i in range(n):
            lr = sl.log_records.add()
            lr.time_unix_nano = base_ns + rng.randrange(10**9)
            lr.severity_number = rng.choice([5, 9, 13, 17])
            lr.body.string_value = f"{tag} request {i} handled by worker {rng.choice('abc')}"
            lr.trace_id = rng.randbytes(16)
            lr.attributes.append(
                KeyValue(key="region", value=AnyValue(string_value=rng.choice(["eu", "us"])))
            )
            lr.attributes.append(
                KeyValue(key="req", value=AnyValue(int_value=rng.randrange(10**9)))
            )
    return req.SerializeToString()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


QUERIES = [
    "",
    "service=auth",
    "level>=WARN AND region",
    "attributes.region=eu AND NOT level=DEBUG",
    "worker AND b",
    '"handled by worker c"',
]


def _results(qs: QueryService) -> dict[str, tuple[int, list[str]]]:
    out = {}
    for q in QUERIES:
        r = qs.logs(PageRequest(query=q, limit=1000))
        out[q] = (r.total, [row.body for row in r.rows])
    return out


def test_merge_keeps_results_and_gc_removes_inputs(store: Store) -> None:
    writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    rng = random.Random(7)
    base = time.time_ns() - 10**10
    for k in range(6):
        raw = _request(rng, 40, base, f"chunk{k}")
        batch, _ = decode_logs(raw, time.time_ns())
        writer.submit_logs("default", batch, raw, time.time_ns()).result()
        store.seal()
    qs = QueryService(store)
    before = _results(qs)
    inputs = store.snapshot("default").segments
    assert len(inputs) == 6
    merged = store.merge_once(small_rows=10**6, fanin=6, max_rows=10**7, grace_s=0)
    assert merged == 6 * 80
    segs = store.snapshot("default").segments
    assert len(segs) == 1 and segs[0].meta.rows == 480
    assert _results(qs) == before
    # the trace needle still finds its rows through the merged segment's postings
    some = store.snapshot("default").segments[0]
    row = QueryService(store).searcher().segment_row(some, 17)
    logs = qs.searcher().trace_logs(bytes.fromhex(row.trace_id))
    assert [r.log_id for r in logs] == [row.log_id]
    terms = {s.meta.id: s.terms() for s in inputs}
    assert store.collect_garbage(force=True) == 6
    for s in inputs:
        prefix = fmt.segment_columns_prefix("default", s.meta.id)
        assert list(store.db.scan_prefix(fmt.CF_COLS, prefix)) == []
        keys = [fmt.posting_key("default", t, s.meta.id) for t in terms[s.meta.id]]
        assert keys and store.db.get_many(fmt.CF_POST, keys) == [None] * len(keys)
    writer.stop()


def test_merged_away_segments_are_deleted_after_a_crash(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    s = Store(path)
    writer = Writer(s, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    rng = random.Random(3)
    for k in range(3):
        raw = _request(rng, 10, time.time_ns() - 10**10, f"c{k}")
        batch, _ = decode_logs(raw, time.time_ns())
        writer.submit_logs("default", batch, raw, time.time_ns()).result()
        s.seal()
    old = [seg.meta.id for seg in s.snapshot("default").segments]
    s.merge_once(small_rows=10**6, fanin=3, max_rows=10**7, grace_s=3600)
    writer.stop()
    s._garbage.clear()  # as if the process died before the grace period ended
    s.db.close()
    del s, writer
    s2 = Store(path)
    for sid in old:
        assert (
            list(s2.db.scan_prefix(fmt.CF_COLS, fmt.segment_columns_prefix("default", sid))) == []
        )
    assert QueryService(s2).logs(PageRequest(query="", limit=10)).total == 60
    s2.close()
