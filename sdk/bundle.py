"""Bundles: the chute's source as a gzip-compressed tar (docs/internal-contracts.md, "Bundle").

A bundle holds the module file that defines the chute, the other ``*.py`` files beside it (not recursive, no
hidden files) and ``chutes_bundle.json`` (``{"entrypoint": "<module>:<attr>", "sdk_version": ...}``). Builds
are reproducible (sorted members, zero timestamps and owners), so the same source gives the same sha256,
which is the bundle's id.

Bundles come from users, so reading one is defensive: ``inspect_bundle`` and ``safe_extract`` decompress
with a bound (no gzip bombs), accept only regular files and directories with relative paths (no ``..``, no
absolute paths, no links, no devices), limit sizes and member counts, and write files without following links.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import chutes

META_NAME = "chutes_bundle.json"
MAX_BUNDLE_BYTES = 50 * 1024 * 1024
MAX_EXTRACTED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 4096
ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TAR_OVERHEAD = 1536  # per member: header, possible pax header, padding


class BundleError(ValueError):
    """A bundle that cannot be built or that is refused when read."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Bundle:
    """A built bundle: the compressed bytes, their sha256 (the bundle id) and the entrypoint."""

    data: bytes
    sha256: str
    entrypoint: str
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BundleMeta:
    """What a bundle says about itself, once checked."""

    entrypoint: str
    sdk_version: str
    files: tuple[str, ...]


def _source_files(module_path: Path) -> list[Path]:
    folder = module_path.parent
    files = {module_path}
    for path in folder.glob("*.py"):
        if path.name.startswith(".") or path.is_symlink() or not path.is_file():
            continue
        files.add(path)
    return sorted(files, key=lambda p: p.name)


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def build_bundle(source: str | Path, entrypoint: str | None = None) -> Bundle:
    """Bundle a chute: ``build_bundle("app.py:chute")``, or ``build_bundle(module_path, "app:chute")``."""
    if entrypoint is None:
        from chutes.loader import load_chute

        loaded = load_chute(str(source))
        module_path, entrypoint = loaded.module_path, loaded.entrypoint
    else:
        module_path = Path(source).resolve()
    if not ENTRYPOINT_RE.fullmatch(entrypoint):
        raise BundleError(f"invalid entrypoint {entrypoint!r}: expected <module>:<attr>")
    if not module_path.is_file() or module_path.suffix != ".py":
        raise BundleError(f"{module_path} is not a Python file")
    if entrypoint.split(":")[0] != module_path.stem:
        raise BundleError(f"entrypoint {entrypoint!r} does not name the module file {module_path.name}")
    files = _source_files(module_path)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            _tar_member(tar, path.name, path.read_bytes())
        meta = {"entrypoint": entrypoint, "sdk_version": chutes.__version__}
        _tar_member(tar, META_NAME, json.dumps(meta, sort_keys=True).encode())
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as gz:
        gz.write(raw.getvalue())
    data = compressed.getvalue()
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"the bundle is {len(data) / 2**20:.1f} MiB compressed, "
            f"more than the {MAX_BUNDLE_BYTES // 2**20} MiB limit",
            hint=f"keep large files out of {module_path.parent} (only *.py files beside the module are bundled)",
        )
    return Bundle(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        entrypoint=entrypoint,
        files=(*(p.name for p in files), META_NAME),
    )


