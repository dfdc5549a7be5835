"""Load shedding and rate limiting as pure logic: the sampler, re-encoding, the token
buckets and the admission rules, without a server."""

from __future__ import annotations

import os
import random
import time
import zlib
from collections import Counter

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelog.errors import Overloaded, PayloadTooLarge
from otelog.ingest.limits import (
    ByteBudget,
    Hold,
    ServiceRateLimits,
    TokenBucket,
    parse_overrides,
)
from otelog.ingest.shedding import (
    FULL,
    IngestControl,
    RateLimited,
    ShedPolicy,
    encode_logs_request,
    sample,
    take_rows,
)
from otelog.model import Level, LogBatch
from otelog.receiver.decode import count_services, decode_logs
from otelog.receiver.errors import grpc_status, http_status

NOW = time.time_ns()
SEVERITY = {
    Level.UNSPECIFIED: 0,
    Level.TRACE: 1,
    Level.DEBUG: 5,
    Level.INFO: 9,
    Level.WARN: 13,
    Level.ERROR: 17,
    Level.FATAL: 21,
}

Row = tuple[str, Level, bytes, str]  # service, level, trace id, body


def request(rows: list[Row], scopes: int = 1) -> bytes:
    """An ExportLogsServiceRequest with one ResourceLogs per run of a service."""
    req = ExportLogsServiceRequest()
    for n, (service, level, tid, body) in enumerate(rows):
        rls = req.resource_logs
        if not rls or rls[-1].resource.attributes[0].value.string_value != service:
            rl = rls.add()
            rl.resource.CopyFrom(
                Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]
                )
            )
            for s in range(scopes):
                rl.scope_logs.add(scope=InstrumentationScope(name=f"scope-{s}"))
        records = rls[-1].scope_logs[n % scopes].log_records
        # every field a function of the row alone: the same row encodes the same anywhere
        rec = records.add(
            time_unix_nano=NOW - 10**9 + zlib.crc32(body.encode()) % 10**9,
            severity_number=SEVERITY[level],  # type: ignore[arg-type]
            body=AnyValue(string_value=body),
            trace_id=tid,
            span_id=tid[:8] if tid else b"",
        )
        rec.attributes.add(key="len", value=AnyValue(int_value=len(body)))
    return req.SerializeToString()


def batch_of(rows: list[Row], scopes: int = 1) -> tuple[LogBatch, bytes]:
    raw = request(rows, scopes)
    b, _ = decode_logs(raw, NOW)
    return b, raw


def thresholds_at(pressure: float, b: LogBatch, policy: ShedPolicy | None = None) -> list:
    t = (policy or ShedPolicy()).thresholds(pressure)
    return [t] * len(b.resources)


# ---- the sampler


def test_no_pressure_keeps_everything_without_a_pass_over_the_rows() -> None:
    b, _ = batch_of([("a", Level.DEBUG, b"", f"r{i}") for i in range(100)])
    rows, dropped = sample(b, thresholds_at(0.0, b))
    assert rows is None and not dropped


@pytest.mark.parametrize("pressure", [0.5, 0.75, 1.0, 5.0])
def test_warn_error_fatal_are_never_sampled_away(pressure: float) -> None:
    policy = ShedPolicy(debug_keep=0.0, info_keep=0.0)
    rows_in: list[Row] = [
        ("a", lv, os.urandom(16) if i % 2 else b"", f"r{i}")
        for i in range(300)
        for lv in (Level.WARN, Level.ERROR, Level.FATAL)
    ]
    b, _ = batch_of(rows_in)
    rows, dropped = sample(b, thresholds_at(pressure, b, policy))
    assert rows is None and not dropped


