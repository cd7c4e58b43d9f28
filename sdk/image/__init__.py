"""Image: a chainable Dockerfile builder (``from chutes.image import Image``), as in Chutes.

``str(image)`` is the Dockerfile. Every user string is validated or quoted so that it stays inside its own
instruction: newlines are refused everywhere (they would start a new instruction) except inside a RUN command
after a line continuation (``\\`` at the end of the line, as a multi-line RUN is written), RUN commands that end
in a line continuation or open a heredoc are refused, and ``add`` sources must stay inside the build directory.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chutes.chute.errors import ChuteError
from chutes.identity import InvalidNameError, validate_username
from chutes.image import context

IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-_.]*$")
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest], lower-case path components.
IMAGE_REF_RE = re.compile(
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)?"
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
APT_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]*(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?$")
USER_RE = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}|[0-9]+)(?::(?:[a-z_][a-z0-9_-]{0,31}|[0-9]+))?$")
WORKDIR_RE = re.compile(r"^/[A-Za-z0-9._@+=,/-]*$")
PYTHON_VERSION_RE = re.compile(r"^3\.[0-9]{1,2}(?:\.[0-9]{1,2})?$")
# Latest patch release of each minor version, for with_python("3.11") (python.org has no "Python-3.11.tgz").
PYTHON_PATCH = {"3.9": "3.9.20", "3.10": "3.10.15", "3.11": "3.11.10", "3.12": "3.12.7", "3.13": "3.13.0"}
_HEREDOC_RE = re.compile(r"<<")
_PYTHON_BUILD_DEPS = (
    "build-essential zlib1g-dev libncurses5-dev libgdbm-dev libnss3-dev libssl-dev libreadline-dev "
    "libffi-dev libsqlite3-dev wget libbz2-dev libexpat1-dev liblzma-dev"
)


class ImageError(ChuteError):
    """An image name, tag or build step that is not allowed."""


def validate_image_ref(ref: str) -> str:
    """Return a Docker image reference unchanged if valid (e.g. ``nvidia/cuda:12.2-runtime-ubuntu22.04``)."""
    if not isinstance(ref, str) or len(ref) > 512 or not IMAGE_REF_RE.fullmatch(ref):
        raise ImageError(
            f"invalid image reference {ref!r}: use [registry/]name[:tag][@sha256:digest] with a lower-case name"
        )
    return ref


def _one_line(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise ImageError(f"{what} must be a string, got {type(value).__name__}")
    if any(ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        raise ImageError(
            f"{what} must be one line without control characters: a newline would start a new Dockerfile instruction",
            hint="join shell commands with && on one line, or put a script in the build context and ADD it",
        )
    return value


def _continued_lines(command: str) -> str:
    """``command`` stripped, its lines joined as a Dockerfile RUN continues them; ImageError for a line break that
    would end the instruction (one not preceded by ``\\``).

    Blank lines and comment lines inside the command are dropped (Docker skips them inside a continuation too),
    so what remains is unambiguous to every Dockerfile parser.
    """
    lines = [line.rstrip() for line in command.strip().replace("\r\n", "\n").split("\n")]
    kept = [lines[0], *(line for line in lines[1:] if line.strip() and not line.lstrip().startswith("#"))]
    for line in kept:
        _one_line(line, "RUN command")
    for line in kept[:-1]:
        if not line.endswith("\\"):
            raise ImageError(
                f"RUN command line {line.strip()!r} is followed by a line break without '\\': "
                "it would end the RUN and start a new Dockerfile instruction",
                hint="end every line but the last with ' \\' (a line continuation), or join them with &&",
            )
    return "\n".join(kept).strip()


def _quote(value: str) -> str:
    """A Dockerfile double-quoted word: no variable expansion, no escape of the closing quote."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


@dataclass(frozen=True, slots=True)
class Directive:
    """One Dockerfile instruction."""

    kind: str
    args: str

    def __str__(self) -> str:
        return f"{self.kind} {self.args}"


