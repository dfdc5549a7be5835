"""Tokenizer for the log query language.

The lexer is deliberately almost context-free; the single exception is that a `-` right
after a comparison operator starts a value (`attributes.delta > -5`) instead of being the
NOT prefix (`-level=DEBUG`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from otelog.errors import QuerySyntaxError

__all__ = ["Token", "TokenKind", "iter_tokens", "show", "tokenize"]


class TokenKind(Enum):
    WORD = "word"
    QUOTED = "quoted string"
    OP = "operator"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    LPAREN = "'('"
    RPAREN = "')'"
    EOF = "end of query"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    # The source spelling, used to echo the user's own text back in errors.
    text: str
    # WORD: the word; QUOTED: the unescaped contents; OP: the operator; else == text.
    value: str
    pos: int

    def describe(self) -> str:
        if self.kind is TokenKind.EOF:
            return "end of query"
        return show(self.text)


_SPACE = re.compile(r"\s+")
_KEYWORDS = {"and": TokenKind.AND, "or": TokenKind.OR, "not": TokenKind.NOT}

# Characters that end a bare word. Control characters and lone surrogates are excluded
# from words too, so they surface as a "stray character" error rather than vanishing
# into a search term nobody can see.
_WORD = re.compile(r'[^\s()"=<>!&|\x00-\x1f\x7f-\x9f\ud800-\udfff]+')

# Common spellings from other languages; a hint beats "expected a value after '='".
_WRONG_OPS = {"==": "=", "=>": ">=", "=<": "<=", "<>": "!="}


def show(text: str, limit: int = 40) -> str:
    """Quote user text for an error message, truncated so a huge token cannot drown it."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def tokenize(text: str) -> list[Token]:
    """All tokens of a query, ending with an EOF token at `len(text)`."""
    return list(iter_tokens(text))


def iter_tokens(text: str) -> Iterator[Token]:
    """Yield a query's tokens lazily, ending with an EOF token at `len(text)`.

    Lazy so that the parser stops reading at its first error: a megabyte of `(` fails at
    the nesting limit instead of being tokenized in full first.

    Raises QuerySyntaxError for an unterminated string, an unknown escape, a single `&`
    or `|`, a mistyped operator such as `==`, or a control character outside quotes.
    """
    n = len(text)
    i = 0
    after_op = False
    while True:
        space = _SPACE.match(text, i)
        if space:
            i = space.end()
        if i >= n:
            break
        c = text[i]
        token: Token
        if c == "(":
            token = Token(TokenKind.LPAREN, c, c, i)
        elif c == ")":
            token = Token(TokenKind.RPAREN, c, c, i)
        elif c == '"':
            token = _quoted(text, i)
        elif c in "=<>!":
            two = text[i : i + 2]
            if two in _WRONG_OPS:
                raise QuerySyntaxError(
                    i,
                    f"unknown operator '{two}' at position {i}; did you mean '{_WRONG_OPS[two]}'?",
                )
            if two in ("!=", ">=", "<="):
                token = Token(TokenKind.OP, two, two, i)
            elif c == "!":
                token = Token(TokenKind.NOT, c, c, i)
            else:
                token = Token(TokenKind.OP, c, c, i)
        elif c in "&|":
            double = c * 2
            if text[i : i + 2] != double:
                keyword = "AND" if c == "&" else "OR"
                raise QuerySyntaxError(
                    i, f"unexpected '{c}' at position {i}; use '{double}' or {keyword}"
                )
            token = Token(TokenKind.AND if c == "&" else TokenKind.OR, double, double, i)
        elif c == "-" and not after_op:
            token = Token(TokenKind.NOT, c, c, i)
        else:
            m = _WORD.match(text, i)
            if m is None:
                raise QuerySyntaxError(i, f"unexpected character {c!r} at position {i}")
            word = m.group()
            token = Token(_KEYWORDS.get(word.lower(), TokenKind.WORD), word, word, i)
        yield token
        i += len(token.text)
        after_op = token.kind is TokenKind.OP
    yield Token(TokenKind.EOF, "", "", n)


def _quoted(text: str, start: int) -> Token:
    """Scan the double-quoted string opening at `start`; only `\\"` and `\\\\` are escapes."""
    parts: list[str] = []
    i = start + 1
    n = len(text)
    # Jump between quotes and backslashes instead of stepping through every character, and
    # look for the closing quote again only once an escape has consumed the one found: a
    # long run of escapes must stay linear.
    quote = text.find('"', i)
    while True:
        if 0 <= quote < i:
            quote = text.find('"', i)
        backslash = text.find("\\", i, quote if quote >= 0 else n)
        if backslash >= 0:
            parts.append(text[i:backslash])
            escaped = text[backslash + 1 : backslash + 2]
            if escaped in ('"', "\\"):
                parts.append(escaped)
                i = backslash + 2
                continue
            if not escaped:
                break
            sequence = "\\" + escaped
            raise QuerySyntaxError(
                backslash,
                f"unknown escape {show(sequence)} at position {backslash}; "
                'only \\" and \\\\ may follow a backslash in a quoted string',
            )
        if quote < 0:
            break
        parts.append(text[i:quote])
        return Token(TokenKind.QUOTED, text[start : quote + 1], "".join(parts), start)
    raise QuerySyntaxError(
        start, f"unterminated quoted string starting at position {start}; add a closing '\"'"
    )