def test_thresholds_follow_the_pressure_stages() -> None:
    p = ShedPolicy(debug_at=0.5, info_at=0.75, debug_keep=0.1, info_keep=0.5)
    assert p.thresholds(0.49) == (FULL,) * 7
    mid = p.thresholds(0.5)
    assert mid[Level.TRACE] == mid[Level.DEBUG] == int(0.1 * FULL)
    assert mid[Level.INFO] == mid[Level.UNSPECIFIED] == FULL
    high = p.thresholds(0.75)
    assert high[Level.INFO] == high[Level.UNSPECIFIED] == int(0.5 * FULL)
    assert high[Level.WARN] == high[Level.ERROR] == high[Level.FATAL] == FULL


def test_policy_rejects_thresholds_out_of_order() -> None:
    with pytest.raises(ValueError):
        ShedPolicy(debug_at=0.8, info_at=0.5)
    with pytest.raises(ValueError):
        ShedPolicy(info_keep=1.5)


def test_a_trace_keeps_or_loses_its_low_severity_records_together() -> None:
    rng = random.Random(7)
    traces = [rng.randbytes(16) for _ in range(400)]
    rows_in: list[Row] = []
    for i in range(4000):
        tid = traces[rng.randrange(len(traces))]
        rows_in.append(("svc", rng.choice((Level.DEBUG, Level.INFO, Level.TRACE)), tid, f"m{i}"))
    b, _ = batch_of(rows_in)
    rows, _ = sample(b, thresholds_at(1.0, b))
    assert rows is not None
    kept = set(rows)
    fate: dict[tuple[bytes, int], set[bool]] = {}
    for i in range(len(b)):
        lv = b.level[i] if b.level[i] != Level.TRACE else Level.DEBUG  # same keep fraction
        fate.setdefault((b.trace_id[i], lv), set()).add(i in kept)
    assert all(len(v) == 1 for v in fate.values()), "a trace was split"
    # one hash for every level: a trace whose DEBUG records survive keeps its INFO ones
    for tid in traces:
        if fate.get((tid, Level.DEBUG)) == {True} and (tid, Level.INFO) in fate:
            assert fate[tid, Level.INFO] == {True}


def test_sampling_is_deterministic_across_requests_and_batches() -> None:
    rng = random.Random(3)
    rows_in: list[Row] = [
        ("svc", Level.DEBUG, rng.randbytes(16) if i % 3 else b"", f"body {i}") for i in range(2000)
    ]
    b1, _ = batch_of(rows_in)
    b2, _ = batch_of(list(reversed(rows_in)))
    r1, _ = sample(b1, thresholds_at(1.0, b1))
    r2, _ = sample(b2, thresholds_at(1.0, b2))
    assert r1 is not None and r2 is not None
    kept1 = {b1.body[i] for i in r1}
    kept2 = {b2.body[i] for i in r2}
    assert kept1 == kept2
    assert sample(b1, thresholds_at(1.0, b1))[0] == r1


@pytest.mark.parametrize("ids", ["random", "sequential", "none"])
@pytest.mark.parametrize(
    ("level", "keep"), [(Level.DEBUG, 0.1), (Level.INFO, 0.5)], ids=["DEBUG", "INFO"]
)
def test_keep_fraction_over_many_traces_is_exact_within_tolerance(
    ids: str, level: Level, keep: float
) -> None:
    n = 20_000
    rng = random.Random(11)
    if ids == "random":
        tids = [rng.randbytes(16) for _ in range(n)]
    elif ids == "sequential":
        tids = [(10**20 + i).to_bytes(16, "big") for i in range(n)]
    else:
        tids = [b""] * n
    b, _ = batch_of([("svc", level, tids[i], f"record {i} {rng.random()}") for i in range(n)])
    rows, dropped = sample(b, thresholds_at(1.0, b))
    assert rows is not None
    share = len(rows) / n
    # binomial: 4 sigma is 0.0085 at 10%, 0.014 at 50% for 20k draws
    assert abs(share - keep) < 4 * (keep * (1 - keep) / n) ** 0.5, share
    assert sum(dropped.values()) == n - len(rows)


# ---- re-encoding without the sampled records


