"""The alerting part of the GraphQL schema: rules, alerts, back-tests, and their events.

`schema.py` composes these into its root types (`Query`, `Mutation` and `Subscription`
inherit the fields below), so the alert surface lives in one module and the shared root
types stay small. Resolvers call the `AlertEngine` of the request context; blocking work
(RocksDB writes, the back-test's pass over the store) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from otelog.alerting import evaluate as ev
from otelog.alerting import rules as rl
from otelog.alerting.engine import AlertEngine, AlertNotFound
from otelog.alerting.engine import AlertEvent as EngineEvent
from otelog.alerting.notify import alert_labels
from otelog.errors import InvalidArgument, QuerySyntaxError
from otelog.query.duration import parse_duration_ns

_T = TypeVar("_T")


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _opt_dt(ns: int | None) -> datetime | None:
    return _dt(ns) if ns is not None else None


def _ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


def _any(v: object) -> Any:
    """A value for a JSON scalar field (strawberry's JSON is typed as its own scalar)."""
    return v


def _finite(v: float) -> float | None:
    # GraphQL floats are finite: a spike over a silent baseline is an infinite ratio
    return v if v == v and abs(v) != float("inf") else None


def _engine(info: Info) -> AlertEngine:
    engine: AlertEngine | None = info.context.get("alert_engine")
    if engine is None:
        raise GraphQLError("alerting is not available on this server")
    return engine


def _error(e: Exception) -> GraphQLError:
    if isinstance(e, AlertNotFound):
        return GraphQLError(str(e), extensions={"code": "NOT_FOUND"})
    if isinstance(e, QuerySyntaxError):
        return GraphQLError(str(e), extensions={"code": "QUERY_SYNTAX", "position": e.position})
    return GraphQLError(str(e), extensions={"code": "BAD_ARGUMENT"})


async def _blocking(fn: Callable[..., _T], *args: Any) -> _T:
    try:
        return await asyncio.to_thread(fn, *args)
    except (InvalidArgument, QuerySyntaxError) as e:
        raise _error(e) from None


@strawberry.enum
class AlertState(enum.Enum):
    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    RESOLVED = "resolved"


@strawberry.type(description="A webhook: `alertmanager` (POST /api/v2/alerts body) or `json`.")
class NotificationTarget:
    url: str
    kind: str


@strawberry.input
class NotificationTargetInput:
    url: str
    kind: str = "alertmanager"


@strawberry.input(
    description="A rule: `query` (the query language) counted over `window` (s/m/h), "
    "`condition` one of `count > N`, `rate > N` (per second), `ratio > N` or `zscore > N` "
    "(spike against `baseline`, needs `minCount` records), `absent`, `lag > N`, "
    "`dropped > N`; the alert fires once the condition held for `for`."
)
class AlertRuleInput:
    name: str
    condition: str
    query: str = ""
    window: str = "1m"
    for_: str = strawberry.field(default="0s", name="for")
    group_by: str | None = None
    baseline: str = rl.DEFAULT_BASELINE
    min_count: int = rl.DEFAULT_MIN_COUNT
    severity: str = "warning"
    labels: JSON | None = None
    annotations: JSON | None = None
    targets: list[NotificationTargetInput] = strawberry.field(default_factory=list)
    enabled: bool = True

    def spec(self) -> rl.RuleSpec:
        for what, d in (("labels", self.labels), ("annotations", self.annotations)):
            if d is not None and not isinstance(d, dict):
                raise GraphQLError(f"{what}: expected an object of strings")
        return rl.RuleSpec(
            name=self.name,
            condition=self.condition,
            query=self.query,
            window=self.window,
            for_=self.for_,
            group_by=self.group_by,
            baseline=self.baseline,
            min_count=self.min_count,
            severity=self.severity,
            labels=dict(_any(self.labels) or {}),
            annotations=dict(_any(self.annotations) or {}),
            targets=[rl.Target(t.url, t.kind) for t in self.targets],
            enabled=self.enabled,
        )


@strawberry.type
class AlertRule:
    rule: strawberry.Private[rl.Rule]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.rule.id)

    @strawberry.field
    def name(self) -> str:
        return self.rule.name

    @strawberry.field(description="threshold, rate, spike, absence or self")
    def kind(self) -> str:
        return self.rule.kind

    @strawberry.field
    def query(self) -> str:
        return self.rule.query

    @strawberry.field
    def window(self) -> str:
        return rl.format_duration(self.rule.window_ns)

    @strawberry.field
    def condition(self) -> str:
        return str(self.rule.condition)

    @strawberry.field(name="for")
    def for_(self) -> str:
        return rl.format_duration(self.rule.for_ns)

    @strawberry.field
    def group_by(self) -> str | None:
        return self.rule.group_by_text

    @strawberry.field
    def baseline(self) -> str:
        return rl.format_duration(self.rule.baseline_ns)

    @strawberry.field
    def min_count(self) -> int:
        return self.rule.min_count

    @strawberry.field
    def severity(self) -> str:
        return self.rule.severity

    @strawberry.field
    def labels(self) -> JSON:
        return _any(dict(self.rule.labels))

    @strawberry.field
    def annotations(self) -> JSON:
        return _any(dict(self.rule.annotations))

    @strawberry.field
    def targets(self) -> list[NotificationTarget]:
        return [NotificationTarget(url=t.url, kind=t.kind) for t in self.rule.targets]

    @strawberry.field
    def enabled(self) -> bool:
        return self.rule.enabled

    @strawberry.field(description="Configured by the server (--alert-builtin-rules)")
    def builtin(self) -> bool:
        return self.rule.builtin

    @strawberry.field
    def created_at(self) -> datetime:
        return _dt(self.rule.created_at)

    @strawberry.field
    def updated_at(self) -> datetime:
        return _dt(self.rule.updated_at)


