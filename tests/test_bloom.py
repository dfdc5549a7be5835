"""The trace-id filter of cold segments: no false negatives, few false positives."""

from __future__ import annotations

import random

from otelog.store.bloom import TraceBloom


def test_every_member_is_found_and_few_strangers() -> None:
    rng = random.Random(1)
    ids = [rng.randbytes(16) for _ in range(50_000)] + [b"short", b"", rng.randbytes(40)]
    bloom = TraceBloom.decode(TraceBloom.build(ids).encode())
    assert all(bloom.may_contain(i) for i in ids)
    strangers = [rng.randbytes(16) for _ in range(20_000)]
    fp = sum(bloom.may_contain(s) for s in strangers) / len(strangers)
    assert fp < 0.02
    assert len(bloom.encode()) < 1.3 * len(ids)  # about 1.25 bytes per id


def test_an_empty_filter_contains_nothing() -> None:
    bloom = TraceBloom.decode(TraceBloom.build([]).encode())
    assert not any(bloom.may_contain(random.randbytes(16)) for _ in range(100))
