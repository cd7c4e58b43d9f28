"""Build contexts: what ``chutes build`` uploads, packed (SDK) and checked again (scheduler), both pure.

A context is a gzipped tar of regular files only:

- ``.chutes/Dockerfile``: the Dockerfile rendered from the ``Image`` (``FROM <ref>`` for a chute whose image is
  a reference: the platform adds its runtime on top of it);
- ``.chutes/image.json``: ``{"username", "name", "tag", "kind": "image" | "base", "base"}``;
- every local file the Image's ``add()`` instructions copy, at its path relative to the build directory.

Its **image id** is the sha256 of a canonical listing of those files (path, executable bit, sha256 of the
content, in path order), so the same files give the same id however the archive was compressed, and the
scheduler computes it again from what it received rather than trusting the client.

Refused before anything is built (``ContextError``, a ``ChuteError`` with a hint): a file outside the chute's
folder (``../``, absolute paths, symlinks leading out), anything that is not a regular file in the archive
(links, devices, directories are implied), a context over the size cap, and a Dockerfile with a line that is
not one of the instructions an ``Image`` writes (what injection through an Image method would produce).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from chutes.chute.errors import ChuteError

META_DIR = ".chutes"
DOCKERFILE = f"{META_DIR}/Dockerfile"
META_FILE = f"{META_DIR}/image.json"
DEFAULT_MAX_CONTEXT_BYTES = 50 * 1024 * 1024
MAX_FILES = 10_000
MAX_PATH = 1024
# What an Image writes; anything else in a Dockerfile came from somewhere else.
INSTRUCTIONS = frozenset({"FROM", "RUN", "ENV", "LABEL", "USER", "WORKDIR", "ADD", "COPY", "ENTRYPOINT", "CMD"})
_SYNTAX_LINE = "# syntax=docker/dockerfile:1-labs"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-_.]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ContextError(ChuteError):
    """A build context (or its Dockerfile) that the platform refuses to build."""


@dataclass(frozen=True)
class ImageMeta:
    """Who and what a context builds: the Image's username, name and tag; ``kind`` "base" for a reference."""

    username: str
    name: str
    tag: str
    kind: str = "image"  # "image": an Image; "base": a chute image given as a reference (thin runtime layer)
    base: str | None = None  # the FROM reference

    def to_json(self) -> bytes:
        data = {"username": self.username, "name": self.name, "tag": self.tag, "kind": self.kind, "base": self.base}
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ImageMeta:
        try:
            data = json.loads(raw)
        except ValueError:
            raise ContextError(f"{META_FILE} is not JSON") from None
        if not isinstance(data, dict):
            raise ContextError(f"{META_FILE} is not a JSON object")
        username, name, tag = data.get("username"), data.get("name"), data.get("tag")
        kind, base = data.get("kind", "image"), data.get("base")
        if not (isinstance(username, str) and _USER_RE.fullmatch(username)):
            raise ContextError(f"{META_FILE}: invalid username {username!r}")
        if not (isinstance(name, str) and _NAME_RE.fullmatch(name) and len(name) <= 128):
            raise ContextError(f"{META_FILE}: invalid image name {name!r}")
        if not (isinstance(tag, str) and _TAG_RE.fullmatch(tag)):
            raise ContextError(f"{META_FILE}: invalid image tag {tag!r}")
        if kind not in ("image", "base") or not (base is None or isinstance(base, str)):
            raise ContextError(f"{META_FILE}: invalid kind {kind!r} or base {base!r}")
        return cls(username, name, tag, kind, base)


@dataclass(frozen=True)
class PackedContext:
    """A context ready to upload: the archive, its id, and what it holds."""

    archive: bytes
    image_id: str
    meta: ImageMeta
    dockerfile: str
    files: tuple[str, ...]  # the added files (the two .chutes/ files not included)
    size: int  # bytes of file content, uncompressed


@dataclass(frozen=True)
class Context:
    """A context read back from an archive (scheduler side), every file already checked."""

    files: Mapping[str, tuple[bytes, bool]]  # path → (content, executable)
    meta: ImageMeta
    dockerfile: str
    image_id: str
    size: int