def _gunzip(data: bytes, limit: int) -> bytes:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BundleError(f"bundle is not gzip-compressed data: {exc}") from exc
    if len(out) > limit:
        raise BundleError(f"bundle expands to more than {limit} bytes")
    if not decompressor.eof or decompressor.unused_data:
        raise BundleError("bundle is truncated or has trailing data after the gzip stream")
    return out


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    name = member.name
    if not name or "\x00" in name or "\\" in name:
        raise BundleError(f"bundle member {name!r} has an invalid name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise BundleError(f"bundle member {name!r} has an absolute path")
    if ".." in path.parts:
        raise BundleError(f"bundle member {name!r} leaves the bundle ('..')")
    if not path.parts or path.parts[0] == ".":
        raise BundleError(f"bundle member {name!r} has an empty path")
    return path


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    return "not a regular file"


def _checked_members(
    tar: tarfile.TarFile, max_bytes: int, max_members: int
) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    members: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    total = 0
    for member in tar:
        if len(members) >= max_members:
            raise BundleError(f"bundle has more than {max_members} members")
        path = _member_path(member)
        if not (member.isreg() or member.isdir()):
            raise BundleError(f"bundle member {member.name!r} is {_kind(member)}; only files and folders are allowed")
        if path in seen:
            raise BundleError(f"bundle member {member.name!r} appears twice")
        seen.add(path)
        total += member.size
        if member.size > max_bytes or total > max_bytes:
            raise BundleError(f"bundle member {member.name!r} makes the bundle larger than {max_bytes} bytes")
        members.append((member, path))
    return members


def _open(data: bytes, max_bytes: int, max_members: int) -> tarfile.TarFile:
    raw = _gunzip(data, max_bytes + (max_members + 2) * _TAR_OVERHEAD)
    try:
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except tarfile.TarError as exc:
        raise BundleError(f"bundle is not a tar archive: {exc}") from exc


def _meta(tar: tarfile.TarFile, members: list[tuple[tarfile.TarInfo, PurePosixPath]]) -> BundleMeta:
    by_path = {str(path): member for member, path in members}
    info = by_path.get(META_NAME)
    if info is None or not info.isreg():
        raise BundleError(f"bundle has no {META_NAME} at its root", hint="build bundles with chutes.bundle")
    handle = tar.extractfile(info)
    try:
        meta = json.loads(handle.read() if handle else b"")
    except ValueError as exc:
        raise BundleError(f"{META_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{META_NAME} must hold a JSON object")
    entrypoint = meta.get("entrypoint")
    if not isinstance(entrypoint, str) or not ENTRYPOINT_RE.fullmatch(entrypoint):
        raise BundleError(f"{META_NAME} has an invalid entrypoint {entrypoint!r}: expected <module>:<attr>")
    module_file = entrypoint.split(":")[0] + ".py"
    if module_file not in by_path:
        raise BundleError(f"bundle has no {module_file}, which its entrypoint {entrypoint!r} names")
    version = meta.get("sdk_version")
    return BundleMeta(
        entrypoint=entrypoint,
        sdk_version=version if isinstance(version, str) else "",
        files=tuple(sorted(str(path) for member, path in members if member.isreg())),
    )


def inspect_bundle(data: bytes, *, max_bytes: int = MAX_EXTRACTED_BYTES, max_members: int = MAX_MEMBERS) -> BundleMeta:
    """Check a bundle without writing anything; BundleError when it would be refused."""
    with _open(data, max_bytes, max_members) as tar:
        members = _checked_members(tar, max_bytes, max_members)
        return _meta(tar, members)


def safe_extract(
    data: bytes, dest: str | Path, *, max_bytes: int = MAX_EXTRACTED_BYTES, max_members: int = MAX_MEMBERS
) -> BundleMeta:
    """Check a bundle, then extract it into ``dest`` (created if missing); BundleError if refused.

    Nothing is written unless every member passes. Files get mode 0644, folders 0755, whatever the archive says.
    """
    root = Path(dest)
    with _open(data, max_bytes, max_members) as tar:
        members = _checked_members(tar, max_bytes, max_members)
        meta = _meta(tar, members)
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        for member, path in members:
            target = root.joinpath(*path.parts)
            if member.isdir():
                _mkdirs(root, path.parts)
                continue
            _mkdirs(root, path.parts[:-1])
            if target.parent.resolve() != target.parent or not target.parent.is_relative_to(root):
                raise BundleError(f"bundle member {member.name!r} would be written outside {root}")
            handle = tar.extractfile(member)
            content = handle.read() if handle else b""
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
    return meta


def _mkdirs(root: Path, parts: tuple[str, ...]) -> None:
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise BundleError(f"refusing to extract through the link {current}")
        if not current.exists():
            current.mkdir(mode=0o755)
        elif not current.is_dir():
            raise BundleError(f"bundle needs a folder at {current}, where a file exists")
