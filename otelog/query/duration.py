"""Durations such as `500ms`, `30s`, `2h` or `1h30m`, as integer nanoseconds.

Shared by the query language (`timestamp > 2h ago`) and the API's `since` argument, so
both accept exactly the same spellings and report the same reasons.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DURATION_NS", "InvalidDuration", "parse_duration_ns"]

_NS_PER_S = 1_000_000_000

# Lookups use the lower-cased text, so `2H` and `500MS` are accepted too. There is no
# month unit, which is what keeps case-folding `M` unambiguous.
_UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # MICRO SIGN
    "μs": 1_000,  # GREEK SMALL LETTER MU, what Go prints
    "ms": 1_000_000,
    "s": _NS_PER_S,
    "m": 60 * _NS_PER_S,
    "h": 3_600 * _NS_PER_S,
    "d": 86_400 * _NS_PER_S,
    "w": 7 * 86_400 * _NS_PER_S,
}
_UNIT_LIST = "ns, us, ms, s, m, h, d, w"

# Timestamps are stored as signed 64-bit nanoseconds; a longer duration can only be a typo.
MAX_DURATION_NS = 2**63 - 1

# Past this many digits the value overflows MAX_DURATION_NS whatever the unit; checking
# first keeps int() away from its 4300-digit limit and from quadratic conversion cost.
_MAX_NUMBER_CHARS = 40

_PART = re.compile(r"([0-9]+)(?:\.([0-9]+))?([a-zµμ]+)")
_DIGITS = re.compile(r"[0-9]+")


class InvalidDuration(ValueError):
    """A string that is not a positive duration. `reason` omits the offending text."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"invalid duration {_show(text)}: {reason}")


def parse_duration_ns(text: str) -> int:
    """Parse `500ms`, `30s`, `15m`, `2h`, `7d`, `1w` or a compound like `1h30m` to nanoseconds.

    Compound parts must go from the largest unit to the smallest, each unit at most once,
    so `30m1h` and `1h1h` are rejected as likely typos. A part may carry a decimal fraction
    (`1.5h`) as long as the total is a whole number of nanoseconds. Raises InvalidDuration
    (a ValueError) for anything else, including zero and negative durations.
    """
    s = text.strip()
    if not s:
        raise InvalidDuration(text, f"empty; expected a number and a unit ({_UNIT_LIST})")
    if s[0] in "+-":
        if s[0] == "-":
            raise InvalidDuration(text, "a duration must be positive")
        raise InvalidDuration(text, "a duration takes no sign")
    if _DIGITS.fullmatch(s):
        raise InvalidDuration(text, f"missing a unit ({_UNIT_LIST}), e.g. '{s}s'")

    lowered = s.lower()
    if len(lowered) != len(s):
        # Case-folding changed the length (exotic Unicode): no valid duration does that.
        raise InvalidDuration(text, f"expected a number and a unit ({_UNIT_LIST})")

    total = 0
    pos = 0
    previous_unit: str | None = None
    while pos < len(lowered):
        m = _PART.match(lowered, pos)
        if m is None:
            raise InvalidDuration(
                text, f"expected a number and a unit ({_UNIT_LIST}) at {_show(s[pos:])}"
            )
        whole, fraction, unit = m.group(1), m.group(2) or "", m.group(3)
        unit_ns = _UNIT_NS.get(unit)
        if unit_ns is None:
            raise InvalidDuration(text, f"unknown unit {_show(unit)}; use one of {_UNIT_LIST}")
        if previous_unit is not None and unit_ns >= _UNIT_NS[previous_unit]:
            raise InvalidDuration(
                text, "units must go from largest to smallest, each at most once (e.g. '1h30m')"
            )
        if len(whole) + len(fraction) > _MAX_NUMBER_CHARS:
            raise InvalidDuration(text, "too large")
        total += int(whole) * unit_ns
        if fraction:
            scaled = int(fraction) * unit_ns
            scale = 10 ** len(fraction)
            if scaled % scale:
                raise InvalidDuration(text, "finer than one nanosecond")
            total += scaled // scale
        previous_unit = unit
        pos = m.end()

    if total == 0:
        raise InvalidDuration(text, "a duration must be positive")
    if total > MAX_DURATION_NS:
        raise InvalidDuration(text, "too large (the limit is about 292 years)")
    return total


def _show(text: str, limit: int = 40) -> str:
    # Errors quote user input; a megabyte of it would drown the actual message.
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)
