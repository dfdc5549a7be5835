"""The alert engine: rules and alerts in RocksDB, counts kept up to date, evaluation on a
schedule, transitions to webhooks and subscribers.

Threads
-------
Everything that touches counts or alert state runs on the engine's own thread, in the
order it was queued: committed batches (from the writer listener), rule activations and
removals, a person's acknowledgement or silence, and the evaluation round every
`interval_s`. So no lock guards the counts, and an alert is never changed by two hands at
once. The writer listener only appends to that queue (it runs on the writer thread after
each durable commit and must not slow it down); past `max_queue_rows` queued records it
drops batches and the engine re-seeds every rule from the store instead, which the
listener's sequence bookkeeping keeps exact. Readers (the API) see copies published under
a lock after each change.

Rules are validated and stored by the caller's thread (`create_rule` returns once the rule
is durable), then activated on the engine thread: one seeding pass over the store, after
which batches keep its counts current (see counts.py for why no record is counted twice).

Storage (meta column family, see storage/FORMAT.md): `rule/` T id -> the rule as JSON;
`alert/` T rule id, fingerprint -> the alert's state as JSON. Both survive restarts; a
restart re-seeds the counts from the store and carries on with the stored alert states.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from otelog.alerting import counts as counting
from otelog.alerting.batch_filter import BatchFilter, BatchView
from otelog.alerting.evaluate import (
    ACTIVE,
    Alert,
    AlertState,
    Firing,
    InvalidTransition,
    Observation,
    acknowledge,
    backtest,
    buckets_needed,
    describe,
    describe_self,
    measure,
    measure_self,
    silence,
    step,
)
from otelog.alerting.notify import FIRING, RESOLVED, Notification, Notifier
from otelog.alerting.rules import (
    InvalidRule,
    Rule,
    RuleSpec,
    Target,
    decode_rule,
    encode_rule,
    format_duration,
    validate_rule,
)
from otelog.alerting.selfmetrics import BUILTIN_RULES, SelfSample, SelfSource, window_value
from otelog.errors import InvalidArgument, OtelogError
from otelog.model import DEFAULT_TENANT, LogBatch
from otelog.query.rows import ResourceCache
from otelog.store import format as fmt
from otelog.store.store import Store

log = logging.getLogger(__name__)

__all__ = ["AlertEngine", "AlertEvent", "AlertNotFound", "EngineStats", "RuleTest"]

_T = TypeVar("_T")

# resolved alerts are kept this long for `alerts(state: RESOLVED)`, then forgotten
RESOLVED_RETENTION_NS = 7 * 24 * 3600 * 10**9
# evaluation rounds between prunes of quiet groups and old resolved alerts
PRUNE_EVERY = 64
# a back-test may count at most this many buckets per group
MAX_TEST_BUCKETS = 200_000
SUBSCRIBER_QUEUE = 1000


class AlertNotFound(InvalidArgument):
    pass


@dataclass(frozen=True)
class AlertEvent:
    """A transition, as subscribers see it: kind is pending, firing, resolved, cleared,
    acknowledged or silenced."""

    kind: str
    alert: Alert
    rule: Rule
    at: int


@dataclass
class RuleTest:
    evaluations: int
    firings: list[Firing]


@dataclass
class EngineStats:
    rounds: int = 0
    round_seconds: float = 0.0  # engine-thread CPU time of the last evaluation round
    batches: int = 0
    batch_records: int = 0  # records of the batches counted
    counted_records: int = 0  # (record, rule) pairs that matched and were counted
    count_seconds: float = 0.0  # engine-thread CPU time spent counting batches
    seeds: int = 0
    seeded_records: int = 0
    seed_seconds: float = 0.0  # engine-thread CPU time spent seeding
    overflows: int = 0


@dataclass
class _RuleState:
    rule: Rule
    counts: counting.RuleCounts | None  # None for `self` rules
    alerts: dict[str | None, Alert] = field(default_factory=dict)


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, tenant: str) -> None:
        self.loop = loop
        self.tenant = tenant
        self.queue: asyncio.Queue[AlertEvent | None] = asyncio.Queue(SUBSCRIBER_QUEUE + 1)
        self.overrun = False

    def offer(self, event: AlertEvent) -> None:
        # on the subscriber's loop; a reader this far behind is ended, never waited for
        if self.overrun:
            return
        if self.queue.qsize() >= SUBSCRIBER_QUEUE:
            self.overrun = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


class AlertEngine:
    def __init__(
        self,
        store: Store,
        interval_s: float = 15.0,
        notifier: Notifier | None = None,
        self_source: SelfSource | None = None,
        builtin_rules: bool = False,
        builtin_targets: list[Target] | None = None,
        resend_s: float = 60.0,
        max_queue_rows: int = 1_000_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.notifier = notifier
        self.self_source = self_source
        self.resend_ns = int(resend_s * 1e9)
        self.max_queue_rows = max_queue_rows
        self.clock = clock
        self.stats = EngineStats()
        # published for readers (API threads)
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], Rule] = {}
        self._alerts: dict[tuple[str, str], Alert] = {}
        self._subscribers: set[_Subscriber] = set()
        # the queue to the engine thread
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._queued_rows = 0
        self._overflow = False
        self._stopping = False
        self._tenants: set[str] = set()
        # Every record in the store now has a WAL sequence below this; the listener raises
        # it with each batch it hears of. allocate_seqs(0) reads the next sequence without
        # taking one: this runs before the writer starts.
        self._listened_seq = store.allocate_seqs(0) - 1
        # engine thread only
        self._states: dict[tuple[str, str], _RuleState] = {}
        self._cache = ResourceCache()
        self._filters: dict[str, BatchFilter] = {}
        self._self_history: collections.deque[tuple[int, SelfSample]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._load(builtin_rules, builtin_targets or [])

    # ---- loading

    def _load(self, builtin: bool, targets: list[Target]) -> None:
        now = self.clock()
        rules: list[Rule] = []
        db = self.store.db
        for key, value in db.scan_prefix(fmt.CF_META, fmt.rule_prefix()):
            tenant, rule_id = fmt.parse_rule_key(key)
            try:
                rules.append(decode_rule(value, tenant))
            except (OtelogError, ValueError, KeyError) as e:
                # a rule this build refuses stays stored, untouched, and says why in the log
                log.error("alert rule %s of tenant %s not loaded: %s", rule_id, tenant, e)
        if builtin:
            for rid, name, cond, window, for_, severity in BUILTIN_RULES:
                spec = RuleSpec(
                    name=name,
                    condition=cond,
                    window=window,
                    for_=for_,
                    severity=severity,
                    targets=list(targets),
                    labels={"component": "otelog"},
                )
                rules.append(validate_rule(spec, rid, DEFAULT_TENANT, now, 0, builtin=True))
        known = {(r.tenant, r.id) for r in rules}
        stored: dict[tuple[str, str], list[Alert]] = {}
        orphans = []
        for key, value in db.scan_prefix(fmt.CF_META, fmt.alert_prefix()):
            tenant, rule_id, _aid = fmt.parse_alert_key(key)
            if (tenant, rule_id) not in known:
                orphans.append(key)
                continue
            stored.setdefault((tenant, rule_id), []).append(Alert.decode(value))
        if orphans:
            wb = db.batch()
            for k in orphans:
                db.delete(wb, fmt.CF_META, k)
            db.write(wb, sync=False)
        with self._lock:
            for r in rules:
                self._rules[(r.tenant, r.id)] = r
                for a in stored.get((r.tenant, r.id), []):
                    self._alerts[(r.tenant, a.alert_id)] = a
        for r in rules:
            self._enqueue_activation(r, stored.get((r.tenant, r.id), []))

    # ---- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.notifier is not None and loop is not None:
            self.notifier.start(loop)
        self._thread = threading.Thread(target=self._run, name="otelog-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            subs = list(self._subscribers)
        for s in subs:
            s.loop.call_soon_threadsafe(s.queue.put_nowait, None)

    # ---- the writer listener (writer thread: must stay cheap)

    def on_commit(self, tenant: str, batch: LogBatch) -> None:
        with self._cond:
            if batch.log_id:
                seq = batch.log_id[0] >> 24
                if seq > self._listened_seq:
                    self._listened_seq = seq
            if tenant not in self._tenants or self._stopping:
                return
            if self._queued_rows + len(batch) > self.max_queue_rows:
                # the engine fell behind: drop, and have it re-seed from the store
                self._overflow = True
                return
            self._queue.append(("batch", tenant, batch))
            self._queued_rows += len(batch)
            self._cond.notify()

    # ---- the queue

    def _enqueue_activation(self, rule: Rule, alerts: list[Alert] | None = None) -> None:
        with self._cond:
            self._tenants.add(rule.tenant)
            # the activation's place in the queue and the sequence the listener has
            # reached are taken together: the seed counts up to it, the queue after it
            self._queue.append(("activate", rule, self._listened_seq, alerts))
            self._cond.notify()

    def _enqueue(self, *item: Any) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _call(self, fn: Callable[[], _T]) -> Future[_T]:
        fut: Future[_T] = Future()
        self._enqueue("call", fn, fut)
        return fut

    def _run(self) -> None:
        next_tick = time.monotonic() + self.interval_s
        round_no = 0
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    timeout = next_tick - time.monotonic()
                    if timeout <= 0:
                        break
                    self._cond.wait(timeout)
                items = list(self._queue)
                self._queue.clear()
                self._queued_rows = 0
                overflow, self._overflow = self._overflow, False
                reseed_upto = self._listened_seq
                stopping = self._stopping
            for item in items:
                if overflow and item[0] == "batch":
                    continue
                try:
                    self._handle(item)
                except Exception:  # noqa: BLE001 - one bad item must not stop alerting
                    log.exception("alert engine: %s failed", item[0])
            if overflow:
                self.stats.overflows += 1
                log.warning("alert engine fell behind ingestion; re-seeding every rule")
                for st in list(self._states.values()):
                    self._seed(st, reseed_upto)
            if stopping:
                return
            if time.monotonic() >= next_tick:
                try:
                    self.evaluate(prune=round_no % PRUNE_EVERY == PRUNE_EVERY - 1)
                except Exception:  # noqa: BLE001
                    log.exception("alert evaluation failed")
                round_no += 1
                next_tick += self.interval_s
                if next_tick < time.monotonic():
                    next_tick = time.monotonic() + self.interval_s

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "batch":
            self._count_batch(item[1], item[2])
        elif kind == "activate":
            self._activate(item[1], item[2], item[3])
        elif kind == "remove":
            self._remove(item[1], item[2])
        elif kind == "call":
            fn, fut = item[1], item[2]
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until everything queued so far has been handled (tests, benchmarks)."""
        self._call(lambda: None).result(timeout_s)

    def run_round(self, now_ns: int | None = None, timeout_s: float = 60.0) -> None:
        """One evaluation round on the engine thread, now, after what is queued."""
        self._call(lambda: self.evaluate(now_ns)).result(timeout_s)

    # ---- counting (engine thread)

    def _activate(self, rule: Rule, upto_seq: int, alerts: list[Alert] | None) -> None:
        key = (rule.tenant, rule.id)
        old = self._states.get(key)
        st = _RuleState(rule, None)
        if alerts is not None:
            st.alerts = {a.group: a for a in alerts}
        elif old is not None:
            st.alerts = old.alerts
        self._states[key] = st
        self._seed(st, upto_seq)

    def _seed(self, st: _RuleState, upto_seq: int) -> None:
        rule = st.rule
        if rule.kind == "self":
            return
        st.counts = counting.RuleCounts(rule.bucket_ns, rule.slots)
        if rule.group_by is None:
            st.counts.ensure_group(None)
        for g in st.alerts:
            # an alert whose group has left the history must still be evaluated (and resolve)
            st.counts.ensure_group(g)
        t0 = time.thread_time()
        n = counting.seed(st.counts, rule, self.store, upto_seq, self.clock())
        spent = time.thread_time() - t0
        self.stats.seeds += 1
        self.stats.seeded_records += n
        self.stats.seed_seconds += spent
        log.debug("seeded rule %s with %d records in %.3fs CPU", rule.id, n, spent)

    def _count_batch(self, tenant: str, batch: LogBatch) -> None:
        t0 = time.thread_time()
        now = self.clock()
        # one view of the batch's columns for every rule, and rules with the same query
        # share one match of it
        view = BatchView(batch, self._cache)
        parts: dict[str, counting.Part | None] = {}
        for st in self._states.values():
            rule = st.rule
            if rule.tenant != tenant or st.counts is None or not rule.enabled:
                continue
            if rule.query not in parts:
                mask = self._filter_for(rule).view_mask(view)
                parts[rule.query] = counting.batch_part(view, mask) if mask.any() else None
            part = parts[rule.query]
            if part is not None:
                self.stats.counted_records += counting.add_part(
                    st.counts, rule, part, self._cache, now
                )
        self.stats.batches += 1
        self.stats.batch_records += len(batch)
        self.stats.count_seconds += time.thread_time() - t0

    def _filter_for(self, rule: Rule) -> BatchFilter:
        # compiled once per distinct query, however many rules share it
        f = self._filters.get(rule.query)
        if f is None:
            if len(self._filters) > 10_000:
                self._filters.clear()
            f = self._filters[rule.query] = BatchFilter(rule.node)
        return f

    # ---- evaluation (engine thread)

    def evaluate(self, now_ns: int | None = None, prune: bool = False) -> None:
        """One evaluation round over every rule."""
        t0 = time.thread_time()
        now = self.clock() if now_ns is None else now_ns
        sample = self._sample_self(now)
        changed: list[Alert] = []  # to write: transitions and what people did
        updated: list[Alert] = []  # only new figures: shown, not written
        cleared: list[Alert] = []
        events: list[AlertEvent] = []
        sends: list[tuple[Rule, str, list[Alert], str | None]] = []
        can_send = self.notifier is not None
        for st in list(self._states.values()):
            rule = st.rule
            observations = self._observe(st, now, sample)
            firing: list[Alert] = []
            resolved: list[Alert] = []
            repeats: list[Alert] = []
            for g, obs in observations:
                old = st.alerts.get(g)
                new, event = step(old, obs, rule, g, now)
                if new is None:
                    if old is not None:
                        del st.alerts[g]
                        cleared.append(old)
                        events.append(AlertEvent("cleared", old, rule, now))
                    continue
                if event == "firing" and new.state == AlertState.FIRING:
                    new = replace(new, notified=can_send and bool(rule.targets), last_sent_at=now)
                    firing.append(new)
                elif event == "resolved" and new.notified:
                    resolved.append(new)
                elif event is None and self._resend_due(rule, new, now):
                    new = replace(new, last_sent_at=now)
                    repeats.append(new)
                if new != old:
                    st.alerts[g] = new
                    if event is not None or _persisted_fields(new) != _persisted_fields(old):
                        changed.append(new)
                    else:
                        updated.append(new)
                if event is not None:
                    events.append(AlertEvent(event, new, rule, now))
            if firing:
                sends.append((rule, FIRING, firing, None))
            if resolved:
                sends.append((rule, RESOLVED, resolved, None))
            if repeats:
                # only Alertmanager needs to hear again of what it already knows
                sends.append((rule, FIRING, repeats, "alertmanager"))
            if prune:
                self._prune(st, now, cleared)
        self._persist(changed, cleared)
        if updated:
            with self._lock:
                for a in updated:
                    self._alerts[(a.tenant, a.alert_id)] = a
        for rule, status, alerts, kind in sends:
            self._notify(rule, status, alerts, kind)
        self._emit(events)
        self.stats.rounds += 1
        self.stats.round_seconds = time.thread_time() - t0

    def _observe(
        self, st: _RuleState, now: int, sample: SelfSample | None
    ) -> list[tuple[str | None, Observation]]:
        rule = st.rule
        if not rule.enabled:
            return [(g, Observation(False, 0.0, 0, "rule disabled")) for g in st.alerts]
        if rule.kind == "self":
            if sample is None:
                return []
            old = self._self_sample_at(now - rule.window_ns)
            value, holds = measure_self(rule, window_value(rule.condition.metric, old, sample))
            return [(None, Observation(holds, value, 0, describe_self(rule, value)))]
        counts = st.counts
        assert counts is not None
        cur = now // rule.bucket_ns
        meas = measure(rule, counts.matrix(cur, buckets_needed(rule)))
        # absence: the services that went quiet; otherwise those in the window
        since = cur - (counts.slots if rule.kind == "absence" else rule.window_buckets - 1)
        out = []
        for i, g in enumerate(counts.groups):
            holds = bool(meas.holds[i])
            if not holds and g not in st.alerts:
                # nothing to say about a group with no alert and no condition: skip the
                # message and service lists, most groups of most rounds end here
                continue
            if rule.group_by is not None and rule.group_by.kind == "service" and g:
                services = [g]
            else:
                services = counts.services_since(i, since)
            out.append(
                (
                    g,
                    Observation(
                        holds,
                        float(meas.value[i]),
                        int(meas.count[i]),
                        describe(rule, meas, i),
                        services,
                    ),
                )
            )
        return out

    def _resend_due(self, rule: Rule, a: Alert, now: int) -> bool:
        # Alertmanager closes an alert not heard of for its resolve_timeout; repeat open ones
        return (
            a.notified
            and a.state in (AlertState.FIRING, AlertState.ACKNOWLEDGED)
            and a.last_sent_at is not None
            and now - a.last_sent_at >= self.resend_ns
            and any(t.kind == "alertmanager" for t in rule.targets)
        )

    def _sample_self(self, now: int) -> SelfSample | None:
        if self.self_source is None:
            return None
        try:
            sample = self.self_source()
        except Exception:  # noqa: BLE001 - a broken figure must not stop other rules
            log.exception("reading otelog's own metrics failed")
            return None
        h = self._self_history
        h.append((now, sample))
        longest = max(
            (st.rule.window_ns for st in self._states.values() if st.rule.kind == "self"),
            default=0,
        )
        while len(h) > 2 and h[1][0] <= now - longest:
            h.popleft()
        return sample

    def _self_sample_at(self, t: int) -> SelfSample:
        """The newest sample at or before `t`, else the oldest one there is."""
        best = self._self_history[0][1]
        for ts, s in self._self_history:
            if ts > t:
                break
            best = s
        return best

    def _prune(self, st: _RuleState, now: int, cleared: list[Alert]) -> None:
        for g, a in list(st.alerts.items()):
            if (
                a.state == AlertState.RESOLVED
                and a.resolved_at is not None
                and now - a.resolved_at > RESOLVED_RETENTION_NS
            ):
                del st.alerts[g]
                cleared.append(a)
        if st.counts is not None:
            keep: set[str | None] = set(st.alerts)
            if st.rule.group_by is None:
                keep.add(None)
            st.counts.prune(now // st.rule.bucket_ns, keep)

    def _persist(self, changed: list[Alert], cleared: list[Alert]) -> None:
        if not changed and not cleared:
            return
        db = self.store.db
        wb = db.batch()
        for a in changed:
            db.put(wb, fmt.CF_META, fmt.alert_key(a.tenant, a.rule_id, a.alert_id), a.encode())
        for a in cleared:
            db.delete(wb, fmt.CF_META, fmt.alert_key(a.tenant, a.rule_id, a.alert_id))
        # not synced: after a crash the next evaluation recomputes the state from counts
        # the store does hold; at worst a transition is notified twice
        db.write(wb, sync=False)
        with self._lock:
            for a in changed:
                self._alerts[(a.tenant, a.alert_id)] = a
            for a in cleared:
                self._alerts.pop((a.tenant, a.alert_id), None)

    def _notify(
        self, rule: Rule, status: str, alerts: list[Alert], kind: str | None = None
    ) -> None:
        if self.notifier is None:
            return
        for t in rule.targets:
            if kind is None or t.kind == kind:
                self.notifier.submit(Notification(t, rule, status, alerts))

    def _emit(self, events: list[AlertEvent]) -> None:
        if not events:
            return
        with self._lock:
            subs = list(self._subscribers)
        for s in subs:
            for e in events:
                if e.rule.tenant == s.tenant:
                    try:
                        s.loop.call_soon_threadsafe(s.offer, e)
                    except RuntimeError:  # the subscriber's loop is closed
                        pass

    def _remove(self, tenant: str, rule_id: str) -> None:
        st = self._states.pop((tenant, rule_id), None)
        db = self.store.db
        lo = fmt.alert_prefix(tenant, rule_id)
        wb = db.batch()
        db.delete_range(wb, fmt.CF_META, lo, fmt.prefix_end(lo))
        db.write(wb, sync=False)
        if st is None:
            return
        now = self.clock()
        gone = [
            replace(a, state=AlertState.RESOLVED, resolved_at=now, updated_at=now)
            for a in st.alerts.values()
            if a.state in ACTIVE
        ]
        with self._lock:
            for a in st.alerts.values():
                self._alerts.pop((tenant, a.alert_id), None)
        # whoever was told it fires is told it is over: the rule that raised it is gone
        told = [a for a in gone if a.notified]
        if told:
            self._notify(st.rule, RESOLVED, told)
        self._emit([AlertEvent("resolved", a, st.rule, now) for a in gone])

    # ---- the API (any thread)

    def rules(self, tenant: str = DEFAULT_TENANT) -> list[Rule]:
        with self._lock:
            rules = [r for (t, _), r in self._rules.items() if t == tenant]
        return sorted(rules, key=lambda r: (not r.builtin, r.created_at, r.id))

    def rule(self, rule_id: str, tenant: str = DEFAULT_TENANT) -> Rule | None:
        with self._lock:
            return self._rules.get((tenant, rule_id))

    def create_rule(self, spec: RuleSpec, tenant: str = DEFAULT_TENANT) -> Rule:
        rule = validate_rule(spec, uuid.uuid4().hex[:16], tenant, self.clock())
        self._store_rule(rule)
        return rule

    def update_rule(self, rule_id: str, spec: RuleSpec, tenant: str = DEFAULT_TENANT) -> Rule:
        old = self._editable(tenant, rule_id)
        rule = validate_rule(spec, rule_id, tenant, self.clock(), old.created_at)
        self._store_rule(rule)
        return rule

    def _editable(self, tenant: str, rule_id: str) -> Rule:
        old = self.rule(rule_id, tenant)
        if old is None:
            raise AlertNotFound(f"no alert rule with id {rule_id!r}")
        if old.builtin:
            raise InvalidRule(
                f"rule {old.name!r} is built in; the server's configuration turns it on or off"
            )
        return old

    def _store_rule(self, rule: Rule) -> None:
        db = self.store.db
        wb = db.batch()
        db.put(wb, fmt.CF_META, fmt.rule_key(rule.tenant, rule.id), encode_rule(rule))
        db.write(wb, sync=True)
        with self._lock:
            self._rules[(rule.tenant, rule.id)] = rule
        self._enqueue_activation(rule)

    def delete_rule(self, rule_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        try:
            self._editable(tenant, rule_id)
        except AlertNotFound:
            return False
        db = self.store.db
        wb = db.batch()
        db.delete(wb, fmt.CF_META, fmt.rule_key(tenant, rule_id))
        db.write(wb, sync=True)
        with self._lock:
            self._rules.pop((tenant, rule_id), None)
        self._enqueue("remove", tenant, rule_id)
        return True

    def alerts(
        self,
        tenant: str = DEFAULT_TENANT,
        state: AlertState | None = None,
        since_ns: int | None = None,
    ) -> list[tuple[Alert, Rule]]:
        """Alerts with their rule, newest change first. `since_ns`: open alerts, and the
        others whose last change is that recent."""
        with self._lock:
            pairs = [
                (a, self._rules[(t, a.rule_id)])
                for (t, _), a in self._alerts.items()
                if t == tenant and (t, a.rule_id) in self._rules
            ]
        if state is not None:
            pairs = [p for p in pairs if p[0].state == state]
        if since_ns is not None:
            pairs = [
                p
                for p in pairs
                if p[0].state in ACTIVE
                or p[0].state == AlertState.PENDING
                or p[0].updated_at >= since_ns
            ]
        pairs.sort(key=lambda p: p[0].triggered_at or p[0].created_at, reverse=True)
        return pairs

    def acknowledge(self, alert_id: str, by: str, tenant: str = DEFAULT_TENANT) -> Future[Alert]:
        return self._call(lambda: self._human(tenant, alert_id, "acknowledged", by, None))

    def silence(
        self, alert_id: str, by: str, until_ns: int, tenant: str = DEFAULT_TENANT
    ) -> Future[Alert]:
        return self._call(lambda: self._human(tenant, alert_id, "silenced", by, until_ns))

    def _human(self, tenant: str, alert_id: str, what: str, by: str, until_ns: int | None) -> Alert:
        by = by.strip()
        if not by or len(by) > 200:
            raise InvalidArgument("by: say who (1 to 200 characters)")
        now = self.clock()
        for st in self._states.values():
            if st.rule.tenant != tenant:
                continue
            for g, a in st.alerts.items():
                if a.alert_id != alert_id:
                    continue
                try:
                    if what == "acknowledged":
                        new = acknowledge(a, by, now)
                    else:
                        assert until_ns is not None
                        new = silence(a, by, until_ns, now)
                except InvalidTransition as e:
                    raise InvalidArgument(str(e)) from None
                st.alerts[g] = new
                self._persist([new], [])
                self._emit([AlertEvent(what, new, st.rule, now)])
                return new
        raise AlertNotFound(f"no alert with id {alert_id!r}")

    def subscribe(self, tenant: str = DEFAULT_TENANT) -> _Subscriber:
        """A queue of AlertEvents on the running loop; None in it means the end."""
        sub = _Subscriber(asyncio.get_running_loop(), tenant)
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def test_rule(
        self,
        spec: RuleSpec,
        from_ns: int,
        to_ns: int,
        step_ns: int | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> RuleTest:
        """When would `spec` have fired between from_ns and to_ns? Counts from the store in
        one pass, then the live evaluation's measurement and state machine at every step
        (the engine's interval unless given). Blocking: call from a worker thread."""
        rule = validate_rule(spec, "test", tenant, self.clock())
        if rule.kind == "self":
            raise InvalidRule(
                f"condition: {rule.condition.metric} is measured live; it has no history to test"
            )
        if to_ns <= from_ns:
            raise InvalidArgument("to must be after from")
        span = to_ns - from_ns + rule.history_ns
        if span // rule.bucket_ns > MAX_TEST_BUCKETS:
            raise InvalidArgument(
                f"from/to: {format_duration(to_ns - from_ns)} in {format_duration(rule.bucket_ns)} "
                f"buckets is more than {MAX_TEST_BUCKETS:,}; test a shorter range"
            )
        counts = counting.RuleCounts(rule.bucket_ns, span // rule.bucket_ns + 3)
        if rule.group_by is None:
            counts.ensure_group(None)
        start = from_ns - rule.history_ns - rule.bucket_ns
        counting.seed(counts, rule, self.store, None, to_ns, start_ns=start)
        step = step_ns if step_ns is not None else int(self.interval_s * 1e9)
        evaluations, firings = backtest(rule, counts, from_ns, to_ns, step)
        return RuleTest(evaluations, firings)


def _persisted_fields(a: Alert | None) -> tuple[Any, ...] | None:
    """What is worth a write when no transition happened: the state and who did what, not
    every new count (that would be a write per alert per round)."""
    if a is None:
        return None
    return (a.state, a.notified, a.last_sent_at, a.acknowledged_by, a.silenced_until)