class Image:
    """A Docker image built from directives; ``str(image)`` is its Dockerfile."""

    default_base_image = "parachutes/python:3.12"

    def __init__(self, username: str, name: str, tag: str, readme: str = "") -> None:
        try:
            self.username = validate_username(username)
        except InvalidNameError as exc:
            raise ImageError(str(exc)) from exc
        if not isinstance(name, str) or not IMAGE_NAME_RE.fullmatch(name):
            raise ImageError(
                f"invalid image name {name!r}: use lower-case letters, digits, '-', '_' and '.', "
                "starting with a letter or digit"
            )
        if not isinstance(tag, str) or not IMAGE_TAG_RE.fullmatch(tag):
            raise ImageError(
                f"invalid image tag {tag!r}: use up to 128 letters, digits, '-', '_' and '.', "
                "starting with a letter or digit"
            )
        self._name = name
        self._tag = tag
        self.readme = readme
        self._uid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{username}/{name}:{tag}".lower()))
        self._directives: list[Directive] = [Directive("FROM", self.default_base_image)]
        self._context = context.BuildContext()
        self._labs = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def uid(self) -> str:
        """uuid5(NAMESPACE_OID, "<username>/<name>:<tag>"), as Chutes computes it."""
        return self._uid

    @property
    def ref(self) -> str:
        """The image's reference: ``username/name:tag``."""
        return f"{self.username}/{self._name}:{self._tag}"

    @property
    def directives(self) -> list[Directive]:
        return list(self._directives)

    @property
    def build_dir(self) -> Path | None:
        """The directory ``add`` sources are read from (None while nothing local was added)."""
        return self._context.root

    @property
    def context_files(self) -> list[str]:
        """Files of the build context (relative to ``build_dir``) that the Dockerfile's ADDs need."""
        return self._context.files()

    def __str__(self) -> str:
        lines = [str(d) for d in self._directives]
        if self._labs:
            # ADD --exclude needs the labs channel of the Dockerfile frontend.
            lines.insert(0, "# syntax=docker/dockerfile:1-labs")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Image {self.ref}>"

    def _append(self, kind: str, args: str) -> Image:
        self._directives.append(Directive(kind, args))
        return self

    def from_base(self, base_image: str) -> Image:
        """Replace the FROM instruction."""
        validate_image_ref(base_image)
        self._directives = [Directive("FROM", base_image)] + [d for d in self._directives if d.kind != "FROM"]
        return self

    def with_maintainer(self, maintainer: str) -> Image:
        return self._append("LABEL", f"maintainer={_quote(_one_line(maintainer, 'maintainer'))}")

    def set_user(self, user: str) -> Image:
        if not isinstance(user, str) or not USER_RE.fullmatch(user):
            raise ImageError(f"invalid user {user!r}: use a user name or uid, optionally ':group'")
        return self._append("USER", user)

    def set_workdir(self, directory: str) -> Image:
        if not isinstance(directory, str) or not WORKDIR_RE.fullmatch(directory):
            raise ImageError(f"invalid workdir {directory!r}: use an absolute path of letters, digits and ._@+=,/-")
        return self._append("WORKDIR", directory)

    def _workdir(self) -> str:
        dirs = [d.args for d in self._directives if d.kind == "WORKDIR"]
        return dirs[-1] if dirs else "/root"

    def with_python(self, version: str = "3.10.15") -> Image:
        """Build CPython ``version`` from source into /opt/python and put it first on PATH.

        The default, 3.10.15, is the real Chutes SDK's; ``"3.11"`` picks that version's latest patch release.
        """
        if not isinstance(version, str) or not PYTHON_VERSION_RE.fullmatch(version):
            raise ImageError(f"invalid Python version {version!r}: use e.g. '3.11' or '3.11.10'")
        full = PYTHON_PATCH.get(version, version)
        if full.count(".") != 2:
            raise ImageError(f"unknown Python version {version!r}: give the full version, e.g. '{version}.0'")
        minor = ".".join(full.split(".")[:2])
        workdir = self._workdir()
        self._append(
            "RUN", f"apt-get -y update && DEBIAN_FRONTEND=noninteractive apt-get -y install {_PYTHON_BUILD_DEPS}"
        )
        self._append("WORKDIR", "/usr/src")
        self._append(
            "RUN",
            f"wget -q https://www.python.org/ftp/python/{full}/Python-{full}.tgz && tar -xzf Python-{full}.tgz",
        )
        self._append("WORKDIR", f"/usr/src/Python-{full}")
        self._append(
            "RUN",
            "./configure --enable-optimizations --enable-shared --with-system-expat --with-ensurepip=install "
            "--prefix=/opt/python && make -j && make altinstall",
        )
        self._append("WORKDIR", workdir)
        self._append(
            "RUN",
            f"ln -s /opt/python/bin/pip{minor} /opt/python/bin/pip && "
            f"ln -s /opt/python/bin/python{minor} /opt/python/bin/python && "
            "echo /opt/python/lib >> /etc/ld.so.conf && ldconfig && rm -rf /usr/src/Python*",
        )
        return self._append("ENV", "PATH=/opt/python/bin:$PATH")

    @staticmethod
    def _packages(package: str | Iterable[str]) -> list[str]:
        names = package.split() if isinstance(package, str) else list(package)
        if not names:
            raise ImageError("no apt package given")
        for name in names:
            if not isinstance(name, str) or not APT_PACKAGE_RE.fullmatch(name):
                raise ImageError(
                    f"invalid apt package name {name!r}: use lower-case letters, digits and +.- "
                    "(optionally :arch and =version)"
                )
        return names

    def apt_install(self, package: str | Iterable[str]) -> Image:
        names = " ".join(self._packages(package))
        return self._append(
            "RUN",
            f"apt-get -y update && DEBIAN_FRONTEND=noninteractive apt-get -y install {names} "
            "&& rm -rf /var/lib/apt/lists/*",
        )

    def apt_remove(self, package: str | Iterable[str]) -> Image:
        names = " ".join(self._packages(package))
        return self._append("RUN", f"apt-get -y remove --purge {names} && apt-get -y autoremove")

    def with_env(self, key: str, value: str) -> Image:
        if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
            raise ImageError(f"invalid environment variable name {key!r}: use letters, digits and '_'")
        return self._append("ENV", f"{key}={_quote(_one_line(str(value), f'value of {key}'))}")

    def run_command(self, command: str) -> Image:
        """RUN ``command``; a multi-line command continues each line with a trailing ``\\`` (as in a Dockerfile)."""
        if not isinstance(command, str):
            raise ImageError(f"RUN command must be a string, got {type(command).__name__}")
        command = _continued_lines(command)
        if not command:
            raise ImageError("empty RUN command")
        if command.endswith("\\"):
            raise ImageError(
                "a RUN command must not end with '\\': it would continue into the next instruction",
                hint="remove the trailing backslash of the last line",
            )
        if _HEREDOC_RE.search(command):
            raise ImageError(
                "a RUN command must not contain '<<': the Dockerfile would read the next instructions as a heredoc",
                hint="put the script in a file, add() it, and run it",
            )
        return self._append("RUN", command)

    def add(
        self,
        source: str,
        dest: str,
        keep_git_dir: bool = False,
        checksum: str | None = None,
        chown: str | None = None,
        chmod: str | None = None,
        exclude: str | Iterable[str] | None = None,
        build_dir: str | Path | None = None,
    ) -> Image:
        """ADD ``source`` (a local path or glob inside ``build_dir``, an http(s) URL or a git URL) at ``dest``."""
        source = _one_line(source, "add() source")
        dest = _one_line(dest, "add() destination")
        if not dest or "$" in dest:
            raise ImageError(f"invalid add() destination {dest!r}: give a path without '$'")
        kind = context.source_kind(source)
        flags: list[str] = []
        if keep_git_dir:
            if kind != "git":
                raise ImageError("keep_git_dir applies to git sources only")
            flags.append("--keep-git-dir=true")
        if checksum is not None:
            if kind != "url" or not re.fullmatch(r"sha256:[a-f0-9]{64}", checksum):
                raise ImageError("checksum must be 'sha256:<64 hex digits>' and applies to http(s) sources only")
            flags.append(f"--checksum={checksum}")
        if chown is not None:
            if not USER_RE.fullmatch(chown):
                raise ImageError(f"invalid chown {chown!r}: use user[:group] (names or ids)")
            flags.append(f"--chown={chown}")
        if chmod is not None:
            if not re.fullmatch(r"[0-7]{3,4}", chmod):
                raise ImageError(f"invalid chmod {chmod!r}: use octal digits such as 0755")
            flags.append(f"--chmod={chmod}")
        patterns = [exclude] if isinstance(exclude, str) else list(exclude or ())
        for pattern in patterns:
            if not re.fullmatch(r"[^\s\"'$]+", pattern):
                raise ImageError(f"invalid exclude pattern {pattern!r}: no spaces, quotes or '$'")
            flags.append(f"--exclude={pattern}")
            self._labs = True
        if kind == "local":
            source = self._context.add(source, build_dir)
        args = " ".join([*flags, json.dumps([source, dest])])
        return self._append("ADD", args)

    def with_entrypoint(self, *args: str | list[str]) -> Image:
        """Set ENTRYPOINT (exec form, JSON-encoded), replacing any earlier one.

        As in Chutes: ``with_entrypoint(["python", "-m", "app"])`` or one string; also several strings. One string
        with spaces is split as a shell would (``"python -m app"``: three words), where the real SDK would keep it
        as one word that no exec-form ENTRYPOINT could run.
        """
        if len(args) == 1 and isinstance(args[0], list | tuple):
            words = list(args[0])
        elif len(args) == 1 and isinstance(args[0], str):
            try:
                words = shlex.split(args[0])
            except ValueError as exc:
                raise ImageError(
                    f"cannot split the entrypoint {args[0]!r}: {exc}", hint="pass a list of words"
                ) from exc
        else:
            words = [a for a in args if isinstance(a, str)] if all(isinstance(a, str) for a in args) else []
        if not words or not all(isinstance(w, str) for w in words):
            raise ImageError("with_entrypoint takes one or more strings, or one list of strings")
        for word in words:
            _one_line(word, "entrypoint word")
        self._directives = [d for d in self._directives if d.kind != "ENTRYPOINT"]
        return self._append("ENTRYPOINT", json.dumps(words))
