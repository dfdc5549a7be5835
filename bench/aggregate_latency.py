"""Latency of histograms and facets over GraphQL at 1 M records, with their counts checked.

    python bench/aggregate_latency.py                      # 1,000,000 records, own server
    python bench/aggregate_latency.py --records 100000 --runs 10        # quick run
    python bench/aggregate_latency.py --grpc 127.0.0.1:4317 --api http://127.0.0.1:8080

Ingests the deterministic workload of `workload.py` over OTLP/gRPC (reusing
`ingest_query.py`: pre-encoding, server start, concurrent senders), waits until the server
is idle (every segment sealed), then times `logHistogram` and `facets` over one hour that
holds all the records (absolute `from`/`to`, so the time spent encoding cannot move
records out of the window). Every run's answer is checked: totals and per-level and
per-service counts against the workload's ground truth; attribute facets against the
`logs` total of the same value (a different engine path). Progress goes to stderr, a
table and one JSON line to stdout. Exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# ingest_query and workload: bench/ is not a package, but a script's own directory is
# on sys.path
from ingest_query import (
    LOGS_EXPORT,
    GraphQL,
    Server,
    default_server_command,
    log,
    percentile,
    send_all,
    wait_idle,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from workload import Workload, WorkloadStats

MIN_NS = 60 * 10**9
HISTOGRAM = """query($q: String!, $from: DateTime, $to: DateTime, $i: String!, $g: String) {
  logHistogram(query: $q, from: $from, to: $to, interval: $i, groupBy: $g) { start count group }
}"""
FACETS = """query($q: String!, $from: DateTime, $to: DateTime, $f: String!, $limit: Int!) {
  facets(query: $q, from: $from, to: $to, field: $f, limit: $limit) { value count }
}"""
COUNT = """query($q: String!, $from: DateTime, $to: DateTime) {
  logs(query: $q, from: $from, to: $to, limit: 0) { total }
}"""

Check = Callable[[dict[str, Any]], str]  # data -> "" when right, else what is wrong


@dataclass
class Case:
    name: str
    query: str
    variables: dict[str, Any]
    check: Check
    runs: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: int = 0
    first_problem: str = ""


def _sums(buckets: list[dict[str, Any]]) -> dict[str | None, int]:
    out: dict[str | None, int] = {}
    for b in buckets:
        out[b["group"]] = out.get(b["group"], 0) + b["count"]
    return out


def _expect(name: str, got: Any, want: Any) -> str:
    return "" if got == want else f"{name}: got {got!r}, expected {want!r}"


def build_cases(
    stats: WorkloadStats, window: dict[str, str], runs: int, slow_runs: int, gql: GraphQL
) -> list[Case]:
    levels = {lv: n for lv, n in stats.level_totals().items() if n}
    services: dict[str, int] = {}
    for (svc, _lv), n in stats.counts.items():
        services[svc] = services.get(svc, 0) + n
    warn_up = {svc: stats.at_least("WARN", svc) for svc in services if stats.at_least("WARN", svc)}
    top_services = sorted(services.items(), key=lambda kv: (-kv[1], kv[0]))[:10]

    def hist(g: str | None, query: str = "") -> dict[str, Any]:
        return {"q": query, **window, "i": "1m", "g": g}

    def facet(f: str, limit: int = 10) -> dict[str, Any]:
        return {"q": "", **window, "f": f, "limit": limit}

    def same_as_logs(key: str) -> Check:
        # each value's count must equal the total of `key=value`: postings vs the planner
        memo: dict[str, int] = {}

        def check(data: dict[str, Any]) -> str:
            for fv in data["facets"]:
                q = f'{key}="{fv["value"]}"'
                if q not in memo:
                    _ms, d, err = gql.run(COUNT, {"q": q, **window})
                    if err or d is None:
                        return f"{q}: {err}"
                    memo[q] = d["logs"]["total"]
                if memo[q] != fv["count"]:
                    return f"{q}: facet {fv['count']}, logs total {memo[q]}"
            return "" if data["facets"] else "no values"

        return check

    return [
        Case(
            "histogram 1m over 1h",
            HISTOGRAM,
            hist(None),
            lambda d: (
                _expect("sum", sum(b["count"] for b in d["logHistogram"]), stats.records)
                or _expect("buckets", len(d["logHistogram"]) <= 60, True)
            ),
            runs,
        ),
        Case(
            "histogram 1m, groupBy level",
            HISTOGRAM,
            hist("level"),
            lambda d: _expect("per level", _sums(d["logHistogram"]), levels),
            runs,
        ),
        Case(
            "histogram 1m, groupBy service",
            HISTOGRAM,
            hist("service"),
            lambda d: _expect("per service", _sums(d["logHistogram"]), services),
            runs,
        ),
        Case(
            "histogram 1m, level>=WARN by service",
            HISTOGRAM,
            hist("service", "level>=WARN"),
            lambda d: _expect("per service", _sums(d["logHistogram"]), warn_up),
            runs,
        ),
        Case(
            "facets service",
            FACETS,
            facet("service"),
            lambda d: _expect(
                "top 10", [(f["value"], f["count"]) for f in d["facets"]], top_services
            ),
            runs,
        ),
        Case(
            "facets level",
            FACETS,
            facet("level"),
            lambda d: _expect("levels", {f["value"]: f["count"] for f in d["facets"]}, levels),
            runs,
        ),
        Case(
            "facets attributes.http.status_code",
            FACETS,
            facet("attributes.http.status_code"),
            same_as_logs("attributes.http.status_code"),
            runs,
        ),
        Case(
            "facets attributes.region",
            FACETS,
            facet("attributes.region"),
            same_as_logs("attributes.region"),
            runs,
        ),
        # high cardinality: no postings in big segments, so the records are decoded
        Case(
            "facets attributes.user.id (unindexed)",
            FACETS,
            facet("attributes.user.id", 5),
            same_as_logs("attributes.user.id"),
            slow_runs,
        ),
    ]


def run_case(gql: GraphQL, case: Case, warmup: int) -> None:
    for i in range(warmup + case.runs):
        ms, data, err = gql.run(case.query, case.variables)
        if i < warmup:
            continue
        case.latencies_ms.append(ms)
        if err or data is None:
            case.errors += 1
            case.first_problem = case.first_problem or err
            continue
        problem = case.check(data)
        if problem:
            case.wrong += 1
            case.first_problem = case.first_problem or problem


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).isoformat()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=4, help="concurrent gRPC connections")
    p.add_argument("--batch", type=int, default=512, help="records per Export request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--span-minutes", type=float, default=50.0, help="timestamps cover N minutes (<= 55)"
    )
    p.add_argument("--runs", type=int, default=30, help="timed runs per query")
    p.add_argument("--slow-runs", type=int, default=5, help="timed runs of the unindexed facet")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per query first")
    p.add_argument("--grpc", metavar="HOST:PORT", help="OTLP/gRPC of a running, empty server")
    p.add_argument("--api", metavar="URL", help="its API base URL")
    p.add_argument("--server-arg", action="append", default=[], help="extra `otelog serve` arg")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    if (args.grpc is None) != (args.api is None):
        p.error("--grpc and --api go together")
    if not 0 < args.span_minutes <= 55:
        p.error("--span-minutes must be in (0, 55]: the queries cover one hour")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="otelog-aggbench-"))
    server: Server | None = None
    cases: list[Case] = []
    try:
        span_ns = int(args.span_minutes * MIN_NS)
        start_ns = time.time_ns() - span_ns
        wl = Workload(args.records, args.batch, args.seed, start_ns, span_ns)
        log(f"pre-encoding {args.records:,} records ...")
        t0 = time.perf_counter()
        bodies = list(wl.log_requests())
        log(f"encoded {len(bodies):,} requests in {time.perf_counter() - t0:.1f} s")
        items = [args.batch] * len(bodies)
        items[-1] = args.records - args.batch * (len(bodies) - 1)

        if args.grpc:
            server = Server(args.grpc, args.api.rstrip("/"), None, None)
            server.wait_ready(args.startup_timeout)
        else:
            server = Server.start(
                default_server_command(),
                work / "data",
                work / "otelog.log",
                args.server_arg,
                args.startup_timeout,
            )
        ingest = send_all(
            server.grpc_target,
            bodies,
            items,
            args.clients,
            LOGS_EXPORT,
            ExportLogsServiceResponse,
            lambda r: int(r.partial_success.rejected_log_records),
            server,
        )
        del bodies
        log(
            f"ingested {ingest.items:,} records in {ingest.wall_s:.1f} s, "
            f"errors {ingest.errors}, rejected {ingest.rejected}"
        )
        if server.pid is not None:
            _cpu, idle_s = wait_idle(server)
            log(f"server idle after {idle_s:.1f} s")

        # one hour on whole minutes holding every record (some arrive up to 2 s late)
        lo = (start_ns - 2 * MIN_NS) // MIN_NS * MIN_NS
        window = {"from": _iso(lo), "to": _iso(lo + 60 * MIN_NS)}
        gql = GraphQL(server.api_url)
        cases = build_cases(wl.stats, window, args.runs, args.slow_runs, gql)
        for case in cases:
            log(f"running {case.name} ({args.warmup} + {case.runs}) ...")
            run_case(gql, case, args.warmup)
        gql.close()
    finally:
        code = server.stop() if server is not None else None
        if args.keep_data or code:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report = {
        "records": args.records,
        "window": window,
        "queries": {
            c.name: {
                "runs": len(c.latencies_ms),
                "p50_ms": percentile(c.latencies_ms, 50),
                "p99_ms": percentile(c.latencies_ms, 99),
                "max_ms": max(c.latencies_ms, default=None),
                "errors": c.errors,
                "wrong": c.wrong,
                "problem": c.first_problem,
            }
            for c in cases
        },
        "ok": bool(cases) and all(c.errors == 0 and c.wrong == 0 for c in cases),
    }
    if not args.json:
        print(f"\n{args.records:,} records; window {window['from']} .. {window['to']}\n")
        print(f"{'query':40} {'runs':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  check")
        for name, q in report["queries"].items():
            status = "OK" if not q["errors"] and not q["wrong"] else f"FAIL {q['problem']}"
            print(
                f"{name:40} {q['runs']:>5} {q['p50_ms']:>9.1f} {q['p99_ms']:>9.1f} "
                f"{q['max_ms']:>9.1f}  {status}"
            )
        print()
    print(json.dumps(report, separators=(",", ":")))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
