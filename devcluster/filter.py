"""A subset of go-bexpr, the ``filter`` language of Nomad's and Consul's list endpoints.

Supported: ``Sel == "v"``, ``Sel != "v"``, ``"v" in Sel``, ``"v" not in Sel``, ``Sel contains "v"``,
``Sel not contains "v"``, ``Sel matches "re"``, ``Sel not matches "re"``, ``Sel is empty``,
``Sel is not empty``, combined with ``and``, ``or``, ``not`` and parentheses. Selectors are dotted field paths
(``Meta.chutes_gpu_model``, ``Service.Tags``) with ``["key"]`` for keys that are not identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[Any], bool]
_MISSING = object()

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<op>==|!=|\(|\)|\[|\]|\.)
      | (?P<word>[A-Za-z0-9_\-/:+]+)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """A filter expression outside the supported subset (answered as HTTP 400)."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FilterError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1].replace('\\"', '"') if value.startswith('"') else value[1:-1]
        out.append((kind, value))
        pos = m.end()
    return out


def _resolve(obj: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(obj, dict):
            if part not in obj:
                return _MISSING
            obj = obj[part]
        else:
            return _MISSING
    return obj


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.toks[i] if i < len(self.toks) else None

    def word(self, value: str, offset: int = 0) -> bool:
        tok = self.peek(offset)
        return tok is not None and tok[0] == "word" and tok[1] == value

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FilterError("unexpected end of expression")
        self.pos += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.or_()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return pred

    def or_(self) -> Predicate:
        left = self.and_()
        while self.word("or"):
            self.take()
            right = self.and_()
            left = (lambda a, b: lambda o: a(o) or b(o))(left, right)
        return left

    def and_(self) -> Predicate:
        left = self.not_()
        while self.word("and"):
            self.take()
            right = self.not_()
            left = (lambda a, b: lambda o: a(o) and b(o))(left, right)
        return left

    def not_(self) -> Predicate:
        if self.word("not"):
            self.take()
            inner = self.not_()
            return lambda o: not inner(o)
        if self.peek() == ("op", "("):
            self.take()
            inner = self.or_()
            if self.take() != ("op", ")"):
                raise FilterError("missing ')'")
            return inner
        return self.match()

    def selector(self) -> list[str]:
        kind, value = self.take()
        if kind != "word":
            raise FilterError(f"expected a selector, got {value!r}")
        path = [value]
        while self.peek() in (("op", "."), ("op", "[")):
            _, sep = self.take()
            kind, value = self.take()
            path.append(value)
            if sep == "[" and self.take() != ("op", "]"):
                raise FilterError("missing ']'")
        return path

    def value(self) -> str:
        kind, value = self.take()
        if kind not in ("str", "word"):
            raise FilterError(f"expected a value, got {value!r}")
        return value

    def match(self) -> Predicate:
        tok = self.peek()
        if (tok is not None and tok[0] == "str") or (
            tok and tok[0] == "word" and (self.word("in", 1) or (self.word("not", 1) and self.word("in", 2)))
        ):
            needle = self.value()
            negate = self.word("not")
            if negate:
                self.take()
            if not self.word("in"):
                raise FilterError("expected 'in' after a value")
            self.take()
            path = self.selector()
            return lambda o: _contains(_resolve(o, path), needle) != negate
        path = self.selector()
        if self.peek() == ("op", "=="):
            self.take()
            want = self.value()
            return lambda o: (v := _resolve(o, path)) is not _MISSING and _text(v) == want
        if self.peek() == ("op", "!="):
            self.take()
            want = self.value()
            return lambda o: (v := _resolve(o, path)) is _MISSING or _text(v) != want
        negate = False
        if self.word("is"):
            self.take()
            if self.word("not"):
                self.take()
                negate = True
            if not self.word("empty"):
                raise FilterError("expected 'empty' after 'is'")
            self.take()
            return lambda o: _empty(_resolve(o, path)) != negate
        if self.word("not"):
            self.take()
            negate = True
        if self.word("contains"):
            self.take()
            needle = self.value()
            return lambda o: _contains(_resolve(o, path), needle) != negate
        if self.word("matches"):
            self.take()
            try:
                pattern = re.compile(self.value())
            except re.error as exc:
                raise FilterError(f"bad regular expression: {exc}") from None
            return lambda o: (
                ((v := _resolve(o, path)) is not _MISSING and pattern.search(_text(v)) is not None) != negate
            )
        raise FilterError(f"unsupported operator after {'.'.join(path)}")


def _contains(container: Any, needle: str) -> bool:
    if container is _MISSING or container is None:
        return False
    if isinstance(container, dict):
        return needle in container
    if isinstance(container, list):
        return needle in [_text(v) for v in container]
    return needle in _text(container)


def _empty(value: Any) -> bool:
    return value is _MISSING or value is None or (hasattr(value, "__len__") and len(value) == 0)


def compile_filter(text: str) -> Predicate:
    """A predicate over a JSON object for the go-bexpr expression ``text``; FilterError when unsupported."""
    return _Parser(text).parse()
