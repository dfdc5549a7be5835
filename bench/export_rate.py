"""Export rate: records/s and MB/s of export jobs to S3, with the exported ids checked.

    python bench/export_rate.py                               # 1,000,000 records
    python bench/export_rate.py --records 200000 --formats csv,jsonl,parquet

Starts a real S3 server (`weed mini`, tests/s3server.py) and an otelog server pointed at
it, ingests the deterministic workload of `workload.py` over OTLP/gRPC (reusing
`ingest_query.py`: pre-encoding, server start, concurrent senders), waits until the server
is idle (everything sealed and merged), then runs one export job per format of
`--query` (default: every record) to `s3://bench/<format>/`, polling `exportJob` twice a
second. Figures per format: wall time from `startExport` to SUCCEEDED, records/s, MB/s of
the stored object, and the server's CPU seconds meanwhile. The check: the log ids of the
object (read back with the minio client) equal, in order, the log ids the `logs` search
pages through for the same query, oldest first. Progress goes to stderr, a table and one
JSON line to stdout. Exits 1 if an export failed or a check did.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is not a package, but a script's own directory is on sys.path; tests/ has the
# S3 server the tests use
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ingest_query import (  # noqa: E402
    LOGS_EXPORT,
    GraphQL,
    Server,
    default_server_command,
    log,
    send_all,
    wait_idle,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceResponse,
)
from s3server import ACCESS_KEY, SECRET_KEY, S3Server  # noqa: E402
from workload import Workload  # noqa: E402

BUCKET = "bench"
START = """mutation($q: String!, $f: ExportFormat!, $d: String!) {
  startExport(query: $q, format: $f, destination: $d) { id }
}"""
JOB = """query($id: ID!) {
  exportJob(id: $id) { state total written bytes error location }
}"""
IDS = """query($q: String!, $t: String) {
  logs(query: $q, limit: 1000, pageToken: $t) { nextPageToken records { logId } }
}"""


def query_ids(gql: GraphQL, query: str) -> list[str]:
    """The log ids of every match, oldest first, paged through the search."""
    ids: list[str] = []
    token = None
    while True:
        _ms, data, err = gql.run(IDS, {"q": query, "t": token})
        if err or data is None:
            raise RuntimeError(f"logs: {err}")
        ids += [r["logId"] for r in data["logs"]["records"]]
        token = data["logs"]["nextPageToken"]
        if token is None:
            return ids[::-1]


def object_ids(s3: S3Server, location: str, fmt: str, scratch: Path) -> list[str]:
    """The log ids of an exported object, in its order (downloaded to `scratch`)."""
    path = scratch / "object"
    s3.client().fget_object(BUCKET, location.removeprefix(f"s3://{BUCKET}/"), str(path))
    try:
        if fmt == "PARQUET":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=["log_id"])
            return [str(x) for x in table.column("log_id").to_pylist()]
        with open(path, encoding="utf-8", newline="") as f:
            if fmt == "CSV":
                return [row["log_id"] for row in csv.DictReader(f)]
            return [json.loads(line)["log_id"] for line in f]
    finally:
        path.unlink(missing_ok=True)


def run_export(gql: GraphQL, server: Server, query: str, fmt: str, poll_s: float) -> dict[str, Any]:
    cpu0 = server.cpu_seconds()
    t0 = time.perf_counter()
    _ms, data, err = gql.run(START, {"q": query, "f": fmt, "d": f"s3://{BUCKET}/{fmt.lower()}/"})
    if err or data is None:
        raise RuntimeError(f"startExport: {err}")
    job_id = data["startExport"]["id"]
    last = 0.0
    while True:
        time.sleep(poll_s)
        _ms, data, err = gql.run(JOB, {"id": job_id})
        if err or data is None:
            raise RuntimeError(f"exportJob: {err}")
        job = data["exportJob"]
        if job["state"] != "RUNNING":
            break
        now = time.perf_counter()
        if now - last >= 5 and job["total"]:
            last = now
            log(
                f"  {fmt}: {job['written']:,}/{job['total']:,} records, {job['bytes'] / 1e6:.0f} MB"
            )
    wall = time.perf_counter() - t0
    cpu1 = server.cpu_seconds()
    return {
        "id": job_id,
        "state": job["state"],
        "error": job["error"],
        "location": job["location"],
        "records": job["written"],
        "total": job["total"],
        "bytes": int(job["bytes"]),
        "seconds": wall,
        "records_per_s": job["written"] / wall,
        "mb_per_s": job["bytes"] / wall / 1e6,
        "server_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=4, help="concurrent gRPC connections")
    p.add_argument("--batch", type=int, default=512, help="records per Export request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--query", default="", help="the query exported (default: everything)")
    p.add_argument("--formats", default="csv,jsonl", help="comma-separated: csv,jsonl,parquet")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between exportJob polls")
    p.add_argument("--no-check", action="store_true", help="skip the id check")
    p.add_argument("--server-arg", action="append", default=[], help="extra `otelog serve` arg")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    args.formats = [f.strip().upper() for f in args.formats.split(",") if f.strip()]
    bad = set(args.formats) - {"CSV", "JSONL", "PARQUET"}
    if bad:
        p.error(f"unknown formats {sorted(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="otelog-exportbench-"))
    s3: S3Server | None = None
    server: Server | None = None
    results: dict[str, dict[str, Any]] = {}
    code = None
    try:
        span_ns = 30 * 60 * 10**9
        start_ns = time.time_ns() - span_ns
        wl = Workload(args.records, args.batch, args.seed, start_ns, span_ns)
        log(f"pre-encoding {args.records:,} records ...")
        bodies = list(wl.log_requests())
        items = [args.batch] * len(bodies)
        items[-1] = args.records - args.batch * (len(bodies) - 1)
        log("starting weed mini (S3) ...")
        s3 = S3Server(work / "s3").start()
        server = Server.start(
            default_server_command(),
            work / "data",
            work / "otelog.log",
            [
                *("--s3-endpoint", s3.endpoint),
                *("--s3-access-key", ACCESS_KEY),
                *("--s3-secret-key", SECRET_KEY),
                *args.server_arg,
            ],
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
            f"ingested {ingest.items:,} records in {ingest.wall_s:.1f} s, errors {ingest.errors}, "
            f"rejected {ingest.rejected:,} (sampled under load: the export covers what is stored)"
        )
        _cpu, idle_s = wait_idle(server)
        log(f"server idle after {idle_s:.1f} s")
        gql = GraphQL(server.api_url)
        want: list[str] | None = None
        if not args.no_check:
            t0 = time.perf_counter()
            want = query_ids(gql, args.query)
            log(f"{len(want):,} ids paged from the search in {time.perf_counter() - t0:.1f} s")
        for fmt in args.formats:
            log(f"exporting as {fmt} ...")
            res = run_export(gql, server, args.query, fmt, args.poll)
            if res["state"] == "SUCCEEDED" and want is not None:
                got = object_ids(s3, res["location"], fmt, work)
                res["check"] = (
                    "OK"
                    if got == want
                    else (
                        f"FAIL: {len(got):,} ids exported, {len(want):,} searched, "
                        f"{len(set(got) ^ set(want)):,} differ"
                        + ("" if set(got) != set(want) else " (same set, other order)")
                    )
                )
            else:
                res["check"] = "skipped" if want is None else f"FAIL: {res['error']}"
            results[fmt] = res
            log(f"  {fmt}: {res['state']} in {res['seconds']:.1f} s, check {res['check']}")
        gql.close()
    finally:
        if server is not None:
            code = server.stop()
        if s3 is not None:
            s3.stop()
        if args.keep_data or code:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ok = bool(results) and all(
        r["state"] == "SUCCEEDED" and r["check"] in ("OK", "skipped") for r in results.values()
    )
    if not args.json:
        print(f"\n{args.records:,} records; query {args.query!r}\n")
        print(
            f"{'format':8} {'records':>10} {'seconds':>8} {'records/s':>10} {'MB':>8} "
            f"{'MB/s':>7} {'cpu s':>7}  check"
        )
        for fmt, r in results.items():
            cpu = f"{r['server_cpu_s']:.1f}" if r["server_cpu_s"] is not None else "-"
            print(
                f"{fmt:8} {r['records']:>10,} {r['seconds']:>8.1f} {r['records_per_s']:>10,.0f} "
                f"{r['bytes'] / 1e6:>8.1f} {r['mb_per_s']:>7.1f} {cpu:>7}  {r['check']}"
            )
        print()
    print(json.dumps({"records": args.records, "query": args.query, "exports": results, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