@strawberry.type(description="One alert per rule and group (its fingerprint).")
class Alert:
    alert: strawberry.Private[ev.Alert]
    rule: strawberry.Private[rl.Rule]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.alert.alert_id)

    @strawberry.field
    def rule_id(self) -> strawberry.ID:
        return strawberry.ID(self.rule.id)

    @strawberry.field
    def rule_name(self) -> str:
        return self.rule.name

    @strawberry.field(description="The rule's name, as REST /alerts calls it")
    def pattern(self) -> str:
        return self.rule.name

    @strawberry.field
    def kind(self) -> str:
        return self.rule.kind

    @strawberry.field
    def severity(self) -> str:
        return self.rule.severity

    @strawberry.field
    def state(self) -> AlertState:
        return AlertState(self.alert.state.value)

    @strawberry.field(description="The groupBy value; null for an ungrouped rule")
    def group(self) -> str | None:
        return self.alert.group

    @strawberry.field(description="What the condition compared; null when infinite")
    def value(self) -> float | None:
        return _finite(self.alert.value)

    @strawberry.field
    def count(self) -> int:
        return self.alert.count

    @strawberry.field
    def message(self) -> str:
        return self.alert.message

    @strawberry.field
    def affected_services(self) -> list[str]:
        return list(self.alert.affected_services)

    @strawberry.field
    def labels(self) -> JSON:
        return _any(alert_labels(self.rule, self.alert))

    @strawberry.field
    def created_at(self) -> datetime:
        return _dt(self.alert.created_at)

    @strawberry.field
    def updated_at(self) -> datetime:
        return _dt(self.alert.updated_at)

    @strawberry.field
    def triggered_at(self) -> datetime | None:
        return _opt_dt(self.alert.triggered_at)

    @strawberry.field
    def resolved_at(self) -> datetime | None:
        return _opt_dt(self.alert.resolved_at)

    @strawberry.field
    def acknowledged_by(self) -> str | None:
        return self.alert.acknowledged_by

    @strawberry.field
    def acknowledged_at(self) -> datetime | None:
        return _opt_dt(self.alert.acknowledged_at)

    @strawberry.field
    def silenced_by(self) -> str | None:
        return self.alert.silenced_by

    @strawberry.field
    def silenced_until(self) -> datetime | None:
        return _opt_dt(self.alert.silenced_until)


@strawberry.type(
    description="A transition of an alert: pending, firing, resolved, cleared (pending no "
    "more, never fired), acknowledged or silenced."
)
class AlertEvent:
    kind: str
    at: datetime
    alert: Alert


@strawberry.type
class AlertFiring:
    group: str | None
    fired_at: datetime
    resolved_at: datetime | None
    peak_value: float | None
    peak_count: int
    message: str


@strawberry.type(description="When a rule would have fired over past data.")
class AlertRuleTest:
    evaluations: int
    would_have_fired: bool
    firings: list[AlertFiring]


def _since_ns(since: str | None) -> int | None:
    if not since:
        return None
    try:
        return time.time_ns() - parse_duration_ns(since)
    except ValueError as e:
        raise GraphQLError(f"since: {e}", extensions={"code": "BAD_ARGUMENT"}) from None


def _event(e: EngineEvent) -> AlertEvent:
    return AlertEvent(kind=e.kind, at=_dt(e.at), alert=Alert(alert=e.alert, rule=e.rule))


