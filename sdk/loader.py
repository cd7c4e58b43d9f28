"""Load a chute from a reference: ``path/to/file.py:attr`` or ``package.module:attr`` (``:attr`` optional).

The attribute may be a ``Chute`` or a ``ChutePack`` (what the templates return). Every failure is a
``LoadError`` that says which part of the reference is wrong, with a hint; an exception raised while the
user's module is imported is reported with its type, message and line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from chutes.chute.base import Chute, ChutePack
from chutes.chute.errors import ChuteError

REF_HINT = "use FILE.py:ATTR (e.g. examples/hello.py:chute) or MODULE:ATTR"
HEAVY_IMPORT_HINT = (
    "the module is imported on this machine to read the chute: import heavy or GPU-only libraries "
    "(torch, vllm, transformers) inside startup hooks or cord functions"
)


class LoadError(ChuteError):
    """A chute reference that does not lead to a chute."""


@dataclass(frozen=True, slots=True)
class LoadedChute:
    """A chute and where it came from (what ``chutes.bundle`` packs)."""

    chute: Chute
    module: ModuleType
    module_path: Path
    attr: str
    ref: str

    @property
    def entrypoint(self) -> str:
        """``<module>:<attr>`` as the runtime imports it from the extracted bundle."""
        return f"{self.module_path.stem}:{self.attr}"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``target:attr``; the attribute is None when the reference has none."""
    if not isinstance(ref, str) or not ref.strip():
        raise LoadError(f"empty chute reference {ref!r}", hint=REF_HINT)
    target, sep, attr = ref.strip().rpartition(":")
    if not sep:
        return ref.strip(), None
    if not target or not attr:
        raise LoadError(f"invalid chute reference {ref!r}", hint=REF_HINT)
    return target, attr


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _describe(exc: BaseException, path: Path | None) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            parts.append(f"{exc.title}.{where}: {message}" if where else f"{exc.title}: {message}")
        text = "; ".join(parts)
    elif isinstance(exc, ChuteError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    if path is not None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path]
        if frames:
            text += f" (line {frames[-1].lineno})"
    return text


def _import_failure(exc: BaseException, what: str, path: Path | None) -> LoadError:
    hint = getattr(exc, "hint", None)
    if hint is None and isinstance(exc, ImportError):
        hint = HEAVY_IMPORT_HINT
    return LoadError(f"importing {what} failed: {_describe(exc, path)}", hint=hint)


def _module_name(path: Path) -> str:
    name = path.stem
    existing = sys.modules.get(name)
    if existing is None or Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return name
    # Another module (maybe the standard library's) owns the name here; the bundle still uses the file's stem.
    return f"_chutes_user_{name}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _load_file(target: str) -> tuple[ModuleType, Path]:
    path = Path(target)
    if path.suffix != ".py" and not path.exists() and path.with_suffix(".py").is_file():
        path = path.with_suffix(".py")
    if not path.is_file():
        raise LoadError(f"no such file: {target}", hint=REF_HINT)
    if path.suffix != ".py":
        raise LoadError(f"{target} is not a Python file", hint=REF_HINT)
    path = path.resolve()
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {target}", hint=REF_HINT)
    module = importlib.util.module_from_spec(spec)
    # Files beside the module (bundled with it) are importable, as they will be on the instance.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        raise _import_failure(exc, target, path) from exc
    return module, path


def _load_module(target: str) -> tuple[ModuleType, Path]:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise LoadError(f"no module named {target!r}", hint=REF_HINT) from exc
        raise _import_failure(exc, target, None) from exc
    except (Exception, SystemExit) as exc:
        raise _import_failure(exc, target, None) from exc
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        raise LoadError(f"module {target!r} has no Python source file to bundle", hint=REF_HINT)
    return module, Path(file).resolve()


def _chute_attrs(module: ModuleType) -> list[str]:
    return sorted(name for name, value in vars(module).items() if isinstance(value, Chute | ChutePack))


def _as_chute(value: Any) -> Chute | None:
    if isinstance(value, Chute):
        return value
    if isinstance(value, ChutePack):
        return value.chute
    return None


def load_chute(ref: str) -> LoadedChute:
    """Import the module of ``ref`` and return its chute (see the module docstring)."""
    target, attr = parse_ref(ref)
    module, path = _load_file(target) if _is_file_target(target) else _load_module(target)
    found = _chute_attrs(module)
    if attr is None:
        if len(found) != 1:
            listing = ", ".join(found) if found else "none"
            raise LoadError(
                f"{target} defines {len(found)} chutes ({listing}); say which one",
                hint=f"use {target}:ATTR",
            )
        attr = found[0]
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            listing = ", ".join(found) if found else "none"
            raise LoadError(
                f"{target} has no attribute {attr!r} (chutes defined there: {listing})",
                hint=f"use {target}:{found[0]}" if len(found) == 1 else REF_HINT,
            )
        value = getattr(value, part)
    chute = _as_chute(value)
    if chute is None:
        raise LoadError(
            f"{target}:{attr} is a {type(value).__name__}, not a Chute or ChutePack",
            hint="point at the object made by Chute(...) or returned by a template builder",
        )
    return LoadedChute(chute=chute, module=module, module_path=path, attr=attr, ref=ref)


def locate_chute(chute: Chute) -> tuple[Path, str]:
    """The module file that defines ``chute`` at top level and its entrypoint ``<module>:<attr>``."""
    candidates: list[tuple[int, Path, str]] = []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            continue
        for name, value in list(vars(module).items()):
            if _as_chute(value) is chute:
                path = Path(file).resolve()
                candidates.append((0 if name == "chute" else 1, path, f"{path.stem}:{name}"))
    if not candidates:
        raise LoadError(
            f"chute {chute.name!r} is not defined at the top level of a module file",
            hint="assign it to a module-level variable (chute = Chute(...)) and deploy FILE.py:chute",
        )
    _, path, entrypoint = min(candidates, key=lambda c: (c[0], str(c[1])))
    return path, entrypoint
