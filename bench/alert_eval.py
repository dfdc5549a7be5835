"""What alerting costs: 100 rules over a store of 1 M records.

    python bench/alert_eval.py                          # 1,000,000 records, 100 rules
    python bench/alert_eval.py --records 100000 --fresh 20000   # quick run

In process, on a real RocksDB store in a temporary directory: the deterministic workload
of `workload.py` (one hour of records ending now, 40 services, Zipf-like) goes through the
real writer (WAL, group commit, sealing), then the alert engine gets `--rules` rules of
every kind (threshold, rate, spike by ratio and z-score with a 1 h baseline, absence,
full text, record attribute, grouped by service, host or attribute) and reports, as
engine-thread CPU time (`time.thread_time`, so the writer and sealer do not count):

- seeding: every rule counting its history from the store (start-up, rule creation);
- one evaluation round over every rule (median of `--rounds`), and per rule;
- incremental counting: `--fresh` new records handed to the engine as committed batches
  (the writer listener's path), per record for all rules and per record per rule.

Counts are checked: each threshold rule's window count after seeding equals a direct
`logs(limit: 0)` total of its query over the same window.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# workload: bench/ is not a package, but a script's own directory is on sys.path
from workload import SERVICES, Workload

from otelog.alerting.engine import AlertEngine
from otelog.alerting.evaluate import buckets_needed, measure
from otelog.alerting.rules import RuleSpec
from otelog.ingest.writer import Writer
from otelog.query.execute import Searcher
from otelog.query.plan import TimeWindow
from otelog.receiver.decode import decode_logs
from otelog.store.store import Store

S = 1_000_000_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rule_specs(n: int) -> list[RuleSpec]:
    """`n` rules cycling through the kinds a deployment has."""
    kinds: list[Any] = [
        lambda s: RuleSpec(
            f"errors_{s}", "count > 50", f"service={s} AND level=ERROR", window="1m"
        ),
        lambda s: RuleSpec(f"warn_rate_{s}", "rate > 2", f"service={s} AND level>=WARN", "5m"),
        lambda s: RuleSpec(
            f"spike_{s}", "ratio > 3", f"service={s} AND level>=ERROR", "1m", baseline="1h"
        ),
        lambda s: RuleSpec(
            f"zspike_{s}", "zscore > 3", "level=ERROR", "1m", group_by="service", baseline="1h"
        ),
        lambda s: RuleSpec(f"absent_{s}", "absent", f"service={s}", "5m", baseline="1h"),
        lambda s: RuleSpec(f"timeouts_{s}", "count > 10", f"service={s} AND timeout", "5m"),
        lambda s: RuleSpec(
            f"server_errors_{s}",
            "count > 5",
            "attributes.http.status_code>=500",
            "1m",
            group_by="host",
        ),  # fmt: skip
        lambda s: RuleSpec(
            f"routes_{s}",
            "rate > 1",
            f"service={s} AND level>=WARN",
            "1m",
            group_by="attributes.http.route",
        ),  # fmt: skip
    ]
    return [kinds[i % len(kinds)](SERVICES[i % len(SERVICES)]) for i in range(n)]


def ingest(store: Store, records: int, seed: int, start_ns: int, span_ns: int) -> float:
    writer = Writer(store)
    writer.start()
    t0 = time.perf_counter()
    pending = []
    wl = Workload(records, batch_size=512, seed=seed, start_ns=start_ns, span_ns=span_ns)
    for raw in wl.log_requests():
        now = time.time_ns()
        batch, _ = decode_logs(raw, now)
        pending.append(writer.submit_logs("default", batch, raw, now))
        if len(pending) > 64:
            pending.pop(0).result(60)
    for f in pending:
        f.result(60)
    writer.stop()
    return time.perf_counter() - t0


def fresh_batches(records: int, first_seq: int) -> list[Any]:
    """New records stamped over the last minute, decoded as the writer would hand them on."""
    now = time.time_ns()
    out = []
    wl = Workload(records, batch_size=512, seed=99, start_ns=now - 60 * S, span_ns=60 * S)
    for i, raw in enumerate(wl.log_requests()):
        batch, _ = decode_logs(raw, now)
        base = (first_seq + i) << 24
        batch.log_id = list(range(base, base + len(batch)))
        out.append(batch)
    return out


def check_counts(engine: AlertEngine, store: Store, now: int) -> int:
    """Threshold rules: engine window count == a direct count of the query (exact window
    of the rule's buckets). Returns the rules checked."""
    checked = 0
    for st in list(engine._states.values()):  # noqa: SLF001 - a benchmark's self-check
        r = st.rule
        if r.kind != "threshold" or r.group_by is not None or st.counts is None:
            continue
        cur = now // r.bucket_ns
        got = int(measure(r, st.counts.matrix(cur, buckets_needed(r))).count[0])
        lo = (cur - r.window_buckets + 1) * r.bucket_ns
        want = Searcher(store, "default").search(r.node, now, TimeWindow(lo, now + S), 0).total
        if got != want:
            raise SystemExit(f"count mismatch for {r.name}: engine {got}, store {want}")
        checked += 1
    return checked


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--rules", type=int, default=100)
    p.add_argument("--fresh", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--data-dir", default=None, help="keep the store here (default: temporary)")
    args = p.parse_args(argv)

    tmp = Path(args.data_dir or tempfile.mkdtemp(prefix="otelog-alert-bench-"))
    try:
        store = Store(str(tmp / "db"))
        end = time.time_ns()
        log(f"ingesting {args.records:,} records over the last hour ...")
        ingest_s = ingest(store, args.records, 1, end - 3600 * S, 3600 * S)
        log(f"  {ingest_s:.1f} s")

        engine = AlertEngine(store, interval_s=3600)
        engine.start()
        specs = rule_specs(args.rules)
        log(f"creating {len(specs)} rules (each seeds from the store) ...")
        t0 = time.perf_counter()
        for spec in specs:
            engine.create_rule(spec)
        engine.drain(600)
        seed_wall = time.perf_counter() - t0
        seed_cpu = engine.stats.seed_seconds
        checked = check_counts(engine, store, time.time_ns())

        log(f"{args.rounds} evaluation rounds ...")
        rounds = []
        for _ in range(args.rounds):
            engine.run_round()
            rounds.append(engine.stats.round_seconds)
        round_cpu = statistics.median(rounds)

        log(f"counting {args.fresh:,} fresh records as committed batches ...")
        batches = fresh_batches(args.fresh, store.allocate_seqs(0) + 1_000)
        before_s, before_n = engine.stats.count_seconds, engine.stats.batch_records
        t0 = time.perf_counter()
        for b in batches:
            engine.on_commit("default", b)
        engine.drain(600)
        count_wall = time.perf_counter() - t0
        count_cpu = engine.stats.count_seconds - before_s
        counted = engine.stats.batch_records - before_n
        engine.stop()
        store.close()
    finally:
        if not args.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)

    n_rules = len(specs)
    report = {
        "records": args.records,
        "rules": n_rules,
        "ingest_s": round(ingest_s, 2),
        "seed_cpu_s": round(seed_cpu, 3),
        "seed_wall_s": round(seed_wall, 3),
        "seed_cpu_per_rule_ms": round(seed_cpu / n_rules * 1e3, 2),
        "round_cpu_ms": round(round_cpu * 1e3, 3),
        "round_cpu_per_rule_us": round(round_cpu / n_rules * 1e6, 1),
        "round_cpu_max_ms": round(max(rounds) * 1e3, 3),
        "fresh_records": counted,
        "count_cpu_s": round(count_cpu, 3),
        "count_wall_s": round(count_wall, 3),
        "count_cpu_per_record_us": round(count_cpu / max(counted, 1) * 1e6, 2),
        "count_cpu_per_record_rule_ns": round(count_cpu / max(counted, 1) / n_rules * 1e9, 1),
        "count_records_per_s": round(counted / count_cpu) if count_cpu else None,
        "threshold_rules_checked": checked,
    }
    print(f"alert evaluation: {args.records:,} records, {n_rules} rules")
    print(
        f"  seeding (all rules, from the store)  {seed_cpu:8.3f} s CPU "
        f"({report['seed_cpu_per_rule_ms']} ms/rule), {seed_wall:.3f} s wall"
    )
    print(
        f"  one evaluation round                 {round_cpu * 1e3:8.3f} ms CPU "
        f"({report['round_cpu_per_rule_us']} us/rule; max {report['round_cpu_max_ms']} ms)"
    )
    print(
        f"  incremental counting                 {report['count_cpu_per_record_us']:8.2f} us "
        f"CPU/record for all rules ({report['count_cpu_per_record_rule_ns']} ns/record/rule; "
        f"{report['count_records_per_s']:,} records/s)"
    )
    print(f"  counts checked against the store     {checked} threshold rules exact")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