@strawberry.type
class AlertQuery:
    @strawberry.field(description="Every alert rule, built-in ones first.")
    async def alert_rules(self, info: Info) -> list[AlertRule]:
        return [AlertRule(rule=r) for r in _engine(info).rules()]

    @strawberry.field(
        description="Alerts, newest first; `since` (e.g. 15m) keeps open ones and those "
        "changed that recently."
    )
    async def alerts(
        self, info: Info, state: AlertState | None = None, since: str | None = None
    ) -> list[Alert]:
        st = ev.AlertState(state.value) if state is not None else None
        pairs = _engine(info).alerts(state=st, since_ns=_since_ns(since))
        return [Alert(alert=a, rule=r) for a, r in pairs]

    @strawberry.field(
        description="Evaluate `rule` over past data from `from` to `to` (every `step`, "
        "default the server's evaluation interval) and say when it would have fired."
    )
    async def test_alert_rule(
        self,
        info: Info,
        rule: AlertRuleInput,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        step: str | None = None,
    ) -> AlertRuleTest:
        engine = _engine(info)
        step_ns = None
        if step:
            try:
                step_ns = parse_duration_ns(step)
            except ValueError as e:
                raise GraphQLError(f"step: {e}", extensions={"code": "BAD_ARGUMENT"}) from None
        res = await _blocking(engine.test_rule, rule.spec(), _ns(from_), _ns(to), step_ns)
        return AlertRuleTest(
            evaluations=res.evaluations,
            would_have_fired=bool(res.firings),
            firings=[
                AlertFiring(
                    group=f.group,
                    fired_at=_dt(f.fired_at),
                    resolved_at=_opt_dt(f.resolved_at),
                    peak_value=_finite(f.peak_value),
                    peak_count=f.peak_count,
                    message=f.message,
                )
                for f in res.firings
            ],
        )


@strawberry.type
class AlertMutation:
    @strawberry.mutation(description="Store a rule; it is evaluated from the next round on.")
    async def create_alert_rule(self, info: Info, rule: AlertRuleInput) -> AlertRule:
        return AlertRule(rule=await _blocking(_engine(info).create_rule, rule.spec()))

    @strawberry.mutation(description="Replace a rule's definition; its alerts keep their ids.")
    async def update_alert_rule(
        self, info: Info, id: strawberry.ID, rule: AlertRuleInput
    ) -> AlertRule:
        return AlertRule(rule=await _blocking(_engine(info).update_rule, str(id), rule.spec()))

    @strawberry.mutation(description="Delete a rule; its open alerts are resolved.")
    async def delete_alert_rule(self, info: Info, id: strawberry.ID) -> bool:
        return await _blocking(_engine(info).delete_rule, str(id))

    @strawberry.mutation(description="Someone is on it: no more repeats until it resolves.")
    async def acknowledge_alert(self, info: Info, id: strawberry.ID, by: str) -> Alert:
        engine = _engine(info)
        try:
            a = await asyncio.wrap_future(engine.acknowledge(str(id), by))
        except InvalidArgument as e:
            raise _error(e) from None
        rule = engine.rule(a.rule_id)
        assert rule is not None
        return Alert(alert=a, rule=rule)

    @strawberry.mutation(
        description="No notifications until `until`, or for `duration` (e.g. 2h) from now."
    )
    async def silence_alert(
        self,
        info: Info,
        id: strawberry.ID,
        by: str,
        until: datetime | None = None,
        duration: str | None = None,
    ) -> Alert:
        engine = _engine(info)
        if (until is None) == (duration is None):
            raise GraphQLError("give until or duration", extensions={"code": "BAD_ARGUMENT"})
        if until is not None:
            until_ns = _ns(until)
        else:
            assert duration is not None
            try:
                until_ns = time.time_ns() + parse_duration_ns(duration)
            except ValueError as e:
                raise GraphQLError(f"duration: {e}", extensions={"code": "BAD_ARGUMENT"}) from None
        try:
            a = await asyncio.wrap_future(engine.silence(str(id), by, until_ns))
        except InvalidArgument as e:
            raise _error(e) from None
        rule = engine.rule(a.rule_id)
        assert rule is not None
        return Alert(alert=a, rule=rule)


@strawberry.type
class AlertSubscription:
    @strawberry.subscription(description="Alert transitions as the engine makes them.")
    async def alerts(self, info: Info) -> AsyncGenerator[AlertEvent, None]:
        engine = _engine(info)
        sub = engine.subscribe()
        try:
            while True:
                e = await sub.queue.get()
                if e is None:
                    if sub.overrun:
                        raise GraphQLError(
                            "subscriber too slow: alert events dropped; subscribe again",
                            extensions={"code": "TOO_SLOW"},
                        )
                    return
                yield _event(e)
        finally:
            engine.unsubscribe(sub)
