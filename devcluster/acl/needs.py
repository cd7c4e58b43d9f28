"""Which permission each endpoint needs, as Nomad's and Consul's endpoints check them (pure tables).

Nomad checks a namespace capability (``read-job``, ``submit-job``, ``dispatch-job``, ``read-logs``, ...), a
variable path capability, or the ``node``/``agent``/``operator`` policy, and answers 403 when it is missing.
Consul checks a resource (``key``, ``service``, ``node``, ``session``, ``agent``) by name at ``read`` or
``write``, or a top-level one (``acl``, ``operator``); its list endpoints do not refuse, they leave out what
the token may not read (``Filter``). An endpoint not in these tables needs a management token (Nomad) or
``operator`` (Consul), so an endpoint added later is closed until someone decides who may call it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

# ------------------------------------------------------------------------------------------------- Nomad


@dataclass(frozen=True)
class NomadNeed:
    """``kind``: open | token (any valid token) | management | namespace | variable | variables (a list: any
    token, the anonymous one included, and the answer leaves out what it may not ``list``) | node | agent |
    operator."""

    kind: str
    capabilities: tuple[str, ...] = ()  # namespace: any one of these; node/agent/operator: (access,)
    path: str = ""  # variable path

    def describe(self) -> str:
        if self.kind == "namespace":
            return f"namespace capability {' or '.join(self.capabilities)}"
        if self.kind == "variable":
            return f"variable {self.capabilities[0]} on {self.path!r}"
        if self.kind in ("node", "agent", "operator"):
            return f"{self.kind}:{self.capabilities[0]}"
        return self.kind


OPEN = NomadNeed("open")
_READ_JOB = NomadNeed("namespace", ("read-job",))
_SUBMIT_JOB = NomadNeed("namespace", ("submit-job",))

_NOMAD_JOB_SUFFIX_WRITE = {
    "": ("submit-job",),
    "scale": ("scale-job", "submit-job"),
    "dispatch": ("dispatch-job",),
    "evaluate": ("submit-job",),
    "plan": ("submit-job",),
    "revert": ("submit-job",),
    "stable": ("submit-job",),
    "periodic/force": ("submit-job",),
}
_NODE_WRITE_SUFFIXES = ("drain", "eligibility", "purge", "evaluate")


def event_stream_needs(topics: list[str]) -> list[NomadNeed]:
    """``/v1/event/stream``: every topic asked for must be readable; all topics need a management token."""
    names = {t.partition(":")[0] for t in topics} or {"*"}
    if "*" in names:
        return [NomadNeed("management")]
    out: list[NomadNeed] = []
    if names & {"Job", "Allocation", "Evaluation", "Deployment"}:
        out.append(_READ_JOB)
    if "Node" in names:
        out.append(NomadNeed("node", ("read",)))
    if names - {"Job", "Allocation", "Evaluation", "Deployment", "Node"}:
        out.append(NomadNeed("management"))
    return out


def nomad_needs(method: str, path: str) -> list[NomadNeed]:
    """Every permission a Nomad API request needs (all of them)."""
    read = method in ("GET", "HEAD")
    if path in ("/v1/status/leader", "/v1/status/peers", "/v1/regions", "/v1/acl/bootstrap"):
        return [OPEN]
    if path == "/v1/acl/token/self":
        return [NomadNeed("token")]
    if path.startswith("/v1/acl/"):
        return [NomadNeed("management")]
    if path == "/v1/jobs":
        return [NomadNeed("namespace", ("list-jobs",))] if read else [_SUBMIT_JOB]
    if path == "/v1/jobs/parse":
        return [NomadNeed("namespace", ("parse-job", "submit-job"))]
    if path.startswith("/v1/job/"):
        if read:
            scale = path.endswith("/scale")
            return [NomadNeed("namespace", ("read-job-scaling", "read-job"))] if scale else [_READ_JOB]
        suffix = next((s for s in _NOMAD_JOB_SUFFIX_WRITE if s and path.endswith("/" + s)), "")
        return [NomadNeed("namespace", _NOMAD_JOB_SUFFIX_WRITE[suffix])]
    if path in ("/v1/allocations", "/v1/evaluations", "/v1/deployments") or path.startswith(
        ("/v1/allocation/", "/v1/evaluation/", "/v1/deployment/")
    ):
        if read:
            return [_READ_JOB]
        if path.startswith("/v1/allocation/"):
            return [NomadNeed("namespace", ("alloc-lifecycle",))]
        return [_SUBMIT_JOB]
    if path == "/v1/event/stream":
        # Per topic, as Nomad checks them (filterByTopic): jobs' topics need read-job, Node node:read; a stream
        # of every topic needs a management token. The topics are in the query string: see event_stream_needs.
        return [NomadNeed("event-stream")]
    if path.startswith("/v1/client/fs/logs/"):
        return [NomadNeed("namespace", ("read-logs",))]
    if path.startswith("/v1/client/fs/"):
        return [NomadNeed("namespace", ("read-fs",))]
    if path.startswith("/v1/client/allocation/"):
        return [NomadNeed("namespace", ("read-job",) if read else ("alloc-lifecycle",))]
    if path == "/v1/client/metadata":
        return [NomadNeed("node", ("read" if read else "write",))]
    if path == "/v1/nodes" or path.startswith("/v1/node/"):
        if path.endswith("/allocations"):
            return [NomadNeed("node", ("read",)), _READ_JOB]
        if read:
            return [NomadNeed("node", ("read",))]
        return [NomadNeed("node", ("write",))] if path.endswith(_NODE_WRITE_SUFFIXES) else [NomadNeed("management")]
    if path.startswith("/v1/agent/"):
        if path == "/v1/agent/members":
            return [NomadNeed("node", ("read",))]
        return [NomadNeed("agent", ("read" if read else "write",))]
    if path == "/v1/vars":
        return [NomadNeed("variables")]  # filtered per variable by its path's "list" (Nomad never refuses it)
    if path.startswith("/v1/var/"):
        var_path = unquote(path.removeprefix("/v1/var/"))
        access = {"GET": "read", "HEAD": "read", "DELETE": "destroy"}.get(method, "write")
        return [NomadNeed("variable", (access,), var_path)]
    if path.startswith("/v1/operator/"):
        return [NomadNeed("operator", ("read" if read else "write",))]
    if path in ("/v1/namespaces",) or path.startswith("/v1/namespace/"):
        return [NomadNeed("token")] if read else [NomadNeed("management")]
    return [NomadNeed("management")]


# ------------------------------------------------------------------------------------------------ Consul


@dataclass(frozen=True)
class ConsulNeed:
    """One permission: ``segment`` (key, service, node, session, agent; or acl/operator with no name) at
    ``access``; ``name`` is known from the path, or found by ``name_from``: ``body:Name``, ``body:Node``,
    ``service_id``, ``check``, ``session``, ``local_node``. ``kind``: open | token | need | filter."""

    kind: str
    segment: str = ""
    access: str = ""
    name: str | None = None
    name_from: str = ""
    filter: str = ""  # for kind "filter": how to filter the answer


C_OPEN = ConsulNeed("open")


def _need(segment: str, access: str, name: str | None = None, name_from: str = "") -> ConsulNeed:
    return ConsulNeed("need", segment, access, name, name_from)


def _filter(name: str) -> ConsulNeed:
    return ConsulNeed("filter", filter=name)


_CONSUL_ROUTES: list[tuple[str, re.Pattern[str], object]] = []


def _route(method: str, pattern: str, need: object) -> None:
    _CONSUL_ROUTES.append((method, re.compile(f"^{pattern}$"), need))


# (method, path pattern, need or a function of the match)
_route("GET", r"/v1/status/(leader|peers)", C_OPEN)
_route("GET", r"/v1/catalog/datacenters", C_OPEN)
_route("PUT", r"/v1/acl/bootstrap", C_OPEN)
_route("GET", r"/v1/acl/token/self", ConsulNeed("token"))
_route("GET", r"/v1/acl/.*", _need("acl", "read"))
_route("*", r"/v1/acl/.*", _need("acl", "write"))
_route("GET", r"/v1/agent/self", _need("agent", "read", name_from="local_node"))
_route("GET", r"/v1/agent/members", _filter("members"))
_route("PUT", r"/v1/agent/service/register", _need("service", "write", name_from="body:Name"))
_route("PUT", r"/v1/agent/service/deregister/(?P<id>.+)", _need("service", "write", name_from="service_id"))
_route("GET", r"/v1/agent/services", _filter("agent_services"))
_route("GET", r"/v1/agent/service/(?P<id>.+)", _filter("one_service"))
_route("GET", r"/v1/agent/checks", _filter("agent_checks"))
_route("PUT", r"/v1/agent/check/register", _need("service", "write", name_from="body:ServiceID"))
_route(
    "PUT",
    r"/v1/agent/check/(deregister|pass|warn|fail|update)/(?P<id>.+)",
    _need("service", "write", name_from="check"),
)
_route("GET", r"/v1/agent/health/service/name/(?P<name>.+)", _need("service", "read", name_from="path"))
_route("GET", r"/v1/agent/health/service/id/(?P<id>.+)", _need("service", "read", name_from="service_id"))
_route("GET", r"/v1/health/service/(?P<name>.+)", _filter("health_service"))
_route("GET", r"/v1/health/(checks|state|node)/(?P<name>.+)", _filter("checks"))
_route("GET", r"/v1/catalog/services", _filter("catalog_services"))
_route("GET", r"/v1/catalog/service/(?P<name>.+)", _filter("catalog_service"))
_route("GET", r"/v1/catalog/nodes", _filter("catalog_nodes"))
_route("GET", r"/v1/catalog/node/(?P<name>.+)", _need("node", "read", name_from="path"))
_route("GET", r"/v1/kv/(?P<name>.*)", "kv_read")
_route("PUT", r"/v1/kv/(?P<name>.*)", "kv_write")
_route("DELETE", r"/v1/kv/(?P<name>.*)", "kv_write")
_route("PUT", r"/v1/session/create", _need("session", "write", name_from="body:Node"))
_route("PUT", r"/v1/session/(renew|destroy)/(?P<id>.+)", _need("session", "write", name_from="session"))
_route("GET", r"/v1/session/(info/.+|list|node/.+)", _filter("sessions"))


def consul_need(method: str, path: str, recurse_or_keys: bool = False) -> tuple[ConsulNeed, dict[str, str]]:
    """The permission a Consul API request needs, with the path's named parts (``id``, ``name``)."""
    for route_method, pattern, need in _CONSUL_ROUTES:
        if route_method not in ("*", method) and not (route_method == "GET" and method == "HEAD"):
            continue
        m = pattern.match(path)
        if m is None:
            continue
        parts = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
        if need == "kv_read":
            return (_filter("kv") if recurse_or_keys else _need("key", "read", parts["name"])), parts
        if need == "kv_write":
            return _need("key", "write", parts["name"]), parts
        assert isinstance(need, ConsulNeed)
        if need.name_from == "path":
            return _need(need.segment, need.access, parts["name"]), parts
        return need, parts
    return _need("operator", "read" if method in ("GET", "HEAD") else "write"), {}
