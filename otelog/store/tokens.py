"""Body tokenization, shared by the segment builder (postings) and the query engine.

A token is a maximal run of word characters (`\\w+`), compared lower-cased. Only
ASCII word tokens of letters and underscores get postings: they come from message
templates and repeat, so their bitmaps are dense and cheap. Tokens holding a digit
(ids, numbers, hashes) are nearly unique per record; a posting each would cost more
bytes than the record, so they are matched by scanning the candidate rows instead.
The two regexes agree: a posting of `w` exists for a row exactly when `w` is one of
the row's `\\w+` tokens.
"""

from __future__ import annotations

import re

_ALL_RE = re.compile(r"\w+")
_INDEXED_RE = re.compile(r"(?<!\w)[a-z_]{2,64}(?!\w)")
_INDEXABLE_RE = re.compile(r"[a-z_]{2,64}")


def tokens(text: str) -> list[str]:
    """All tokens of `text`, lower-cased, in order (duplicates kept)."""
    return _ALL_RE.findall(text.lower())


def is_indexed_token(token: str) -> bool:
    return _INDEXABLE_RE.fullmatch(token) is not None


def indexed_tokens(text: str) -> list[str]:
    """The tokens of `text` that have postings (lower-cased, duplicates kept)."""
    return _INDEXED_RE.findall(text.lower())
