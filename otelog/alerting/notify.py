"""Webhooks: Alertmanager's `POST /api/v2/alerts` body, or otelog's own JSON, with retries.

Alertmanager's API takes a JSON list of `{labels, annotations, startsAt, endsAt,
generatorURL}` (api/v2/openapi.yaml, `postableAlerts`). It identifies an alert by its
label set, so every notification of one alert carries the same labels; a resolved alert
is the same labels with `endsAt` set. A firing alert omits `endsAt`: Alertmanager then
keeps it open for its `resolve_timeout`, which is why the engine re-sends open alerts
(Prometheus does the same).

Delivery runs on an asyncio loop with httpx. A failed POST (connection error, 5xx, 429)
is retried with exponential backoff up to `max_attempts`; other 4xx answers are the
receiver refusing the body and are not retried. Nothing here blocks the engine thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from otelog.alerting.evaluate import Alert, AlertState
from otelog.alerting.rules import Rule, Target

log = logging.getLogger(__name__)

__all__ = [
    "Notification",
    "Notifier",
    "alert_labels",
    "alertmanager_payload",
    "json_payload",
    "rfc3339",
]

FIRING = "firing"
RESOLVED = "resolved"


def rfc3339(ns: int) -> str:
    dt = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def group_label(rule: Rule) -> str | None:
    """The label name a group value goes under: `service`, `host`, `level`, or the
    attribute path with anything but [A-Za-z0-9_] as `_` (`k8s.pod.name` -> `k8s_pod_name`)."""
    f = rule.group_by
    if f is None:
        return None
    if f.kind in ("service", "host", "level"):
        return f.kind
    name = re.sub(r"[^A-Za-z0-9_]", "_", f.key)
    return name if re.match(r"[A-Za-z_]", name) else "_" + name


def alert_labels(rule: Rule, alert: Alert) -> dict[str, str]:
    labels = {
        "alertname": rule.name,
        "severity": rule.severity,
        "otelog_rule_id": rule.id,
        "otelog_kind": rule.kind,
    }
    name = group_label(rule)
    if name is not None:
        labels[name] = alert.group if alert.group is not None else ""
    labels.update(rule.labels)
    return labels


def alert_annotations(rule: Rule, alert: Alert) -> dict[str, str]:
    ann = {"summary": f"{rule.name}: {alert.message}", "description": alert.message}
    if alert.affected_services:
        ann["affected_services"] = ", ".join(alert.affected_services)
    ann.update(rule.annotations)
    return ann


def alertmanager_payload(
    rule: Rule, alerts: list[Alert], external_url: str
) -> list[dict[str, Any]]:
    out = []
    for a in alerts:
        item: dict[str, Any] = {
            "labels": alert_labels(rule, a),
            "annotations": alert_annotations(rule, a),
            "startsAt": rfc3339(a.triggered_at or a.created_at),
            "generatorURL": generator_url(external_url, rule),
        }
        if a.state == AlertState.RESOLVED and a.resolved_at is not None:
            item["endsAt"] = rfc3339(a.resolved_at)
        out.append(item)
    return out


def generator_url(external_url: str, rule: Rule) -> str:
    return f"{external_url.rstrip('/')}/alerts?pattern={quote(rule.name)}"


def json_payload(rule: Rule, alerts: list[Alert], status: str, external_url: str) -> dict[str, Any]:
    """otelog's own webhook body: one notification, its rule and its alerts."""
    return {
        "version": "1",
        "status": status,
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "kind": rule.kind,
            "query": rule.query,
            "condition": str(rule.condition),
            "severity": rule.severity,
        },
        "alerts": [
            {
                "alert_id": a.alert_id,
                "state": a.state.value,
                "group": a.group,
                "value": a.value if a.value != float("inf") else None,
                "count": a.count,
                "message": a.message,
                "affected_services": a.affected_services,
                "labels": alert_labels(rule, a),
                "annotations": alert_annotations(rule, a),
                "startsAt": rfc3339(a.triggered_at or a.created_at),
                "endsAt": rfc3339(a.resolved_at) if a.resolved_at else None,
            }
            for a in alerts
        ],
        "generatorURL": generator_url(external_url, rule),
    }


@dataclass
class Notification:
    target: Target
    rule: Rule
    status: str  # FIRING or RESOLVED
    alerts: list[Alert]


@dataclass
class NotifyStats:
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    last_error: str = ""
    deliveries: list[tuple[str, int]] = field(default_factory=list)  # (url, status)


class Notifier:
    """Delivers notifications from any thread on the event loop given to `start`."""

    def __init__(
        self,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        concurrency: int = 16,
        external_url: str = "",
    ) -> None:
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.concurrency = concurrency
        self.external_url = external_url
        self.stats = NotifyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._pending: set[Future[bool]] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def body(self, n: Notification) -> Any:
        if n.target.kind == "alertmanager":
            return alertmanager_payload(n.rule, n.alerts, self.external_url)
        return json_payload(n.rule, n.alerts, n.status, self.external_url)

    def submit(self, n: Notification) -> None:
        """Thread-safe: hand `n` to the loop and return at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            log.warning("alert notification to %s dropped: no event loop", n.target.url)
            return
        fut = asyncio.run_coroutine_threadsafe(self.deliver(n), loop)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def delay(self, attempt: int) -> float:
        """Backoff before retry `attempt` (1, 2, ...): doubling, capped."""
        return float(min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1))))

    async def deliver(self, n: Notification) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
            self._sem = asyncio.Semaphore(self.concurrency)
        assert self._sem is not None
        body = self.body(n)
        async with self._sem:
            for attempt in range(1, self.max_attempts + 1):
                error: str
                try:
                    r = await self._client.post(n.target.url, json=body)
                except httpx.HTTPError as e:
                    error = f"{type(e).__name__}: {e}"
                else:
                    self.stats.deliveries.append((n.target.url, r.status_code))
                    del self.stats.deliveries[:-100]
                    if r.status_code < 300:
                        self.stats.delivered += 1
                        return True
                    error = f"HTTP {r.status_code}"
                    if r.status_code < 500 and r.status_code != 429:
                        break  # the receiver refuses this body: retrying cannot help
                if attempt < self.max_attempts:
                    self.stats.retries += 1
                    await asyncio.sleep(self.delay(attempt))
            self.stats.failed += 1
            self.stats.last_error = error
            log.warning(
                "alert notification %s of rule %r to %s failed: %s",
                n.status,
                n.rule.name,
                n.target.url,
                error,
            )
            return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def drain(self, timeout_s: float) -> None:
        """Wait (from a thread other than the loop's) for deliveries in flight."""
        for fut in list(self._pending):
            try:
                fut.result(timeout_s)
            except Exception:  # noqa: BLE001 - a failed delivery is logged by deliver()
                pass
