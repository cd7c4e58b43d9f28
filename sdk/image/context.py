"""The build context of an image: the local files its ADD instructions copy, all inside one build directory.

A source is resolved (symlinks included) before it is accepted, so neither ``../`` nor an absolute path nor a
link can pull a file from outside the build directory into an image.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path, PurePosixPath

from chutes.chute.errors import ChuteError

_URL_RE = re.compile(r"^https?://[^\s\"'$]+$")
_GIT_RE = re.compile(r"^(?:git@[^\s\"'$]+|https?://[^\s\"'$]+\.git(?:#[^\s\"'$]*)?)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def source_kind(source: str) -> str:
    """'git', 'url' or 'local'."""
    if _GIT_RE.fullmatch(source):
        return "git"
    if _URL_RE.fullmatch(source):
        return "url"
    if "://" in source:
        raise ChuteError(f"unsupported add() source {source!r}: use a local path, an http(s) URL or a git URL")
    return "local"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class BuildContext:
    """The build directory and the files (relative paths) that ADD instructions take from it."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self._files: set[str] = set()

    def files(self) -> list[str]:
        return sorted(self._files)

    def add(self, source: str, build_dir: str | Path | None) -> str:
        """Record the files ``source`` names; return the source as written in the Dockerfile (relative, posix)."""
        root = Path(build_dir if build_dir is not None else os.getcwd()).resolve()
        if not root.is_dir():
            raise ChuteError(f"build directory {str(root)!r} does not exist")
        if self.root is not None and root != self.root:
            raise ChuteError(
                f"add() sources come from one build directory; {str(self.root)!r} is in use, not {str(root)!r}"
            )
        if "$" in source or "\\" in source:
            raise ChuteError(f"invalid add() source {source!r}: no '$' or '\\' in paths")
        hint = f"keep sources inside the build directory {str(root)!r}"
        candidate = Path(source)
        absolute = candidate if candidate.is_absolute() else root / candidate
        lexical = Path(os.path.normpath(absolute))
        if not _inside(lexical, root):
            raise ChuteError(f"add() source {source!r} is outside the build directory", hint=hint)
        relative = PurePosixPath(lexical.relative_to(root).as_posix())
        matches = glob.glob(str(lexical)) if _GLOB_CHARS.search(source) else [str(lexical)]
        matches = [m for m in matches if os.path.lexists(m)]
        if not matches:
            raise ChuteError(f"add() source {source!r} matches no file in {str(root)!r}")
        found: set[str] = set()
        for match in matches:
            found.update(self._collect(Path(match), root, source, hint))
        self.root = root
        self._files.update(found)
        text = str(relative)
        return "." if text in ("", ".") else text

    @staticmethod
    def _collect(path: Path, root: Path, source: str, hint: str) -> set[str]:
        real = path.resolve()
        if not _inside(real, root):
            raise ChuteError(f"add() source {source!r} leads outside the build directory (via {path})", hint=hint)
        if real.is_file():
            return {real.relative_to(root).as_posix()}
        if not real.is_dir():
            raise ChuteError(f"add() source {source!r}: {path} is neither a file nor a directory")
        files: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
            for name in [*filenames, *dirnames]:
                entry = Path(dirpath, name)
                target = entry.resolve()
                if not _inside(target, root):
                    raise ChuteError(
                        f"add() source {source!r} contains a link leading outside the build directory: {entry}",
                        hint=hint,
                    )
                if target.is_file():
                    files.add(Path(dirpath, name).relative_to(root).as_posix())
        return files
