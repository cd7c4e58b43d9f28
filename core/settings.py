"""Settings declared once per daemon: name, type, default, environment variable, flag and a one-line doc.

A daemon lists its settings (a :class:`Settings` table, or :func:`setting` fields on its pydantic config model)
and everything else comes from that list: the command-line flags and their ``--help`` text
(:meth:`Settings.add_flags`), reading the environment (:meth:`Settings.from_env`), and the tables of
docs/configuration.md (:meth:`Settings.markdown`; ``python -m chutes.core.configdocs`` rewrites them).

Renamed variables and flags are still read, with a :class:`DeprecatedName` warning that names the new one.
Precedence, lowest first: the default, the environment (the current name before an old one), then flags.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast, get_args, get_origin

from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

_EXTRA = "chutes_setting"


class DeprecatedName(FutureWarning):
    """An environment variable or flag was given by its old name (shown by default, unlike DeprecationWarning:
    the people who read it are operators, not developers)."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a daemon."""

    name: str  # the config field (and the flag's ``dest``)
    doc: str  # one line, for --help and the docs
    env: str | None = None
    flag: str | None = None
    default: Any = None  # None: unset unless given
    parse: Callable[[str], Any] = str  # text (a flag or a variable) to value
    choices: tuple[str, ...] | None = None
    shown_default: str | None = None  # how --help and the docs show a computed default
    const: Any = None  # a flag without a value (``store_const``) that sets this
    old_env: tuple[str, ...] = ()  # earlier names of the variable, still read
    old_flags: tuple[str, ...] = ()
    metavar: str | None = None
    multiple: bool = False  # the flag may be repeated; its value is the list (a variable gives one item)

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default == "":
            return ""
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, tuple | list):
            return ",".join(str(v) for v in self.default)
        return str(self.default)

    def text(self) -> str:
        """The one-line help: the doc, then where the value comes from (for click/typer, which take it as is)."""
        where = [f"env {self.env}"] if self.env else []
        if self.default_text:
            where.append(f"default {self.default_text}")
        text = f"{self.doc} [{'; '.join(where)}]" if where else self.doc
        return text.replace("`", "")

    def help(self) -> str:
        """:meth:`text` for argparse, which formats help with ``%``."""
        return self.text().replace("%", "%%")


def setting(
    default: Any = PydanticUndefined,
    *,
    doc: str,
    env: str | None = None,
    flag: str | None = None,
    shown_default: str | None = None,
    const: Any = None,
    old_env: tuple[str, ...] = (),
    old_flags: tuple[str, ...] = (),
    **field: Any,
) -> Any:
    """A pydantic ``Field`` that is also a setting (its type and default are the field's); see
    :meth:`Settings.from_model`."""
    extra = {
        "env": env,
        "flag": flag,
        "shown_default": shown_default,
        "const": const,
        "old_env": list(old_env),
        "old_flags": list(old_flags),
    }
    return Field(default, description=doc, json_schema_extra={_EXTRA: extra}, **field)


def _choices(annotation: Any) -> tuple[str, ...] | None:
    if get_origin(annotation) is Literal:
        return tuple(str(a) for a in get_args(annotation))
    return None