@pytest.mark.parametrize("scopes", [1, 3])
def test_re_encoded_request_decodes_to_exactly_the_kept_rows(scopes: int) -> None:
    rng = random.Random(5)
    rows_in: list[Row] = [
        (
            f"svc-{i // 50}",
            rng.choice(list(Level)),
            rng.randbytes(16) if i % 4 else b"",
            f"line {i}",
        )
        for i in range(500)
    ]
    b, _ = batch_of(rows_in, scopes)
    b.structured = [3, 10, 499]  # rows with non-string bodies must follow their rows
    rows, _ = sample(b, thresholds_at(1.0, b))
    assert rows is not None and 0 < len(rows) < len(b)
    kept = take_rows(b, rows)
    again, d = decode_logs(encode_logs_request(kept), NOW)
    assert d.rejected == 0
    for col in ("ts", "level", "trace_id", "span_id", "body", "attrs", "rec"):
        assert getattr(again, col) == getattr(kept, col), col
    assert [again.resources[r].service for r in again.res] == [
        kept.resources[r].service for r in kept.res
    ]
    assert [again.resources[r].scope_pb for r in again.res] == [
        kept.resources[r].scope_pb for r in kept.res
    ]
    assert kept.structured == [n for n, old in enumerate(rows) if old in (3, 10, 499)]


def test_structured_bodies_survive_re_encoding() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value="s"))
    sl = rl.scope_logs.add()
    sl.log_records.add(time_unix_nano=NOW - 5, severity_number=5, body=AnyValue(string_value="x"))
    sl.log_records.add(
        time_unix_nano=NOW - 4,
        severity_number=17,
        body=AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(int_value=1))])
        ),
    )
    b, _ = decode_logs(req.SerializeToString(), NOW)
    kept = take_rows(b, [1])
    again, _ = decode_logs(encode_logs_request(kept), NOW)
    assert again.structured == kept.structured == [0]
    assert again.body == kept.body


def test_count_services_matches_the_decoded_rows() -> None:
    b, raw = batch_of([("a", Level.INFO, b"", "x")] * 3 + [("b", Level.INFO, b"", "y")] * 2, 2)
    lite, counts = count_services(raw)
    assert counts == {"a": 3, "b": 2}
    again, _ = decode_logs(raw, NOW, lite=lite)
    assert again.body == b.body


# ---- the byte budget


def test_budget_refuses_what_does_not_fit_and_releases_on_exit() -> None:
    queued = [0]
    budget = ByteBudget(1000, lambda: queued[0])
    with budget.hold(600) as h:
        assert budget.in_flight == 600
        with pytest.raises(Overloaded):
            budget.hold(500)
        h.resize(100)
        with budget.hold(500):
            assert budget.in_flight == 600
    assert budget.in_flight == 0
    queued[0] = 900
    with pytest.raises(Overloaded):
        budget.hold(200)


def test_a_request_larger_than_the_whole_budget_is_permanent_not_retryable() -> None:
    budget = ByteBudget(1000, lambda: 0)
    with pytest.raises(PayloadTooLarge):
        budget.hold(1001)


def test_budget_refuses_with_shutting_down_once_closing() -> None:
    budget = ByteBudget(1000, lambda: 0)
    budget.closing = True
    with pytest.raises(Overloaded, match="shutting down"):
        budget.hold(1)


def test_refusals_map_to_retryable_statuses_and_503_while_shutting_down() -> None:
    assert http_status(Overloaded(0.2, "ingest queue full, retry later"))[0] == 429
    assert http_status(Overloaded(1.0, "server is shutting down"))[0] == 503
    code, _, headers = http_status(RateLimited(7.5, "service 'a' is over its rate limit"))
    assert (code, headers["Retry-After"]) == (429, "8")
    assert grpc_status(RateLimited(2.0, "x"))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_backlog_counts_as_pressure_and_refuses_when_full() -> None:
    backlog = [0.6]
    budget = ByteBudget(1000, lambda: 0, lambda: backlog[0])
    assert budget.pressure() == pytest.approx(0.6)
    backlog[0] = 1.0
    with pytest.raises(Overloaded, match="indexing"):
        budget.hold(1)


