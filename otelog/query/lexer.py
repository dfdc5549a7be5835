"""Tokenizer for the log query language.

The lexer is deliberately almost context-free; the single exception is that a `-` right
after a comparison operator starts a value (`attributes.delta > -5`) instead of being the
NOT prefix (`-level=DEBUG`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from otelog.errors import QuerySyntaxError

__all__ = ["Token", "TokenKind", "show", "tokenize"]


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
    """Split a query into tokens, ending with an EOF token at `len(text)`.

    Raises QuerySyntaxError for an unterminated string, an unknown escape, a single `&`
    or `|`, a mistyped operator such as `==`, or a control character outside quotes.
    """
    tokens: list[Token] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        after_op = bool(tokens) and tokens[-1].kind is TokenKind.OP
        if c == "(":
            tokens.append(Token(TokenKind.LPAREN, c, c, i))
            i += 1
        elif c == ")":
            tokens.append(Token(TokenKind.RPAREN, c, c, i))
            i += 1
        elif c == '"':
            tokens.append(_quoted(text, i))
            i += len(tokens[-1].text)
        elif c in "=<>!":
            two = text[i : i + 2]
            if two in _WRONG_OPS:
                raise QuerySyntaxError(
                    i,
                    f"unknown operator '{two}' at position {i}; did you mean '{_WRONG_OPS[two]}'?",
                )
            if two in ("!=", ">=", "<="):
                tokens.append(Token(TokenKind.OP, two, two, i))
                i += 2
            elif c == "!":
                tokens.append(Token(TokenKind.NOT, c, c, i))
                i += 1
            else:
                tokens.append(Token(TokenKind.OP, c, c, i))
                i += 1
        elif c in "&|":
            double = c * 2
            if text[i : i + 2] != double:
                keyword = "AND" if c == "&" else "OR"
                raise QuerySyntaxError(
                    i, f"unexpected '{c}' at position {i}; use '{double}' or {keyword}"
                )
            kind = TokenKind.AND if c == "&" else TokenKind.OR
            tokens.append(Token(kind, double, double, i))
            i += 2
        elif c == "-" and not after_op:
            tokens.append(Token(TokenKind.NOT, c, c, i))
            i += 1
        else:
            m = _WORD.match(text, i)
            if m is None:
                raise QuerySyntaxError(i, f"unexpected character {c!r} at position {i}")
            word = m.group()
            kind = _KEYWORDS.get(word.lower(), TokenKind.WORD)
            tokens.append(Token(kind, word, word, i))
            i = m.end()
    tokens.append(Token(TokenKind.EOF, "", "", n))
    return tokens


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
            raise QuerySyntaxError(
                backslash,
                f"unknown escape {show(chr(92) + escaped)} at position {backslash}; "
                'only \\" and \\\\ may follow a backslash in a quoted string',
            )
        if quote < 0:
            break
        parts.append(text[i:quote])
        return Token(TokenKind.QUOTED, text[start : quote + 1], "".join(parts), start)
    raise QuerySyntaxError(
        start, f"unterminated quoted string starting at position {start}; add a closing '\"'"
    )
