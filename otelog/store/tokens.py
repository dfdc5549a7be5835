"""Body tokens, shared by the segment builder (postings) and the query engine.

A token is a maximal run of ASCII letters, lower-cased, 2 to 64 long. Template words
repeat, so their bitmaps are dense and cheap; numbers, ids and hashes get no postings
(one per record would cost more bytes than the record) and are found by scanning the
candidate rows. One regex over the lower-cased body is the cheapest tokenizer Python
offers here (~3 us for a 100-character body; `\\w+` costs ~40% more).
"""

from __future__ import annotations

import re

_LETTERS = re.compile(r"[a-z]+")
MIN_LEN = 2
MAX_LEN = 64


def indexed_tokens(text: str) -> list[str]:
    """Tokens of `text` that have postings (duplicates kept)."""
    return [t for t in _LETTERS.findall(text.lower()) if MIN_LEN <= len(t) <= MAX_LEN]


def raw_tokens(text: str) -> list[str]:
    """Every letter run of `text`; the caller drops runs outside [MIN_LEN, MAX_LEN]
    once per distinct token instead of once per occurrence (the hot path of sealing)."""
    return _LETTERS.findall(text.lower())


def is_indexed_token(word: str) -> bool:
    """True when `word` (lower-cased) is itself one token: a letters-only word query."""
    return MIN_LEN <= len(word) <= MAX_LEN and _LETTERS.fullmatch(word) is not None


def is_letter_word(word: str) -> bool:
    """A letters-only word query matches whole letter runs; other text is a substring."""
    return _LETTERS.fullmatch(word) is not None


def letter_runs(text: str) -> set[str]:
    """Every letter run of `text`, lower-cased, whatever its length."""
    return set(_LETTERS.findall(text.lower()))


def word_tokens(text: str) -> list[str]:
    """The indexed tokens a word or phrase query needs (a prefilter for substring matches)."""
    return indexed_tokens(text)
