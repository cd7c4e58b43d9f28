"""Nomad ``template`` blocks, the part the devcluster renders: Nomad Variables into files and task environments.

Pure functions: parsing the subset of consul-template's language the devcluster supports, rendering it against
variables, parsing the rendered ``env = true`` file as Nomad does (hashicorp/go-envparse), and checking a job's
templates at registration so that an unsupported feature is a 400 that says so (Nomad would accept it).

The language subset, with Go's ``{{-``/``-}}`` whitespace trimming and ``{{/* comments */}}``::

    {{ with nomadVar "nomad/jobs/<job>" }} ... {{ end }}    the variable's items become "."
    {{ index . "KEY" }}   {{ .KEY }}                          one item's value ("" when absent)
    {{ env "NAME" }}                                          the task's environment variable ("" when unset)
    {{ index . (env "NAME") }}                                the item named by a task variable
    {{ index . (printf "PREFIX_%s" (env "NAME")) }}           ... or by a name made with it (%s and %% only)

``nomadVar "path@namespace"`` names another namespace. A variable that does not exist (or that the task may
not read) makes the template *block*, as in Nomad: :class:`Blocked`. ``env`` reads the task's environment as
Nomad's template runner gives it (``NOMAD_*``, ``NOMAD_META_*``, the task's ``Env``), e.g. a dispatched job's
meta.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NS_PER_S = 1_000_000_000
DEFAULT_DELIMS = ("{{", "}}")
SUPPORTED_CHANGE_MODES = ("restart", "noop", "signal")
SUPPORTED = (
    'text, {{ with nomadVar "path" }} ... {{ end }}, {{ index . "KEY" }}, {{ .KEY }}, {{ env "NAME" }}, '
    '{{ index . (env "NAME") }}, {{ index . (printf "FMT" (env "NAME")) }} and {{/* comments */}}'
)

_WITH = re.compile(r'^with\s+nomadVar\s+"((?:[^"\\]|\\.)*)"$')
_INDEX = re.compile(r"^index\s+\.\s+(.+)$", re.DOTALL)
_ENV = re.compile(r'^env\s+"((?:[^"\\]|\\.)*)"$')
_ARG_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<open>\()|(?P<close>\))|(?P<word>[^\s()"]+))')
_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)$")


class TemplateUnsupported(ValueError):
    """The template uses what the devcluster does not render; the message names it and what is supported."""


class TemplateFailed(Exception):
    """Rendering failed for good (Nomad fails the task): a missing key with ``ErrMissingKey``, bad env file."""


class Blocked(Exception):
    """A variable the template reads does not exist or may not be read: the task waits, as in Nomad."""

    def __init__(self, path: str, namespace: str, why: str = "") -> None:
        super().__init__(f"Missing: nomad.var.block({path}@{namespace}.global)" + (f" ({why})" if why else ""))
        self.path = path
        self.namespace = namespace


# -- the language ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Env:
    """``env "NAME"``: the task's environment variable."""

    name: str


@dataclass(frozen=True)
class Printf:
    """``printf "FMT" ARG...`` with ``%s`` and ``%%`` only."""

    fmt: str
    args: tuple[Expr, ...]


Expr = str | Env | Printf  # a str is a literal


@dataclass(frozen=True)
class Item:
    key: Expr


@dataclass(frozen=True)
class EnvOut:
    """``{{ env "NAME" }}`` as output."""

    name: str


@dataclass(frozen=True)
class WithVar:
    path: str
    namespace: str | None
    body: list[Node] = field(default_factory=list)


Node = Text | Item | EnvOut | WithVar


@dataclass(frozen=True)
class Parsed:
    nodes: list[Node]

    def variables(self, default_namespace: str) -> set[tuple[str, str]]:
        """(namespace, path) of every variable the template reads."""
        return {(n.namespace or default_namespace, n.path) for n in self.nodes if isinstance(n, WithVar)}


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_var(ref: str) -> tuple[str, str | None]:
    path, _, namespace = ref.partition("@")
    return path, namespace or None


def _tokens(source: str, left: str, right: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) pieces, with Go's trim markers applied to the neighbouring text."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find(left, pos)
        if start < 0:
            text = source[pos:]
            out.append(("text", text.lstrip() if trim_next else text))
            return out
        text = source[pos:start]
        if trim_next:
            text = text.lstrip()
        inner_start = start + len(left)
        trim_left = source.startswith("- ", inner_start) or source.startswith("-\n", inner_start)
        if trim_left:
            text = text.rstrip()
            inner_start += 1
        end = source.find(right, inner_start)
        if end < 0:
            raise TemplateUnsupported(f"unclosed action at offset {start}: missing {right!r}")
        inner = source[inner_start:end]
        trim_next = inner.endswith(" -") or inner.endswith("\n-")
        if trim_next:
            inner = inner[:-1]
        out.append(("text", text))
        out.append(("action", inner.strip()))
        pos = end + len(right)