# ---- admission


def control_at(queued: int, limit: int = 1000, **rates: float) -> IngestControl:
    budget = ByteBudget(limit, lambda: queued)
    return IngestControl(budget, ServiceRateLimits(**rates) if rates else None)  # type: ignore[arg-type]


def test_admission_sheds_debug_then_info_as_the_queue_fills() -> None:
    rng = random.Random(1)
    rows_in: list[Row] = [
        ("svc", lv, rng.randbytes(16), f"r{i}")
        for i in range(3000)
        for lv in (Level.DEBUG, Level.INFO, Level.ERROR)
    ]
    b, raw = batch_of(rows_in)
    limit = len(raw) * 10
    for queued, debug_share, info_share in ((0, 1.0, 1.0), (6, 0.1, 1.0), (8, 0.1, 0.5)):
        ctl = control_at(queued * len(raw), limit)
        adm = ctl.admit_logs(b, raw, Hold(ctl.budget))
        kept = Counter(adm.batch.level)
        assert kept[Level.ERROR] == 3000
        assert abs(kept[Level.DEBUG] / 3000 - debug_share) < 0.03
        assert abs(kept[Level.INFO] / 3000 - info_share) < 0.04
        assert adm.sampled_total == 9000 - len(adm.batch)
        if adm.sampled_total:
            assert "shed under load" in adm.message()
            assert len(adm.raw) < len(raw)
            again, _ = decode_logs(adm.raw, NOW)
            assert again.body == adm.batch.body


def test_above_refuse_at_ordinary_requests_are_refused_but_error_ones_admitted() -> None:
    info_only, raw_info = batch_of([("svc", Level.INFO, b"", f"i{i}") for i in range(100)])
    with_error, raw_err = batch_of([("svc", Level.INFO, b"", f"e{i}") for i in range(99)] + [
        ("svc", Level.ERROR, b"", "boom")
    ])  # fmt: skip
    limit = 100 * len(raw_err)
    ctl = control_at(int(0.95 * limit), limit)
    with pytest.raises(Overloaded) as err:
        ctl.admit_logs(info_only, raw_info, Hold(ctl.budget))
    assert not isinstance(err.value, RateLimited)
    adm = ctl.admit_logs(with_error, raw_err, Hold(ctl.budget))
    assert Level.ERROR in adm.batch.level


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    b = TokenBucket(rate=100, burst=200, now=0.0)
    b.take(200)
    assert b.refill(1.0) == pytest.approx(100)
    assert b.refill(10.0) == 200
    assert b.wait_for(250) == pytest.approx(0.5)
    assert b.wait_for(250, floor=-200) == 0.0
    assert b.pressure(10.0) == 0.0


def test_parse_overrides() -> None:
    assert parse_overrides("auth=5000, checkout=20000:40000,") == {
        "auth": (5000.0, None),
        "checkout": (20000.0, 40000.0),
    }
    for bad in ("auth", "auth=x", "=5", "auth=5:0", "auth=-1"):
        with pytest.raises(ValueError):
            parse_overrides(bad)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rate_limit_refuses_a_service_over_its_rate_without_touching_others() -> None:
    clock = Clock()
    rates = ServiceRateLimits(100, 200, parse_overrides("big=1000"), clock=clock)
    ctl = IngestControl(ByteBudget(1 << 30, lambda: 0), rates)
    noisy, raw_noisy = batch_of([("noisy", Level.WARN, b"", f"n{i}") for i in range(150)])
    quiet, raw_quiet = batch_of([("quiet", Level.WARN, b"", f"q{i}") for i in range(150)])
    ctl.admit_logs(noisy, raw_noisy, Hold(ctl.budget))  # 150 of 200 tokens
    with pytest.raises(RateLimited) as err:
        ctl.admit_logs(noisy, raw_noisy, Hold(ctl.budget))
    assert 0 < err.value.retry_after_s <= 1.0
    # refusals cost nothing: hammering changes neither its bucket nor anyone else's
    for _ in range(50):
        with pytest.raises(RateLimited):
            ctl.admit_logs(noisy, raw_noisy, Hold(ctl.budget))
    ctl.admit_logs(quiet, raw_quiet, Hold(ctl.budget))
    clock.t += err.value.retry_after_s
    ctl.admit_logs(noisy, raw_noisy, Hold(ctl.budget))
    assert rates.limit("big").rate == 1000 and rates.limit("big").burst == 2000


