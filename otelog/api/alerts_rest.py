"""REST for alerting: `GET /alerts` (the seed's shape) and `/alerts/rules` to manage rules.

    GET    /alerts?pattern=error_rate_spike&state=firing&since=1h
           -> {"alerts": [{"alert_id", "pattern", "severity", "state", "triggered_at",
                           "affected_services": [...], "message", ...}]}
    GET    /alerts/rules                 -> {"rules": [...]}
    POST   /alerts/rules   {rule JSON}   -> 201 {"rule": {...}}   | 400 {"error": "..."}
    PUT    /alerts/rules/{id} {rule JSON} -> 200 {"rule": {...}}  | 400 | 404
    DELETE /alerts/rules/{id}            -> 200 {"deleted": true} | 404

`pattern` is a rule's name or kind (threshold, rate, spike, absence, self). Rule JSON
uses the GraphQL input's fields in snake case (`group_by`, `min_count`, `for`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otelog.alerting.engine import AlertEngine, AlertNotFound
from otelog.alerting.evaluate import Alert, AlertState
from otelog.alerting.notify import rfc3339
from otelog.alerting.rules import Rule, RuleSpec, Target, format_duration
from otelog.errors import InvalidArgument
from otelog.query.duration import parse_duration_ns

__all__ = ["alert_json", "routes", "rule_json", "spec_from_json"]

MAX_BODY = 1 << 20
_SPEC_FIELDS = frozenset(
    (
        "name",
        "condition",
        "query",
        "window",
        "for",
        "group_by",
        "baseline",
        "min_count",
        "severity",
        "labels",
        "annotations",
        "targets",
        "enabled",
    )
)


def _ts(ns: int | None) -> str | None:
    return rfc3339(ns) if ns is not None else None


def alert_json(a: Alert, rule: Rule) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id,
        "pattern": rule.name,
        "severity": rule.severity,
        "state": a.state.value,
        "triggered_at": _ts(a.triggered_at),
        "affected_services": list(a.affected_services),
        "message": a.message,
        "rule_id": rule.id,
        "kind": rule.kind,
        "group": a.group,
        "value": a.value if abs(a.value) != float("inf") else None,
        "count": a.count,
        "created_at": _ts(a.created_at),
        "resolved_at": _ts(a.resolved_at),
        "acknowledged_by": a.acknowledged_by,
        "silenced_until": _ts(a.silenced_until),
    }


def rule_json(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "query": r.query,
        "window": format_duration(r.window_ns),
        "condition": str(r.condition),
        "for": format_duration(r.for_ns),
        "group_by": r.group_by_text,
        "baseline": format_duration(r.baseline_ns),
        "min_count": r.min_count,
        "severity": r.severity,
        "labels": r.labels,
        "annotations": r.annotations,
        "targets": [{"url": t.url, "kind": t.kind} for t in r.targets],
        "enabled": r.enabled,
        "builtin": r.builtin,
        "created_at": _ts(r.created_at),
        "updated_at": _ts(r.updated_at),
    }


def _field(d: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    v = d.get(key, default)
    if v is None and default is None:
        return None
    if kind is int and isinstance(v, bool):
        raise InvalidArgument(f"{key}: expected an integer")
    if not isinstance(v, kind):
        raise InvalidArgument(f"{key}: expected {kind.__name__}")
    return v


def spec_from_json(d: Any) -> RuleSpec:
    if not isinstance(d, dict):
        raise InvalidArgument("body: expected a JSON object")
    unknown = sorted(set(d) - _SPEC_FIELDS)
    if unknown:
        known = ", ".join(sorted(_SPEC_FIELDS))
        raise InvalidArgument(f"unknown field {unknown[0]!r}; fields: {known}")
    for required in ("name", "condition"):
        if required not in d:
            raise InvalidArgument(f"{required}: required")
    targets = _field(d, "targets", list, [])
    out = []
    for t in targets:
        if not isinstance(t, dict) or not isinstance(t.get("url"), str):
            raise InvalidArgument('targets: expected [{"url": "...", "kind": "alertmanager"}]')
        out.append(Target(t["url"], str(t.get("kind", "alertmanager"))))
    return RuleSpec(
        name=_field(d, "name", str, ""),
        condition=_field(d, "condition", str, ""),
        query=_field(d, "query", str, ""),
        window=_field(d, "window", str, "1m"),
        for_=_field(d, "for", str, "0s"),
        group_by=_field(d, "group_by", str, None),
        baseline=_field(d, "baseline", str, "1h"),
        min_count=_field(d, "min_count", int, 10),
        severity=_field(d, "severity", str, "warning"),
        labels=_field(d, "labels", dict, {}),
        annotations=_field(d, "annotations", dict, {}),
        targets=out,
        enabled=_field(d, "enabled", bool, True),
    )


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status)


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidArgument(f"body: larger than {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"body: not valid JSON ({str(e)[:200]})") from None


def routes(engine: AlertEngine) -> list[Route]:
    async def list_alerts(request: Request) -> Response:
        q = request.query_params
        state = None
        if q.get("state"):
            try:
                state = AlertState(q["state"].strip().lower())
            except ValueError:
                names = ", ".join(s.value for s in AlertState)
                return _error(400, f"state: use one of {names}")
        since_ns = None
        if q.get("since"):
            try:
                since_ns = time.time_ns() - parse_duration_ns(q["since"])
            except ValueError as e:
                return _error(400, f"since: {e}")
        pattern = q.get("pattern")
        pairs = engine.alerts(state=state, since_ns=since_ns)
        if pattern:
            pairs = [(a, r) for a, r in pairs if pattern in (r.name, r.kind)]
        return JSONResponse({"alerts": [alert_json(a, r) for a, r in pairs]})

    async def list_rules(request: Request) -> Response:
        return JSONResponse({"rules": [rule_json(r) for r in engine.rules()]})

    async def create_rule(request: Request) -> Response:
        try:
            spec = spec_from_json(await _json_body(request))
            rule = await asyncio.to_thread(engine.create_rule, spec)
        except InvalidArgument as e:
            return _error(400, str(e))
        return JSONResponse({"rule": rule_json(rule)}, 201)

    async def update_rule(request: Request) -> Response:
        try:
            spec = spec_from_json(await _json_body(request))
            rule = await asyncio.to_thread(engine.update_rule, request.path_params["rule_id"], spec)
        except AlertNotFound as e:
            return _error(404, str(e))
        except InvalidArgument as e:
            return _error(400, str(e))
        return JSONResponse({"rule": rule_json(rule)})

    async def delete_rule(request: Request) -> Response:
        rule_id = request.path_params["rule_id"]
        try:
            deleted = await asyncio.to_thread(engine.delete_rule, rule_id)
        except InvalidArgument as e:
            return _error(400, str(e))
        if not deleted:
            return _error(404, f"no alert rule with id {rule_id!r}")
        return JSONResponse({"deleted": True})

    return [
        Route("/alerts", list_alerts, methods=["GET"]),
        Route("/alerts/rules", list_rules, methods=["GET"]),
        Route("/alerts/rules", create_rule, methods=["POST"]),
        Route("/alerts/rules/{rule_id}", update_rule, methods=["PUT"]),
        Route("/alerts/rules/{rule_id}", delete_rule, methods=["DELETE"]),
    ]
