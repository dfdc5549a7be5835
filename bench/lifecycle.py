"""Data lifecycle benchmark: tiering to S3, cold vs hot queries, GDPR erasure.

In-process on a real store and a real S3 server (`weed mini`, as the tests start it):

1. ingest N records stamped 10 days ago (bench/workload.py; every 1000th carries the
   rare keyword, so deleting it is a 0.1% delete), seal and merge into big segments;
2. time the benchmark queries on hot data;
3. run the lifecycle pass with a 7-day hot period: every segment moves to S3 (records/s);
4. time the same queries on cold data, first with an empty local cache, then warm,
   and check every answer equals the hot one;
5. delete the rare keyword (0.1%): time until hidden, and until ERASED (objects
   rewritten, old ones deleted).

    python bench/lifecycle.py --records 1000000
"""

# ruff: noqa: E402 - the imports below need the sys.path set first
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from s3server import ACCESS_KEY, SECRET_KEY, S3Server
from workload import Workload

from otelog.ingest.writer import Writer
from otelog.lifecycle.manager import LifecycleManager
from otelog.lifecycle.objstore import ObjectStore
from otelog.lifecycle.retention import DAY_NS, RetentionPolicy
from otelog.query.service import PageRequest, QueryService
from otelog.receiver.decode import (
    DecodeLimits,
    decode_logs,
)
from otelog.sealer import ProcessSegmentBuilder
from otelog.store.cold import DiskCache
from otelog.store.deletions import ERASED
from otelog.store.store import Store


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


Query = tuple[str, list[str], int]  # (name, the query of each run, page size)


def timed_queries(
    qs: QueryService, queries: list[Query], runs: int
) -> tuple[dict[str, dict[str, float]], dict[str, list[tuple[int, list[int]]]]]:
    """Latency per query (the first run separately: it fills the caches), and every
    answer, to compare hot with cold. A query with one text per run (trace ids) reads
    new parts each time."""
    figures: dict[str, dict[str, float]] = {}
    answers: dict[str, list[tuple[int, list[int]]]] = {}
    for name, texts, limit in queries:
        times = []
        for i in range(runs):
            t0 = time.perf_counter()
            r = qs.logs(PageRequest(query=texts[i % len(texts)], limit=limit))
            times.append((time.perf_counter() - t0) * 1000)
            answers.setdefault(name, []).append((r.total, [row.log_id for row in r.rows]))
        figures[name] = {
            "first_ms": times[0],
            "p50_ms": pct(times, 50),
            "p99_ms": pct(times, 99),
        }
    return figures, answers