def context_id(files: Mapping[str, tuple[bytes, bool]]) -> str:
    """The image id: sha256 over ``path NUL mode NUL sha256(content) LF`` for every file, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        content, executable = files[path]
        digest.update(f"{path}\0{'755' if executable else '644'}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()


def _check_path(path: str) -> str:
    """A relative POSIX path inside the context, or ContextError."""
    hint = "keep every file of the image inside the chute's folder"
    if not path or len(path) > MAX_PATH or _CONTROL.search(path) or any(c in path for c in "\n\t\\"):
        raise ContextError(f"invalid path {path[:80]!r} in the build context", hint=hint)
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or str(pure) != path.rstrip("/") or path.startswith("./"):
        raise ContextError(f"the path {path!r} leaves the build context (absolute, '..' or not normalised)", hint=hint)
    return str(pure)


def check_dockerfile(text: str, files: Mapping[str, Any] | None = None) -> str:
    """``text`` if every instruction is one an Image writes, each on its own line (a RUN may continue with a
    trailing ``\\``), FROM first and once, no heredoc; ADD/COPY sources are URLs or files of the context."""
    if not isinstance(text, str) or not text.strip():
        raise ContextError("the Dockerfile is empty")
    if _CONTROL.search(text) or "\r" in text:
        raise ContextError(
            "the Dockerfile contains control characters", hint="Image methods refuse them; do not edit the Dockerfile"
        )
    lines = text.split("\n")
    if lines and lines[0] == _SYNTAX_LINE:
        lines = lines[1:]
    instructions: list[tuple[str, str]] = []
    continued = False
    for number, line in enumerate(lines, 1):
        if continued:
            instructions[-1] = (instructions[-1][0], instructions[-1][1] + "\n" + line)
        elif line.strip():
            kind, _, args = line.partition(" ")
            if kind not in INSTRUCTIONS or not args.strip():
                raise ContextError(
                    f"line {number} of the Dockerfile is not an instruction an Image writes: {line[:120]!r}",
                    hint="build the Dockerfile with Image methods (each refuses a newline that starts an instruction)",
                )
            instructions.append((kind, args))
        continued = line.endswith("\\")
    if continued:
        raise ContextError("the Dockerfile ends in a line continuation ('\\')")
    if not instructions or instructions[0][0] != "FROM" or sum(k == "FROM" for k, _ in instructions) != 1:
        raise ContextError("the Dockerfile must start with its one FROM instruction")
    for kind, args in instructions:
        if "\n" in args and kind != "RUN":
            raise ContextError(f"a {kind} instruction continues over several lines", hint="only RUN may")
        if "<<" in args and kind in ("RUN", "ADD", "COPY"):
            raise ContextError(f"a heredoc ('<<') in {kind}: the Dockerfile would read later lines as its input")
        if kind in ("ADD", "COPY") and files is not None:
            _check_sources(kind, args, files)
    return text


def _check_sources(kind: str, args: str, files: Mapping[str, Any]) -> None:
    words = [w for w in args.split(" ") if not w.startswith("--")]
    try:
        parts = json.loads(" ".join(words))
    except ValueError:
        raise ContextError(f"{kind} {args[:80]!r} is not in the JSON form an Image writes") from None
    if not isinstance(parts, list) or len(parts) < 2 or not all(isinstance(p, str) for p in parts):
        raise ContextError(f"{kind} {args[:80]!r} is not in the JSON form an Image writes")
    for source in parts[:-1]:
        if re.match(r"^(https?://|git@)", source):
            continue
        if source == ".":
            continue
        path = _check_path(source)
        if path.startswith(META_DIR + "/") or path == META_DIR:
            raise ContextError(f"{kind} of {source!r}: the platform's own files are not for the image")
        if not any(f == path or f.startswith(path + "/") for f in files) and not re.search(r"[*?\[]", path):
            raise ContextError(f"{kind} of {source!r}: no such file in the build context")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def pack(
    image: Any,
    *,
    chute_dir: str | Path,
    username: str | None = None,
    max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
) -> PackedContext:
    """Pack the build context of a chute's ``image`` (an ``Image``, or a reference string) from ``chute_dir``.

    Every file is read now (not when ``add()`` recorded it) and checked again: inside ``chute_dir`` after
    resolving links, a regular file, the total within ``max_bytes``. ``username`` names the owner of an image
    given as a reference (an Image carries its own).
    """
    from chutes.image import Image, validate_image_ref

    root = Path(chute_dir).resolve()
    files: dict[str, tuple[bytes, bool]] = {}
    if isinstance(image, Image):
        meta = ImageMeta(image.username, image.name, image.tag)
        dockerfile = str(image)
        build_dir = image.build_dir
        names = image.context_files
        if names and build_dir is None:
            raise ContextError("the Image lists files but has no build directory")
        if build_dir is not None and not _inside(build_dir.resolve(), root):
            raise ContextError(
                f"the Image's build directory {str(build_dir)!r} is outside the chute's folder {str(root)!r}",
                hint="add() files from the chute's folder (pass build_dir= inside it, or run from there)",
            )
        total = 0
        for name in names:
            path = _check_path(name)
            if path == META_DIR or path.startswith(META_DIR + "/"):
                raise ContextError(f"{path!r}: the folder {META_DIR}/ of a build context is the platform's")
            assert build_dir is not None
            source = build_dir / path
            real = source.resolve()
            if not _inside(real, root):
                raise ContextError(
                    f"{path!r} leads outside the chute's folder (to {real})",
                    hint="copy the file into the chute's folder instead of linking to it",
                )
            info = os.stat(real)
            if not stat.S_ISREG(info.st_mode):
                raise ContextError(f"{path!r} is not a regular file")
            total += info.st_size
            if total > max_bytes:
                raise ContextError(
                    f"the build context is over {max_bytes} bytes",
                    hint="add() less (download large files in a RUN step, or at startup)",
                )
            files[path] = (real.read_bytes(), bool(info.st_mode & 0o111))
    elif isinstance(image, str):
        ref = validate_image_ref(image)
        owner = username or ""
        last = ref.split("@")[0].rsplit("/", 1)[-1]
        base_name, _, base_tag = last.partition(":")
        digest = ref.split("@sha256:")[1][:12] if "@sha256:" in ref else ""
        name = re.sub(r"[^a-z0-9-_.]", "-", f"base-{base_name}")[:128]
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", base_tag or digest or "latest")[:128]
        meta = ImageMeta(owner, name, tag, kind="base", base=ref)
        dockerfile = f"FROM {ref}"
    else:
        raise ContextError(f"an image is an Image or a reference string, not {type(image).__name__}")
    check_dockerfile(dockerfile, files)
    ImageMeta.from_json(meta.to_json())  # the same checks as the scheduler's
    size = sum(len(c) for c, _ in files.values())
    all_files = {**files, DOCKERFILE: (dockerfile.encode(), False), META_FILE: (meta.to_json(), False)}
    return PackedContext(
        archive=write_archive(all_files),
        image_id=context_id(all_files),
        meta=meta,
        dockerfile=dockerfile,
        files=tuple(sorted(files)),
        size=size,
    )


def write_archive(files: Mapping[str, tuple[bytes, bool]]) -> bytes:
    """A reproducible tar.gz of ``files`` (sorted, mtime 0, root-owned, 0644/0755)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            content, executable = files[path]
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o755 if executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def read_archive(archive: bytes, max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES) -> Context:
    """Open an uploaded context and check everything ``pack`` checks; ContextError on the first problem.

    The archive is decompressed in bounded steps, so a small archive that expands past ``max_bytes`` (a
    "zip bomb") is refused without being held in memory whole.
    """
    limit = max_bytes + 1024 * 1024  # content plus tar headers
    try:
        stream = gzip.GzipFile(fileobj=io.BytesIO(archive))
        raw = io.BytesIO()
        while True:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            raw.write(chunk)
            if raw.tell() > limit:
                raise ContextError(f"the build context is over {max_bytes} bytes", hint="add() less")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ContextError(f"the build context is not a gzipped tar: {exc}") from None
    files: dict[str, tuple[bytes, bool]] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw.getvalue()), mode="r:") as tar:
            for member in tar:
                if len(files) >= MAX_FILES:
                    raise ContextError(f"the build context has more than {MAX_FILES} files")
                if member.isdir():
                    _check_path(member.name)
                    continue
                if not member.isreg():
                    what = "a link" if (member.issym() or member.islnk()) else "not a regular file"
                    raise ContextError(
                        f"{member.name[:120]!r} in the build context is {what}",
                        hint="a build context holds regular files only (links could lead outside it)",
                    )
                path = _check_path(member.name)
                if path in files:
                    raise ContextError(f"{path!r} is twice in the build context")
                total += member.size
                if total > max_bytes:
                    raise ContextError(f"the build context is over {max_bytes} bytes", hint="add() less")
                handle = tar.extractfile(member)
                assert handle is not None
                files[path] = (handle.read(), bool(member.mode & 0o111))
    except tarfile.TarError as exc:
        raise ContextError(f"the build context is not a valid tar archive: {exc}") from None
    if DOCKERFILE not in files or META_FILE not in files:
        raise ContextError(f"the build context has no {DOCKERFILE} or {META_FILE}", hint="pack it with `chutes build`")
    try:
        dockerfile = files[DOCKERFILE][0].decode()
    except UnicodeDecodeError:
        raise ContextError("the Dockerfile is not UTF-8") from None
    user_files = {p: v for p, v in files.items() if not p.startswith(META_DIR + "/")}
    if len(user_files) + 2 != len(files):
        raise ContextError(f"the folder {META_DIR}/ of a build context holds only the platform's two files")
    check_dockerfile(dockerfile, user_files)
    meta = ImageMeta.from_json(files[META_FILE][0])
    if meta.kind == "base" and dockerfile != f"FROM {meta.base}":
        raise ContextError("a context for an image reference holds only 'FROM <reference>'")
    size = sum(len(c) for c, _ in user_files.values())
    return Context(files=files, meta=meta, dockerfile=dockerfile, image_id=context_id(files), size=size)
