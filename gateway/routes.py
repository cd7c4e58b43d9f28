"""What the gateway knows about a chute it routes to, and how a request's address names a chute and a cord.

Pure: parsing an invocation address (DESIGN.md, "Invocation addresses"), matching a cord by public path and
method, and the access rule. ``RouteInfo`` is the scheduler's ``GET /v1/internal/routes/{username}/{slug}``
answer (docs/internal-contracts.md); unknown fields are ignored so that the scheduler can add some.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field

from chutes.core.signing import Signer
from chutes.identity import USERNAME_RE
from chutes.manifest import CordSpec


class Identity(BaseModel):
    """The caller behind an API key (``POST /v1/internal/authenticate``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: str
    username: str
    is_admin: bool = False


class RouteInfo(BaseModel):
    """Everything the gateway needs to route calls to one chute."""

    model_config = ConfigDict(extra="ignore")

    chute_id: str
    username: str
    name: str
    slug: str
    public: bool = False
    shared_with: list[str] = Field(default_factory=list)
    concurrency: int = Field(1, ge=1)
    invoke_secret: str
    service: str
    cords: list[CordSpec] = Field(default_factory=list)
    max_instances: int = 1
    #: the ``<username>-<slug>`` host label this chute owns (the scheduler gives each label to one chute at
    #: most); None: the chute has no host address
    host_label: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A RouteInfo prepared for the hot path: cords indexed by (method, public path), sharing as a set, and the
    fields every call reads as plain attributes (a pydantic model's attribute costs a ``__getattr__`` hook)."""

    info: RouteInfo
    #: the cords at each (method, public path): one, or a streaming and a non-streaming one
    cords: dict[tuple[str, str], tuple[CordSpec, ...]]
    shared_with: frozenset[str] = field(default_factory=frozenset)
    label: str = ""  # ``username/name``: the chute label of metrics and logs
    signer: Signer | None = None  # signs calls with the chute's invoke secret (set by ``of``)
    # Copies of ``info``'s fields that every call reads, taken from it once (never passed in)
    chute_id: str = field(init=False)
    service: str = field(init=False)  # the chute's Consul service
    concurrency: int = field(init=False)
    owner: str = field(init=False)  # the owner's username
    public: bool = field(init=False)
    host_label: str | None = field(init=False)

    def __post_init__(self) -> None:
        info = self.info
        for name, value in (
            ("chute_id", info.chute_id), ("service", info.service), ("concurrency", info.concurrency),
            ("owner", info.username), ("public", info.public), ("host_label", info.host_label),
        ):  # fmt: skip
            object.__setattr__(self, name, value)  # frozen: set once, here

    @classmethod
    def of(cls, info: RouteInfo) -> Route:
        cords: dict[tuple[str, str], tuple[CordSpec, ...]] = {}
        for c in info.cords:
            key = (c.public_api_method.upper(), c.public_api_path)
            cords[key] = (*cords.get(key, ()), c)
        label = f"{info.username}/{info.name}"
        return cls(
            info=info, cords=cords, shared_with=frozenset(info.shared_with), label=label,
            signer=Signer(info.invoke_secret),
        )  # fmt: skip

    def cords_at(self, method: str, path: str) -> tuple[CordSpec, ...] | None:
        """The cords at ``path`` for ``method`` (a trailing '/' is tolerated), or None."""
        found = self.cords.get((method, path))
        if found is None and len(path) > 1 and path.endswith("/"):
            found = self.cords.get((method, path.rstrip("/")))
        return found

    def answers(self, target: Target) -> bool:
        """Whether this chute is the one ``target`` addresses: a host label must be the one the chute owns."""
        return target.label is None or self.host_label == target.label

    def allows(self, caller: Identity) -> bool:
        """The owner, users the chute is shared with, and anyone for a public chute may call it."""
        return self.public or caller.username == self.owner or caller.username in self.shared_with


def pick_cord(cords: tuple[CordSpec, ...], query: str, content_type: bytes | None = None) -> CordSpec:
    """Which cord of those sharing an address served a call (for metrics and metering; the instance picks).

    A streaming and a non-streaming cord may share an address. For GET, ``?stream=true|1`` picks the
    streaming one, as the runtime does; for a body, the instance's answer tells (``content_type``: an event
    stream comes from the streaming cord), so the gateway never parses a request body to know.
    """
    if len(cords) == 1:
        return cords[0]
    streaming = next((c for c in cords if c.stream), cords[0])
    unary = next((c for c in cords if not c.stream), cords[-1])
    if streaming.public_api_method == "GET":
        wanted = parse_qs(query).get("stream", [""])[-1].lower() in ("true", "1")
    else:
        wanted = content_type is not None and content_type.lower().startswith(b"text/event-stream")
    return streaming if wanted else unary


@dataclass(frozen=True, slots=True)
class Target:
    """Which chute a request addresses, and the cord path inside it.

    ``candidates`` holds (username, slug) pairs in the order to try them: a host label
    ``<username>-<slug>`` splits several ways when either part contains '-', so every valid split is a
    candidate; ``label`` is then set, and only the chute that owns that label answers (the scheduler gives a
    label to one chute at most, refusing deploys that would make one ambiguous). A path address has exactly
    one candidate and no label.
    """

    candidates: tuple[tuple[str, str], ...]
    path: str
    label: str | None = None


_SLUG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _valid_slug(slug: str) -> bool:
    return bool(slug) and slug[0] != "-" and slug[-1] != "-" and _SLUG_CHARS.issuperset(slug)


def host_label(host: str, domain: str | None) -> str | None:
    """The ``<username>-<slug>`` label of ``host`` under ``domain`` (port and case ignored), else None."""
    if not domain or not host:
        return None
    host = host.lower()
    if host.startswith("["):  # an IPv6 literal is never a chute host
        return None
    host = host.rsplit(":", 1)[0] if ":" in host else host
    suffix = "." + domain.lower().strip(".")
    if not host.endswith(suffix):
        return None
    label = host[: -len(suffix)]
    return label if label and "." not in label else None


def split_label(label: str) -> tuple[tuple[str, str], ...]:
    """Every (username, slug) pair that ``label`` = ``<username>-<slug>`` can stand for, shortest username first."""
    pairs: list[tuple[str, str]] = []
    start = 0
    while (dash := label.find("-", start)) != -1:
        username, slug = label[:dash], label[dash + 1 :]
        if USERNAME_RE.fullmatch(username) and _valid_slug(slug):
            pairs.append((username, slug))
        start = dash + 1
    return tuple(pairs)


def parse_target(host: str, path: str, domain: str | None) -> Target | None:
    """Which chute and cord path a request names, from its Host header and path; None if it names none.

    ``https://<username>-<slug>.<domain>/<public_api_path>`` takes precedence over
    ``/<username>/<slug>/<public_api_path>``.
    """
    label = host_label(host, domain)
    if label is not None:
        candidates = split_label(label)
        return Target(candidates, path or "/", label) if candidates else None
    parts = path.split("/", 3)  # ["", username, slug, rest]
    if len(parts) < 3:
        return None
    username, slug = parts[1], parts[2]
    if not USERNAME_RE.fullmatch(username) or not _valid_slug(slug):
        return None
    rest = "/" + parts[3] if len(parts) == 4 else "/"
    return Target(((username, slug),), rest)