def test_a_service_drawing_down_its_bucket_sheds_its_own_debug_first() -> None:
    clock = Clock()
    rates = ServiceRateLimits(1000, 1000, clock=clock)
    ctl = IngestControl(ByteBudget(1 << 30, lambda: 0), rates)
    rows_in: list[Row] = [("svc", Level.DEBUG, os.urandom(16), f"d{i}") for i in range(400)]
    b, raw = batch_of(rows_in)
    first = ctl.admit_logs(b, raw, Hold(ctl.budget))
    assert first.sampled_total == 0  # full bucket: no pressure
    ctl.admit_logs(b, raw, Hold(ctl.budget))  # 200 tokens left: pressure 0.8
    third = ctl.admit_logs(b, raw, Hold(ctl.budget))
    assert 0.8 < third.sampled_total / 400 < 0.97
    other, raw_other = batch_of([("other", Level.DEBUG, os.urandom(16), "x")] * 50)
    assert ctl.admit_logs(other, raw_other, Hold(ctl.budget)).sampled_total == 0


def test_error_records_borrow_one_burst_then_are_refused_too() -> None:
    clock = Clock()
    rates = ServiceRateLimits(100, 100, clock=clock)
    ctl = IngestControl(ByteBudget(1 << 30, lambda: 0), rates)
    errs, raw = batch_of([("svc", Level.ERROR, b"", f"e{i}") for i in range(80)])
    info, raw_info = batch_of([("svc", Level.INFO, b"", f"i{i}") for i in range(10)])
    ctl.admit_logs(errs, raw, Hold(ctl.budget))  # 20 left
    ctl.admit_logs(errs, raw, Hold(ctl.budget))  # -60: on credit
    with pytest.raises(RateLimited):
        ctl.admit_logs(info, raw_info, Hold(ctl.budget))  # ordinary records wait for the debt
    with pytest.raises(RateLimited):
        ctl.admit_logs(errs, raw, Hold(ctl.budget))  # -140 would pass the floor of -100
    with pytest.raises(RateLimited):
        ctl.precheck({"svc": 80})  # refused before decoding
    clock.t += 0.41  # back to -20: -20 - 80 reaches the floor, not past it
    ctl.admit_logs(errs, raw, Hold(ctl.budget))


def test_a_request_larger_than_the_burst_is_admitted_on_a_full_bucket() -> None:
    rates = ServiceRateLimits(10, 20, clock=Clock())
    ctl = IngestControl(ByteBudget(1 << 30, lambda: 0), rates)
    b, raw = batch_of([("svc", Level.WARN, b"", f"w{i}") for i in range(100)])
    ctl.admit_logs(b, raw, Hold(ctl.budget))
    with pytest.raises(RateLimited):
        ctl.admit_logs(b, raw, Hold(ctl.budget))


def test_refund_gives_tokens_back() -> None:
    rates = ServiceRateLimits(10, 100, clock=Clock())
    ctl = IngestControl(ByteBudget(1 << 30, lambda: 0), rates)
    b, raw = batch_of([("svc", Level.WARN, b"", f"w{i}") for i in range(60)])
    adm = ctl.admit_logs(b, raw, Hold(ctl.budget))
    ctl.refund(adm)
    ctl.admit_logs(b, raw, Hold(ctl.budget))
