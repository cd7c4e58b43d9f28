"""Policy rules as Nomad and Consul take them: HCL (the common form) or the equivalent JSON.

Only the subset ACL policies use: blocks with zero or more string labels (``namespace "default" { ... }``,
``node { ... }``, ``variables { path "x/*" { ... } }``), attributes whose values are strings, lists of strings,
booleans or numbers, and ``#``, ``//`` and ``/* */`` comments. The result is a ``Block`` tree that
``policy`` turns into rules; anything the parser cannot read is a ``RulesError`` naming the line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class RulesError(ValueError):
    """Rules that cannot be parsed; the message says where."""


@dataclass
class Block:
    """A block (or the document): its attributes and its child blocks, in order."""

    kind: str = ""
    labels: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<heredoc><<-?(?P<tag>[A-Za-z_]+)\n.*?\n\s*(?P=tag))
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_\-]*)
  | (?P<punct>[{}\[\]=,:])
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        line = text.count("\n", 0, pos) + 1
        if m is None:
            raise RulesError(f"line {line}: unexpected {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind == "tag":
            kind = "heredoc"
        value: Any = m.group(0)
        pos = m.end()
        if kind in ("ws", "comment"):
            continue
        if kind == "string":
            value = json.loads(value)
        elif kind == "number":
            value = float(value) if "." in value else int(value)
        elif kind == "heredoc":
            kind, value = "string", value.split("\n", 1)[1].rsplit("\n", 1)[0]
        elif kind == "ident" and value in ("true", "false"):
            kind, value = "bool", value == "true"
        out.append((kind, value, line))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: Any = None) -> tuple[str, Any, int]:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            where = f"line {token[2]}" if token else "the end"
            raise RulesError(f"{where}: expected {value or kind}, found {token[1] if token else 'nothing'!r}")
        self.pos += 1
        return token

    def body(self, block: Block, closing: bool) -> Block:
        while True:
            token = self.peek()
            if token is None:
                if closing:
                    raise RulesError("the end: a block is not closed ('}' missing)")
                return block
            if token[0] == "punct" and token[1] == "}":
                if not closing:
                    raise RulesError(f"line {token[2]}: unexpected '}}'")
                self.pos += 1
                return block
            if token[0] not in ("ident", "string"):
                raise RulesError(f"line {token[2]}: expected a name, found {token[1]!r}")
            name = self.take(token[0])[1]
            nxt = self.peek()
            if nxt is not None and nxt[0] == "punct" and nxt[1] in ("=", ":"):
                self.pos += 1
                block.attrs[name] = self.value()
                continue
            labels: list[str] = []
            while (nxt := self.peek()) is not None and nxt[0] == "string":
                labels.append(self.take("string")[1])
            self.take("punct", "{")
            block.blocks.append(self.body(Block(name, tuple(labels)), closing=True))

    def value(self) -> Any:
        token = self.peek()
        if token is None:
            raise RulesError("the end: a value is missing")
        if token[0] in ("string", "number", "bool"):
            self.pos += 1
            return token[1]
        if token[0] == "punct" and token[1] == "[":
            self.pos += 1
            items: list[Any] = []
            while True:
                nxt = self.peek()
                if nxt is not None and nxt[0] == "punct" and nxt[1] == "]":
                    self.pos += 1
                    return items
                items.append(self.value())
                nxt = self.peek()
                if nxt is not None and nxt[0] == "punct" and nxt[1] == ",":
                    self.pos += 1
        raise RulesError(f"line {token[2]}: unexpected {token[1]!r} as a value")


def _from_json(data: Any, kind: str = "", labels: tuple[str, ...] = ()) -> Block:
    """JSON rules: ``{"namespace": {"default": {"policy": "write"}}, "node": {"policy": "read"}}``."""
    block = Block(kind, labels)
    if not isinstance(data, dict):
        raise RulesError("JSON rules must be an object")
    for key, value in data.items():
        if isinstance(value, dict):
            if value and all(isinstance(v, dict) for v in value.values()) and key in _LABELLED:
                for label, inner in value.items():
                    block.blocks.append(_from_json(inner, key, (label,)))
            else:
                block.blocks.append(_from_json(value, key))
        else:
            block.attrs[key] = value
    return block


# Blocks that take a label; in JSON their label is a key of the object.
_LABELLED = {
    "namespace", "host_volume", "path", "key", "key_prefix", "service", "service_prefix", "node", "node_prefix",
    "session", "session_prefix", "agent", "agent_prefix", "event", "event_prefix", "query", "query_prefix",
}  # fmt: skip


def parse(text: str) -> Block:
    """The rules document (HCL, or JSON when it starts with '{')."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return _from_json(json.loads(stripped))
        except ValueError as exc:
            raise RulesError(f"invalid JSON rules: {exc}") from None
    return _Parser(text).body(Block(), closing=False)
