"""The REST API on a real server: `POST /logs/ingest` and `GET /logs/search` answer with the
seed's shapes, share the engine with GraphQL, page by token, and refuse bad input with a
400 that names the field.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import OtelogProcess

S = 1_000_000_000
SEARCH_KEYS = {"logs", "total", "next_page_token"}
LOG_KEYS = {
    "log_id",
    "timestamp",
    "service",
    "level",
    "message",
    "trace_id",
    "span_id",
    "host",
    "attributes",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    p = OtelogProcess(tmp_path_factory.mktemp("rest") / "data").start()
    yield p
    p.stop()


def ingest(server: OtelogProcess, body: Any) -> httpx.Response:
    return httpx.post(server.api_url + "/logs/ingest", json=body, timeout=30)


def search(server: OtelogProcess, **params: Any) -> httpx.Response:
    return httpx.get(server.api_url + "/logs/search", params=params, timeout=30)


def token() -> str:
    """A word no other record holds, to find exactly the records of one test."""
    return "tok" + uuid.uuid4().hex[:12]


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, S)
    return f"{datetime.fromtimestamp(secs, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


# ---- ingest


def test_ingest_one_record_answers_202_with_its_id(server: OtelogProcess) -> None:
    word = token()
    r = ingest(server, {"service": "auth", "level": "ERROR", "message": f"login failed {word}"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "ACCEPTED"
    assert body["log_ids"] == [body["log_id"]]
    found = search(server, keywords=word).json()
    assert [x["log_id"] for x in found["logs"]] == [body["log_id"]]


def test_ingest_list_returns_ids_in_input_order(server: OtelogProcess) -> None:
    words = [token() for _ in range(6)]
    # services and hosts interleaved: the request groups them by resource, the answer
    # must still follow the input
    services = ["auth", "api", "auth", "billing", "api", "auth"]
    hosts = ["h1", "h2", "h1", "", "h2", "h3"]
    r = ingest(
        server,
        [
            {"service": s, "host": h or None, "message": f"m {w}", "level": "INFO"}
            for s, h, w in zip(services, hosts, words, strict=True)
        ],
    )
    assert r.status_code == 202, r.text
    ids = r.json()["log_ids"]
    assert r.json()["log_id"] == ids[0] and len(set(ids)) == 6
    for word, lid, svc, host in zip(words, ids, services, hosts, strict=True):
        (log,) = search(server, keywords=word).json()["logs"]
        assert (log["log_id"], log["service"], log["host"]) == (lid, svc, host or None)


def test_ingested_record_reads_back_with_every_field(server: OtelogProcess) -> None:
    word = token()
    ts = 1_795_000_000_123_456_789
    rec = {
        "service": "checkout",
        "trace_id": "5B8EFFF798038103D269B633813FC60C",
        "span_id": "eee19b7ec3c1b174",
        "level": "warning",
        "message": f"slow payment {word}",
        "timestamp": rfc3339(ts),
        "host": "node-7",
        "attributes": {
            "user": {"id": 42, "vip": True},
            "amount": 12.5,
            "currency": "EUR",
            "items": ["a", 2, False],
            "note": None,
        },
    }
    assert ingest(server, rec).status_code == 202
    (log,) = search(server, keywords=word, timestamp_from="30d").json()["logs"]
    assert set(log) == LOG_KEYS
    assert log["timestamp"] == rfc3339(ts)
    assert log["level"] == "WARN"
    assert log["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert log["span_id"] == "eee19b7ec3c1b174"
    assert (log["service"], log["host"], log["message"]) == ("checkout", "node-7", rec["message"])
    assert log["attributes"] == {
        "user": {"id": 42, "vip": True},
        "amount": 12.5,
        "currency": "EUR",
        "items": ["a", 2, False],
        "note": None,
    }
    # the attribute kinds are OTLP's: an int compares as a number, a nested map by path
    q = f"{word} AND attributes.user.id>=42 AND attributes.user.vip=true AND level=WARN"
    assert search(server, query=q, timestamp_from="30d").json()["total"] == 1
    # and GraphQL sees the same record
    data = server.data(
        "query($q: String!) { logs(query: $q) { records { logId severityText traceId } } }",
        {"q": word},
    )
    assert data["logs"]["records"] == [
        {"logId": log["log_id"], "severityText": "WARN", "traceId": log["trace_id"]}
    ]


@pytest.mark.parametrize(
    "stamp,expected",
    [
        ("2026-11-25T10:00:00Z", 1795600800 * S),
        ("2026-11-25T11:00:00.5+01:00", 1795600800 * S + S // 2),
        (1795600800123, 1795600800123 * 1_000_000),  # epoch ms
        (1795600800123456789, 1795600800123456789),  # epoch ns
        ("1795600800123", 1795600800123 * 1_000_000),  # digits in a string
    ],
)
def test_timestamp_forms(server: OtelogProcess, stamp: Any, expected: int) -> None:
    word = token()
    r = ingest(server, {"service": "ts", "message": word, "timestamp": stamp})
    assert r.status_code == 202, r.text
    (log,) = search(server, keywords=word, timestamp_from="30d").json()["logs"]
    assert log["timestamp"] == rfc3339(expected)


def test_missing_timestamp_and_level_mean_now_and_unspecified(server: OtelogProcess) -> None:
    word = token()
    before = time.time_ns()
    assert ingest(server, {"service": "ts", "message": word}).status_code == 202
    (log,) = search(server, keywords=word).json()["logs"]
    assert log["level"] == "UNSPECIFIED"
    stamp = datetime.fromisoformat(log["timestamp"].replace("Z", "+00:00")).timestamp()
    assert before / S - 1 <= stamp <= time.time() + 1


@pytest.mark.parametrize(
    "body,field",
    [
        ([], "body"),
        ("just a string", "body"),
        ({"message": "no service"}, "service"),
        ({"service": "", "message": "x"}, "service"),
        ({"service": "a"}, "message"),
        ({"service": "a", "message": 5}, "message"),
        ({"service": "a", "message": "x", "level": "LOUD"}, "level"),
        ({"service": "a", "message": "x", "level": 3}, "level"),
        ({"service": "a", "message": "x", "trace_id": "abc"}, "trace_id"),
        ({"service": "a", "message": "x", "span_id": "zz" * 8}, "span_id"),
        ({"service": "a", "message": "x", "timestamp": "yesterday"}, "timestamp"),
        ({"service": "a", "message": "x", "timestamp": 1.5}, "timestamp"),
        ({"service": "a", "message": "x", "timestamp": 123}, "timestamp"),  # 1970
        ({"service": "a", "message": "x", "timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),
        ({"service": "a", "message": "x", "attributes": [1]}, "attributes"),
        ({"service": "a", "message": "x", "attributes": {"n": 2**64}}, "attributes.n"),
        ({"service": "a", "message": "x", "levle": "INFO"}, "levle"),
        ([{"service": "a", "message": "x"}, {"service": "b"}], "[1].message"),
        ({"service": "a", "message": "x", "attributes": {"d": {"d": {"d": {}}}}}, None),
    ],
)
def test_bad_ingest_is_400_naming_the_field(
    server: OtelogProcess, body: Any, field: str | None
) -> None:
    r = ingest(server, body)
    if field is None:  # the control: nesting within the limit is fine
        assert r.status_code == 202, r.text
        return
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field), r.json()


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe",
        b'{"service": "a", "message": "x", "attributes": {"r": NaN}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"service": "a", "message": "x", "attributes": ' + b'{"a": ' * 40 + b"1" + b"}" * 41,
    ],
    ids=["truncated", "not utf-8", "NaN", "deep arrays", "deep attributes"],
)
def test_malformed_bodies_are_400(server: OtelogProcess, raw: bytes) -> None:
    r = httpx.post(server.api_url + "/logs/ingest", content=raw, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_ingest_only_takes_post(server: OtelogProcess) -> None:
    assert httpx.get(server.api_url + "/logs/ingest").status_code == 405


# ---- search


@pytest.fixture(scope="module")
def corpus(server: OtelogProcess) -> dict[str, Any]:
    """25 records of one word, a minute apart, newest first in `ids`."""
    word = token()
    now = time.time_ns()
    levels = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
    records = [
        {
            "service": "auth" if i % 2 else "api",
            "level": levels[i % 5],
            "message": f"{word} event {i} {levels[i % 5].lower()}",
            "timestamp": now - i * 60 * S,
            "attributes": {"i": i},
        }
        for i in range(25)
    ]
    ids = ingest(server, records).json()["log_ids"]
    return {"word": word, "now": now, "records": records, "ids": ids}


def test_search_answers_with_the_seed_shape(server: OtelogProcess, corpus: dict[str, Any]) -> None:
    r = search(server, keywords=corpus["word"], limit=3)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == SEARCH_KEYS
    assert body["total"] == 25
    assert [x["log_id"] for x in body["logs"]] == corpus["ids"][:3]  # newest first
    assert all(set(x) == LOG_KEYS for x in body["logs"])


def test_search_pages_by_token(server: OtelogProcess, corpus: dict[str, Any]) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"keywords": corpus["word"], "limit": 10, "timestamp_from": "1h"}
    pages = 0
    while True:
        body = search(server, **params).json()
        assert body["total"] == 25
        seen += [x["log_id"] for x in body["logs"]]
        pages += 1
        if body["next_page_token"] is None:
            break
        params["page_token"] = body["next_page_token"]
    assert pages == 3
    assert seen == corpus["ids"]


@pytest.mark.parametrize(
    "params,pick",
    [
        ({"service": "auth"}, lambda i, r: r["service"] == "auth"),
        ({"level": "WARN"}, lambda i, r: r["level"] in ("WARN", "ERROR", "FATAL")),
        ({"level": "error", "service": "api"}, lambda i, r: i % 5 >= 3 and r["service"] == "api"),
        ({"query": "attributes.i<5 OR attributes.i>=20"}, lambda i, r: i < 5 or i >= 20),
        ({"timestamp_to": "10m30s"}, lambda i, r: i > 10),
        ({"keywords": "event fatal"}, lambda i, r: i % 5 == 4),
    ],
    ids=str,
)
def test_search_filters(
    server: OtelogProcess, corpus: dict[str, Any], params: Any, pick: Any
) -> None:
    if "keywords" in params:
        params = {**params, "keywords": f"{corpus['word']} {params['keywords']}"}
    else:
        params = {**params, "keywords": corpus["word"]}
    body = search(server, limit=100, **params).json()
    want = [
        lid
        for i, (r, lid) in enumerate(zip(corpus["records"], corpus["ids"], strict=True))
        if pick(i, r)
    ]
    assert [x["log_id"] for x in body["logs"]] == want
    assert body["total"] == len(want)


def test_search_absolute_times(server: OtelogProcess, corpus: dict[str, Any]) -> None:
    now = corpus["now"]
    body = search(
        server,
        keywords=corpus["word"],
        timestamp_from=rfc3339(now - 9 * 60 * S),
        timestamp_to=rfc3339(now - 2 * 60 * S),
    ).json()
    # from is inclusive, to exclusive: records 3..9
    assert [x["log_id"] for x in body["logs"]] == corpus["ids"][3:10]


def test_keywords_with_query_syntax_are_plain_text(server: OtelogProcess) -> None:
    word = token()
    ingest(server, {"service": "kw", "message": f'{word} (a=b) AND -x "q"', "level": "INFO"})
    for keywords in (f"{word} (a=b)", f"{word} AND", f"{word} -x", f'{word} "', f'{word} "q"'):
        r = search(server, keywords=keywords)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == 1, keywords


@pytest.mark.parametrize(
    "params,field",
    [
        ({"level": "LOUD"}, "level"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"timestamp_from": "yesterday"}, "timestamp_from"),
        ({"timestamp_to": "2026-13-01T00:00:00Z"}, "timestamp_to"),
        ({"query": "service=("}, "query"),
        ({"page_token": "garbage"}, "invalid page_token"),
        ({"sevice": "auth"}, "sevice"),
    ],
)
def test_bad_search_is_400_naming_the_parameter(
    server: OtelogProcess, params: dict[str, str], field: str
) -> None:
    r = search(server, **params)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field), r.json()


def test_a_page_token_of_another_search_is_refused(
    server: OtelogProcess, corpus: dict[str, Any]
) -> None:
    tok = search(server, keywords=corpus["word"], limit=1).json()["next_page_token"]
    r = search(server, keywords=corpus["word"], service="auth", page_token=tok)
    assert r.status_code == 400
    assert "different query" in r.json()["error"]