def _arg(text: str) -> Expr:
    """The argument of ``index .``: a quoted key, ``(env "NAME")`` or ``(printf "FMT" ARG...)``."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _ARG_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise TemplateUnsupported(f"cannot read {text!r} as an argument; the devcluster renders {SUPPORTED}")
            break
        kind = next(k for k, v in m.groupdict().items() if v is not None)
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    expr, used = _expr(tokens, 0, text)
    if used != len(tokens):
        raise TemplateUnsupported(f"unexpected {tokens[used][1]!r} in {text!r}; the devcluster renders {SUPPORTED}")
    return expr


def _expr(tokens: list[tuple[str, str]], i: int, text: str) -> tuple[Expr, int]:
    def unsupported() -> TemplateUnsupported:
        return TemplateUnsupported(
            f"template argument {text!r} is not supported by the devcluster; it renders {SUPPORTED}"
        )

    if i >= len(tokens):
        raise unsupported()
    kind, value = tokens[i]
    if kind == "str":
        return _unquote(value[1:-1]), i + 1
    if kind != "open" or i + 1 >= len(tokens) or tokens[i + 1][0] != "word":
        raise unsupported()
    func = tokens[i + 1][1]
    i += 2
    if func == "env":
        if i + 1 >= len(tokens) or tokens[i][0] != "str" or tokens[i + 1][0] != "close":
            raise unsupported()
        return Env(_unquote(tokens[i][1][1:-1])), i + 2
    if func == "printf":
        if i >= len(tokens) or tokens[i][0] != "str":
            raise unsupported()
        fmt = _unquote(tokens[i][1][1:-1])
        args: list[Expr] = []
        i += 1
        while i < len(tokens) and tokens[i][0] != "close":
            arg, i = _expr(tokens, i, text)
            args.append(arg)
        if i >= len(tokens):
            raise unsupported()
        verbs = re.findall(r"%.", fmt.replace("%%", ""))
        if any(v != "%s" for v in verbs) or len(verbs) != len(args) or fmt.replace("%%", "").endswith("%"):
            raise TemplateUnsupported(f"printf {fmt!r} with {len(args)} argument(s): the devcluster formats %s only")
        return Printf(fmt, tuple(args)), i + 1
    raise unsupported()


def _evaluate(expr: Expr, env: Mapping[str, str]) -> str:
    if isinstance(expr, str):
        return expr
    if isinstance(expr, Env):
        return env.get(expr.name, "")
    values = iter(_evaluate(arg, env) for arg in expr.args)
    return re.sub(r"%[s%]", lambda m: "%" if m.group(0) == "%%" else next(values), expr.fmt)


def parse(source: str, left: str | None = None, right: str | None = None) -> Parsed:
    """The template's tree; TemplateUnsupported for anything outside the supported subset."""
    left, right = left or DEFAULT_DELIMS[0], right or DEFAULT_DELIMS[1]
    root: list[Node] = []
    stack: list[WithVar] = []
    for kind, value in _tokens(source, left, right):
        target = stack[-1].body if stack else root
        if kind == "text":
            if value:
                target.append(Text(value))
            continue
        if value.startswith("/*") and value.endswith("*/"):
            continue
        if m := _WITH.match(value):
            if stack:
                raise TemplateUnsupported("nested {{ with nomadVar }} blocks are not supported by the devcluster")
            path, namespace = _split_var(_unquote(m.group(1)))
            block = WithVar(path, namespace)
            root.append(block)
            stack.append(block)
        elif value == "end":
            if not stack:
                raise TemplateUnsupported("{{ end }} without a {{ with nomadVar ... }}")
            stack.pop()
        elif m := _ENV.match(value):
            target.append(EnvOut(_unquote(m.group(1))))
        elif (m := _INDEX.match(value)) or (m := _FIELD.match(value)):
            if not stack:
                raise TemplateUnsupported(f"{{{{ {value} }}}} outside a {{{{ with nomadVar ... }}}} block")
            target.append(Item(_arg(m.group(1)) if value.startswith("index") else m.group(1)))
        else:
            raise TemplateUnsupported(
                f"template action {{{{ {value} }}}} is not supported by the devcluster; it renders {SUPPORTED}"
            )
    if stack:
        raise TemplateUnsupported("{{ with nomadVar ... }} without its {{ end }}")
    return Parsed(root)


Lookup = Callable[[str, str], Mapping[str, str]]  # (namespace, path) -> items; raises Blocked


def render(
    parsed: Parsed,
    lookup: Lookup,
    default_namespace: str,
    *,
    missing_key_error: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """The rendered text; Blocked when a variable is missing, TemplateFailed for a missing key with
    ``missing_key_error`` (Nomad's ``error_on_missing_key``). ``env``: the task's environment (``env "X"``)."""
    task_env = env or {}
    out: list[str] = []
    for node in parsed.nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, EnvOut):
            out.append(task_env.get(node.name, ""))
        elif isinstance(node, WithVar):
            items = lookup(node.namespace or default_namespace, node.path)
            for inner in node.body:
                if isinstance(inner, Text):
                    out.append(inner.text)
                elif isinstance(inner, EnvOut):
                    out.append(task_env.get(inner.name, ""))
                elif isinstance(inner, Item):
                    key = _evaluate(inner.key, task_env)
                    if key not in items and missing_key_error:
                        raise TemplateFailed(f"map has no entry for key {key!r} in variable {node.path}")
                    out.append(items.get(key, ""))
    return "".join(out)


