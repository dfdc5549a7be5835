"""The data lifecycle through a running server: OTLP in, a real S3 server behind it,
GraphQL and REST out. Records are stamped days in the past, so they are past their hot
period when they arrive and the lifecycle moves them while the test watches."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import OtelogProcess
from s3server import ACCESS_KEY, SECRET_KEY, S3Server
from test_tail import TAIL, Sender, gql_client

DAY = 86_400 * 10**9
SECRET = "gdpr-subject-7731"

LOGS = """query($q: String!) { logs(query: $q, limit: 1000) {
  total records { logId body service attributes } } }"""
DELETE = """mutation($q: String!) { deleteLogs(query: $q) { id state matched erased query } }"""
REQUEST = """query($id: ID!) { deletionRequest(id: $id) {
  id state matched erased query querySha256 erasedAt overdue receipt error } }"""


def _server(factory: Any, s3: S3Server, bucket: str) -> OtelogProcess:
    srv: OtelogProcess = factory(
        extra_args=[
            "--s3-endpoint", s3.endpoint, "--s3-access-key", ACCESS_KEY,
            "--s3-secret-key", SECRET_KEY, "--hot-days", "2", "--cold-days", "30",
            "--cold-destination", f"s3://{bucket}/cold", "--lifecycle-interval-seconds", "0.3",
            "--gc-grace-seconds", "0.2", "--seal-interval-seconds", "0.1",
        ]
    )  # fmt: skip
    return srv


def _wait(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _metric(srv: OtelogProcess, name: str) -> float:
    for line in httpx.get(srv.api_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def _logs(srv: OtelogProcess, q: str) -> tuple[int, list[str]]:
    page = srv.data(LOGS, {"q": q})["logs"]
    return page["total"], sorted(r["logId"] for r in page["records"])


def test_old_records_move_to_s3_and_stay_searchable(
    otelog_factory: Any, s3_server: S3Server
) -> None:
    srv = _server(otelog_factory, s3_server, "e2e-tier")
    sender = Sender(srv)
    try:
        old = time.time_ns() - 5 * DAY
        for k in range(4):
            sender.send(
                "billing", [f"invoice {k}-{i} paid" for i in range(50)], "INFO", ts_ns=old + k
            )
        sender.send("billing", ["invoice fresh paid"], "ERROR")
        cold = _wait(lambda: _metric(srv, "otelog_cold_records") >= 200, "records in S3")
        assert cold
        keys = [o.object_name for o in s3_server.client().list_objects("e2e-tier", recursive=True)]
        assert keys and all(str(k).startswith("cold/default/") for k in keys)
        assert _logs(srv, "service=billing")[0] == 201
        assert _logs(srv, "invoice AND paid AND level=INFO")[0] == 200
        assert _logs(srv, '"invoice 2-17 paid"')[0] == 1
        # those answers came from the objects: range GETs, through the local cache
        assert _metric(srv, "otelog_cold_fetches_total") > 0
        assert 0 < _metric(srv, "otelog_cold_cache_bytes") <= _metric(srv, "otelog_cold_bytes")
        # and after a restart, from the catalog
        srv.stop()
        srv.start()
        assert _logs(srv, "service=billing")[0] == 201
        assert _metric(srv, "otelog_cold_records") >= 200
    finally:
        sender.close()


def test_delete_logs_hides_at_once_and_is_erased_with_a_receipt(
    otelog_factory: Any, s3_server: S3Server
) -> None:
    srv = _server(otelog_factory, s3_server, "e2e-gdpr")
    sender = Sender(srv)
    try:
        old = time.time_ns() - 5 * DAY
        for user in (SECRET, "someone-else"):
            sender.send("shop", [f"order by {user}" for _ in range(20)], "INFO", ts_ns=old,
                        attributes={"user.id": user})  # fmt: skip
        _wait(lambda: _metric(srv, "otelog_cold_records") >= 40, "records in S3")
        for user in (SECRET, "someone-else"):
            sender.send("shop", [f"cart of {user}" for _ in range(5)], "WARN",
                        attributes={"user.id": user})  # fmt: skip
        q = f"attributes.user.id={SECRET}"
        total, ids = _logs(srv, q)
        assert total == 25
        d = srv.data(DELETE, {"q": q})["deleteLogs"]
        assert d["state"] == "PENDING" and d["matched"] == 25
        # hidden at once from GraphQL, REST, full text, and a tail resuming from the start
        assert _logs(srv, q)[0] == 0
        assert _logs(srv, SECRET)[0] == 0
        assert _logs(srv, "service=shop")[0] == 25
        r = httpx.get(
            srv.api_url + "/logs/search", params={"query": "service=shop"}, timeout=10
        ).json()
        assert r["total"] == 25 and all(SECRET not in x["message"] for x in r["logs"])

        async def tail() -> list[str]:
            got: list[str] = []
            async with gql_client(srv) as gql:
                await gql.subscribe(TAIL, {"q": "service=shop", "after": "0"})
                while True:
                    try:
                        got.append((await gql.record(timeout=1.5))["body"])
                    except TimeoutError:
                        return got

        bodies = asyncio.run(tail())
        assert len(bodies) == 25 and not any(SECRET in b for b in bodies)
        # and from exports
        job = httpx.post(
            srv.api_url + "/logs/export",
            json={"query": "service=shop", "format": "JSONL", "destination": "."},
            timeout=30,
        ).json()
        done_job = _wait(
            lambda: (
                j := httpx.get(f"{srv.api_url}/logs/export/{job['job_id']}", timeout=10).json()
            )["status"] == "SUCCEEDED" and j,
            "the export",
        )  # fmt: skip
        lines = Path(done_job["location"]).read_text().splitlines()
        assert len(lines) == 25 and not any(SECRET in line for line in lines)
        # erased in the background, with a receipt
        done = _wait(
            lambda: (
                (x := srv.data(REQUEST, {"id": d["id"]})["deletionRequest"])["state"] == "ERASED"
                and x
            ),
            "the erasure",
        )
        assert done["erased"] == 25 and done["erasedAt"] and not done["overdue"]
        assert done["query"] is None and len(done["querySha256"]) == 64
        rewritten = done["receipt"]["rewritten"]
        assert any(e["object"].startswith("s3://e2e-gdpr/") for e in rewritten)
        assert sum(e.get("records", 0) for e in rewritten) == 25
        assert _metric(srv, "otelog_deletion_requests_open") == 0
        # no object in the bucket mentions the subject any more (zstd inside: decompress)
        from test_lifecycle import _plain

        c = s3_server.client()
        for o in c.list_objects("e2e-gdpr", recursive=True):
            data = c.get_object("e2e-gdpr", str(o.object_name)).read()
            assert not any(SECRET.encode() in p for p in _plain(data))
        assert _logs(srv, "service=shop")[0] == 25
    finally:
        sender.close()


@pytest.mark.parametrize(
    "query, code",
    [("", "BAD_ARGUMENT"), ("level=", "QUERY_SYNTAX"), ("(a", "QUERY_SYNTAX")],
)
def test_bad_deletions_and_policies_are_graphql_errors(
    otelog: OtelogProcess, query: str, code: str
) -> None:
    body = otelog.graphql(DELETE, {"q": query})
    assert body["errors"][0]["extensions"]["code"] == code
    bad = otelog.graphql(
        'mutation { setRetentionPolicy(name: "x", hotDays: -1, coldDays: 1) { name } }'
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_ARGUMENT"


def test_retention_policies_are_set_listed_and_removed(otelog: OtelogProcess) -> None:
    p = otelog.data(
        'mutation { setRetentionPolicy(name: "errors-long", query: "level>=ERROR", '
        "hotDays: 30, coldDays: 700, priority: 5) { name query hotDays coldDays priority } }"
    )["setRetentionPolicy"]
    assert p == {"name": "errors-long", "query": "level>=ERROR", "hotDays": 30.0,
                 "coldDays": 700.0, "priority": 5}  # fmt: skip
    names = [x["name"] for x in otelog.data("{ retentionPolicies { name } }")["retentionPolicies"]]
    assert names == ["errors-long", "default"]
    assert otelog.data('mutation { deleteRetentionPolicy(name: "errors-long") }')[
        "deleteRetentionPolicy"
    ]
    names = [x["name"] for x in otelog.data("{ retentionPolicies { name } }")["retentionPolicies"]]
    assert names == ["default"]


def test_s3_down_fails_cold_queries_clearly_and_never_ingestion(
    otelog_factory: Any, tmp_path: Any
) -> None:
    s3 = S3Server(tmp_path / "s3-outage").start()
    srv = _server(otelog_factory, s3, "e2e-outage")
    sender = Sender(srv)
    try:
        sender.send(
            "ledger", [f"entry {i}" for i in range(30)], "INFO", ts_ns=time.time_ns() - 5 * DAY
        )
        _wait(lambda: _metric(srv, "otelog_cold_records") >= 30, "records in S3")
        s3.stop()
        errors_before = _metric(srv, "otelog_lifecycle_errors_total")
        body = srv.graphql(LOGS, {"q": "service=ledger"})
        err = body["errors"][0]
        assert err["extensions"]["code"] == "COLD_STORAGE_UNAVAILABLE"
        assert "cold storage unavailable" in err["message"] and "Traceback" not in err["message"]
        # a tail resuming from the start must read the cold records: a clear error too

        async def resume() -> dict[str, Any]:
            async with gql_client(srv) as gql:
                await gql.subscribe(TAIL, {"q": "service=ledger", "after": "0"})
                return await gql.message()

        msg = asyncio.run(resume())
        # (the operation had started: graphql-transport-ws sends the error as `next`)
        assert msg["payload"]["errors"][0]["extensions"]["code"] == "COLD_STORAGE_UNAVAILABLE"
        r = httpx.get(srv.api_url + "/logs/search", params={"query": "service=ledger"}, timeout=30)
        assert r.status_code == 503 and "cold storage" in r.json()["error"]
        # ingestion goes on, and recent data answers (its time range reaches no cold data)
        sender.send("ledger", ["while s3 is down"], "ERROR")
        recent = srv.data(
            'query { logs(query: "service=ledger", since: "1h") { total records { body } } }'
        )["logs"]
        assert recent["total"] == 1 and recent["records"][0]["body"] == "while s3 is down"
        sender.send("ledger", ["also old"], "INFO", ts_ns=time.time_ns() - 5 * DAY)
        _wait(lambda: _metric(srv, "otelog_lifecycle_errors_total") > errors_before, "an error")
        s3.start()
        _wait(lambda: _metric(srv, "otelog_cold_records") >= 31, "the retried move")
        assert _logs(srv, "service=ledger")[0] == 32
    finally:
        sender.close()
        s3.stop()


def test_the_retention_file_is_applied_at_start(otelog_factory: Any, tmp_path: Path) -> None:
    policies = tmp_path / "policies.toml"
    policies.write_text(
        '[[policy]]\nname = "errors"\nquery = "level>=ERROR"\nhot_days = 30\n'
        "cold_days = 700\npriority = 5\n"
    )
    srv: OtelogProcess = otelog_factory(extra_args=["--retention-file", str(policies)])
    got = srv.data("{ retentionPolicies { name query hotDays coldDays priority } }")
    assert got["retentionPolicies"] == [
        {"name": "errors", "query": "level>=ERROR", "hotDays": 30.0, "coldDays": 700.0,
         "priority": 5},
        {"name": "default", "query": "", "hotDays": 7.0, "coldDays": 365.0, "priority": 0},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, says",
    [
        (["--retention-file", "{dir}/missing.toml"], "missing.toml"),
        (["--retention-file", "{dir}/bad.toml"], "position"),
        (["--cold-destination", "bucket-without-scheme"], "s3://bucket/prefix"),
        (["--hot-days", "-1"], "hot_days"),
    ],
)
def test_a_bad_lifecycle_setting_stops_the_start_with_a_message(
    tmp_path: Path, args: list[str], says: str
) -> None:
    from test_durability import serve_expecting_refusal

    (tmp_path / "bad.toml").write_text('[[policy]]\nname = "x"\nquery = "level="\n')
    extra = [a.replace("{dir}", str(tmp_path)) for a in args]
    code, output = serve_expecting_refusal(tmp_path / "data", tmp_path / "out.log", extra)
    assert code == 2, output
    assert says in output and "Traceback" not in output, output