def erase(lm: LifecycleManager, qs: QueryService, query: str) -> dict[str, object]:
    """Delete `query`: time until hidden, then until ERASED (passes run back to back)."""
    t0 = time.perf_counter()
    d = lm.delete_logs(query)
    hide_ms = (time.perf_counter() - t0) * 1000
    hidden = qs.logs(PageRequest(query=query, limit=1)).total == 0
    t1 = time.perf_counter()
    lm.run_pass()
    lm.store.collect_garbage(force=True)
    lm.run_pass()
    erase_s = time.perf_counter() - t1
    done = lm.deletion(d.id)
    assert done is not None
    return {
        "query": query,
        "matched": d.matched,
        "erased": done.erased,
        "state": done.state,
        "hidden_at_once": hidden,
        "hide_ms": round(hide_ms, 1),
        "erase_seconds": round(erase_s, 2),
        "segments_rewritten": sum(1 for e in done.rewritten if e.get("segment")),
        "objects_rewritten": sum(1 for e in done.rewritten if e.get("object")),
        "ok": hidden and done.state == ERASED and done.erased == d.matched,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="otelog-lifecycle-"))
    s3 = S3Server(tmp / "s3").start()
    store = Store(str(tmp / "db"))
    store.gc_grace_s = 0
    builder = ProcessSegmentBuilder(DecodeLimits())
    store.segment_builder = builder
    store.segment_merger = builder.merge
    writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    out: dict[str, object] = {"records": args.records}
    try:
        now = time.time_ns()
        wl = Workload(args.records, 512, 1, start_ns=now - 10 * DAY_NS, rare_every=1000)
        log(f"ingesting {args.records} records stamped 10 days ago ...")
        t0 = time.perf_counter()
        pending = []
        n = 0
        for raw in wl.log_requests():
            batch, _ = decode_logs(raw, time.time_ns())
            pending.append(writer.submit_logs("default", batch, raw, time.time_ns()))
            n += len(batch)
            if n >= 100_000:
                for f in pending:
                    f.result()
                pending, n = [], 0
                store.seal()
        for f in pending:
            f.result()
        store.seal()
        while store.merge_once(small_rows=500_000, fanin=8, max_rows=1_000_000):
            pass
        store.collect_garbage(force=True)
        segs = store.snapshot("default").segments
        log(f"  {time.perf_counter() - t0:.1f} s; {len(segs)} segments "
            f"({', '.join(str(s.meta.rows) for s in segs)} rows)")  # fmt: skip
        stats = wl.stats
        traces = [t for t in stats.traces.values() if t.records]
        rng = random.Random(1)
        needles = [t.trace_id.hex() for t in rng.sample(traces, args.runs)]
        queries: list[Query] = [
            ("trace-id needle (a new trace each run)", [f"trace_id={n}" for n in needles], 100),
            ("service=checkout AND level=ERROR", ["service=checkout AND level=ERROR"], 100),
            (f"rare keyword ({stats.rare_keyword})", [stats.rare_keyword], 100),
            ("level>=WARN (count)", ["level>=WARN"], 1),
        ]
        qs = QueryService(store)
        hot, hot_answers = timed_queries(qs, queries, args.runs)
        out["hot"] = hot

        objects = ObjectStore(s3.endpoint, ACCESS_KEY, SECRET_KEY)
        cache_dir = tmp / "cold-cache"
        lm = LifecycleManager(
            store,
            objects,
            RetentionPolicy("default", "", 7, 365, "s3://bench/cold"),
            DiskCache(str(cache_dir), 4 << 30),
        )
        # a hot erase first: the (service, level) pair closest to 0.1% of the records
        (svc, lv), _n = min(stats.counts.items(), key=lambda kv: abs(kv[1] - args.records // 1000))
        # (with a 30-day hot period, so that its passes move nothing yet)
        lm.default_policy = RetentionPolicy("default", "", 30, 365, "s3://bench/cold")
        out["erase_hot"] = erase(lm, qs, f"service={svc} AND level={lv}")
        lm.default_policy = RetentionPolicy("default", "", 7, 365, "s3://bench/cold")
        log(f"  hot erase: {out['erase_hot']}")
        erased_hot = int(out["erase_hot"]["erased"])  # type: ignore[index]
        # the reference answers, without the erased records
        hot_answers = timed_queries(qs, queries, args.runs)[1]
        log("tiering ...")
        t0 = time.perf_counter()
        lm.run_pass()
        secs = time.perf_counter() - t0
        store.collect_garbage(force=True)
        moved = lm.stats.tiered_rows
        cold_segs = [s for s in store.snapshot("default").segments if s.meta.cold]
        out["tiering"] = {
            "records": moved,
            "seconds": round(secs, 2),
            "records_per_s": round(moved / secs),
            "object_bytes": lm.stats.tiered_bytes,
            "bytes_per_record": round(lm.stats.tiered_bytes / max(1, moved), 1),
            "segments": len(cold_segs),
            "rocksdb_bytes_after": store.size_on_disk(),
        }
        log(f"  {out['tiering']}")
        # cold, empty cache: fresh readers and no cached parts
        shutil.rmtree(cache_dir)
        store.cold.cache = DiskCache(str(cache_dir), 4 << 30)
        store.close()
        store = Store(str(tmp / "db"))
        store.gc_grace_s = 0
        lm = LifecycleManager(
            store, objects, RetentionPolicy("default", "", 7, 365, "s3://bench/cold"),
            store.cold.cache or DiskCache(str(cache_dir), 4 << 30),
        )  # fmt: skip
        writer.stop()
        writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
        writer.start()
        qs = QueryService(store)
        cold, cold_answers = timed_queries(qs, queries, args.runs)
        out["cold"] = cold
        assert store.cold.cache is not None
        out["cold_cache_bytes"] = store.cold.cache.bytes
        same = cold_answers == hot_answers
        out["cold_answers_equal_hot"] = same
        log(f"  cold answers equal hot: {same}")

        log(f"erasing '{stats.rare_keyword}' (0.1%) from cold data ...")
        out["erase_cold"] = erase(lm, qs, stats.rare_keyword)
        log(f"  {out['erase_cold']}")
        left = qs.logs(PageRequest(query="", limit=1)).total
        out["records_left"] = left
        cold_ok = out["erase_cold"]["ok"] and out["erase_hot"]["ok"]  # type: ignore[index]
        erased = erased_hot + int(out["erase_cold"]["erased"])  # type: ignore[index]
        ok = bool(same and cold_ok and left == args.records - erased)
        out["ok"] = ok
        print(json.dumps(out, indent=1))
        return 0 if ok else 1
    finally:
        writer.stop()
        builder.close()
        store.close()
        s3.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        _ = statistics


if __name__ == "__main__":
    sys.exit(main())