class Settings:
    """The settings of one program (``prog``), in the order its docs list them."""

    def __init__(self, prog: str, items: Iterable[Setting]) -> None:
        self.prog = prog
        self.items: tuple[Setting, ...] = tuple(items)
        self.by_name = {s.name: s for s in self.items}
        if len(self.by_name) != len(self.items):
            raise ValueError(f"{prog}: two settings share a name")

    @classmethod
    def from_model(cls, prog: str, model: type[BaseModel]) -> Settings:
        """The fields of ``model`` declared with :func:`setting`; a flag's text is validated by the model."""
        items = []
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra
            if not isinstance(extra, dict) or not isinstance(extra.get(_EXTRA), dict):
                continue
            meta = cast(dict[str, Any], extra[_EXTRA])
            default = None if info.default is PydanticUndefined else info.default
            items.append(
                Setting(
                    name=name,
                    doc=info.description or "",
                    env=meta["env"],
                    flag=meta["flag"],
                    default=default,
                    choices=_choices(info.annotation),
                    shown_default=meta["shown_default"],
                    const=meta["const"],
                    old_env=tuple(meta["old_env"]),
                    old_flags=tuple(meta["old_flags"]),
                )
            )
        return cls(prog, items)

    def __iter__(self) -> Any:
        return iter(self.items)

    def env_vars(self) -> dict[str, str]:
        """Current variable name → setting name."""
        return {s.env: s.name for s in self.items if s.env}

    def env_vars_by_name(self) -> dict[str, str]:
        """Setting name → current variable name, for the settings read from the environment."""
        return {s.name: s.env for s in self.items if s.env}

    # -- flags ----------------------------------------------------------------------------------------------

    def add_flags(self, parser: argparse._ActionsContainer, names: Sequence[str] | None = None) -> None:
        """Add the flags of ``names`` (default: every setting with a flag). An unset flag leaves its ``dest``
        None (or absent), so the environment's value stands."""
        chosen = [self.by_name[n] for n in names] if names is not None else [s for s in self.items if s.flag]
        for s in chosen:
            if not s.flag:
                raise ValueError(f"{self.prog}: setting {s.name} has no flag")
            kwargs: dict[str, Any] = {"dest": s.name, "default": None, "help": s.help()}
            if s.const is not None:
                kwargs.update(action="store_const", const=s.const)
            elif s.multiple:
                kwargs.update(action="append", type=s.parse, metavar=s.metavar)
            else:
                metavar = s.metavar or (None if s.choices else s.flag.lstrip("-").upper().replace("-", "_"))
                kwargs.update(type=s.parse, choices=s.choices, metavar=metavar)
            parser.add_argument(s.flag, **kwargs)
            for old in s.old_flags:
                old_kwargs = dict(kwargs, dest=_old_dest(s.name, old), help=argparse.SUPPRESS)
                parser.add_argument(old, **old_kwargs)

    def from_args(self, args: argparse.Namespace | Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """(setting name → value, setting name → the flag it came from) for the flags given."""
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for s in self.items:
            for old in s.old_flags:
                value = given.get(_old_dest(s.name, old))
                if value is not None:
                    _warn(f"{self.prog}: {old} is deprecated; use {s.flag}")
                    values[s.name], sources[s.name] = value, old
            value = given.get(s.name)
            if value is not None and s.flag:
                values[s.name], sources[s.name] = value, s.flag
        return values, sources

    # -- the environment ------------------------------------------------------------------------------------

    def from_env(
        self, env: Mapping[str, str], *, parse: bool = False, names: Iterable[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(setting name → text, or value with ``parse``, setting name → the variable it came from) for the
        variables set and not empty (of the settings ``names``, default all); an old name is read when the
        current one is not set, with a warning."""
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for s in self.items if names is None else [self.by_name[n] for n in names]:
            for var in (s.env, *s.old_env) if s.env else ():
                raw = (env.get(var) or "").strip()
                if not raw:
                    continue
                if var != s.env:
                    _warn(f"{self.prog}: {var} is deprecated; use {s.env}")
                value = s.parse(raw) if parse else raw
                values[s.name] = [value] if s.multiple else value
                sources[s.name] = var
                break
        return values, sources

    def resolve(
        self, env: Mapping[str, str], args: argparse.Namespace | Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Every setting's value: the flag, else the variable, else the default (parsed with ``parse``)."""
        values = {s.name: s.default for s in self.items}
        values.update(self.from_env(env, parse=True)[0])
        if args is not None:
            values.update(self.from_args(args)[0])
        return values

    # -- the docs -------------------------------------------------------------------------------------------

    def markdown(self) -> str:
        """The table docs/configuration.md shows for this program."""
        rows = ["| environment | flag | default | |", "|---|---|---|---|"]
        for s in self.items:
            env = f"`{s.env}`" if s.env else ""
            if s.old_env:
                env += " (formerly " + ", ".join(f"`{o}`" for o in s.old_env) + ")"
            flag = f"`{s.flag}`" if s.flag else ""
            if s.old_flags:
                flag += " (formerly " + ", ".join(f"`{o}`" for o in s.old_flags) + ")"
            default = (
                s.shown_default if s.shown_default is not None else f"`{s.default_text}`" if s.default_text else ""
            )
            rows.append(f"| {env} | {flag} | {default} | {s.doc} |")
        return "\n".join(rows) + "\n"

    def with_defaults(self, **defaults: Any) -> Settings:
        """The same table with other defaults (e.g. computed from the environment at start)."""
        return Settings(
            self.prog, (replace(s, default=defaults[s.name]) if s.name in defaults else s for s in self.items)
        )


def _old_dest(name: str, flag: str) -> str:
    return f"_old_{name}_{flag.lstrip('-').replace('-', '_')}"


def _warn(message: str) -> None:
    warnings.warn(message, DeprecatedName, stacklevel=3)