# -- env = true: hashicorp/go-envparse ------------------------------------------------------------------------


class EnvParseError(ValueError):
    pass


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines as go-envparse reads them: blank lines and ``#`` comments skipped, ``export``
    prefix allowed, single quotes literal, double quotes with ``\\\\ \\" \\n \\t`` escapes, control characters
    refused."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        try:
            parsed = _env_line(line)
        except EnvParseError as exc:
            raise EnvParseError(f"error on line {number}: {exc}") from None
        if parsed is not None:
            env[parsed[0]] = parsed[1]
    return env


def _env_line(line: str) -> tuple[str, str] | None:
    if not line:
        return None
    key, sep, value = line.partition("=")
    if not sep:
        if not line.strip() or line.strip().startswith("#"):
            return None
        raise EnvParseError('missing "="')
    key, value = key.strip(), value.strip()
    if key.startswith("#") and not value:
        return None
    key = key.removeprefix("export ")
    if not key:
        raise EnvParseError("empty key")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise EnvParseError(f"key must be [A-Za-z_][A-Za-z0-9_]*, got {key!r}")
    out: list[str] = []
    last_significant = 0
    mode = "normal"
    for ch in value:
        if ord(ch) < 32:
            raise EnvParseError(f"0x{ord(ch):02x} is an invalid value character")
        if mode == "normal":
            if ch == '"':
                mode = "double"
            elif ch == "'":
                mode = "single"
            elif ch == "#":
                return key, "".join(out[:last_significant])
            else:
                out.append(ch)
                if ch not in " \t":
                    last_significant = len(out)
        elif mode == "double":
            if ch == '"':
                mode = "normal"
            elif ch == "\\":
                mode = "escape"
            else:
                out.append(ch)
                last_significant = len(out)
        elif mode == "escape":
            escapes = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
            if ch not in escapes:
                raise EnvParseError(f"invalid escape sequence: {ch}")
            out.append(escapes[ch])
            last_significant = len(out)
            mode = "double"
        else:  # single
            if ch == "'":
                mode = "normal"
            else:
                out.append(ch)
                last_significant = len(out)
    if mode == "double":
        raise EnvParseError('unmatched "')
    if mode == "single":
        raise EnvParseError("unmatched '")
    if mode == "escape":
        raise EnvParseError("incomplete escape sequence")
    return key, "".join(out)


# -- checking a job's templates at registration -----------------------------------------------------------------


def problems(templates: list[Any] | None, where: str) -> list[str]:
    """What the devcluster cannot do with these templates (Nomad's own validation, then its limits)."""
    found: list[str] = []
    for i, tmpl in enumerate(templates or []):
        tw = f"{where}, template {i + 1}"
        if not tmpl.EmbeddedTmpl and not tmpl.SourcePath:
            found.append(f"{tw}: Must specify a source path or have an embedded template")
        if not tmpl.DestPath:
            found.append(f"{tw}: Must specify a destination for the template")
        mode = tmpl.ChangeMode or "restart"
        if mode == "signal" and not tmpl.ChangeSignal:
            found.append(f"{tw}: Must specify signal value when change mode is signal")
        if mode == "signal" and tmpl.Envvars:
            found.append(f"{tw}: cannot use signals with env var templates")
        if tmpl.Splay is not None and tmpl.Splay < 0:
            found.append(f"{tw}: Must specify positive splay value")
        if tmpl.DestPath and _escapes(tmpl.DestPath):
            found.append(f"{tw}: destination escapes allocation directory")
        # The devcluster's own limits: refused clearly rather than ignored.
        if tmpl.SourcePath:
            found.append(f"{tw}: SourcePath is not supported by the devcluster (use EmbeddedTmpl)")
        if mode not in SUPPORTED_CHANGE_MODES:
            found.append(f"{tw}: ChangeMode {mode!r} is not supported by the devcluster (restart, noop or signal)")
        if tmpl.EmbeddedTmpl:
            try:
                parse(tmpl.EmbeddedTmpl, tmpl.LeftDelim, tmpl.RightDelim)
            except TemplateUnsupported as exc:
                found.append(f"{tw}: {exc}")
    return found


def _escapes(dest: str) -> bool:
    """Nomad's ``PathEscapesAllocDir("task", dest)``: may climb from the task directory to the allocation's."""
    depth = 1
    for part in dest.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return True
    return False


def implicit_access(path: str, job: str, group: str, task: str) -> bool:
    """Nomad's implicit workload-identity grant: exactly these four paths, in the job's namespace."""
    return path in ("nomad/jobs", f"nomad/jobs/{job}", f"nomad/jobs/{job}/{group}", f"nomad/jobs/{job}/{group}/{task}")
