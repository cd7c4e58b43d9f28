"""Parsing Consul request bodies: Consul accepts PascalCase, camelCase and snake_case keys alike."""

from __future__ import annotations

from typing import Any

from chutes.devcluster.consul.records import CRITICAL, STATUSES, Check, CheckDefinition, Service
from chutes.devcluster.durations import DurationError, parse_duration
from chutes.devcluster.http_util import APIError, bad_request

SERVICE_FIELDS = {
    "id", "name", "tags", "address", "port", "meta", "weights", "taggedaddresses", "enabletagoverride",
    "check", "checks", "kind", "proxy", "connect", "namespace", "partition", "socketpath", "locality",
}  # fmt: skip
IGNORED_SERVICE_FIELDS = {"kind", "proxy", "connect", "namespace", "partition", "socketpath", "locality"}
CHECK_FIELDS = {
    "id", "checkid", "name", "notes", "status", "serviceid", "http", "method", "header", "body", "tcp", "ttl",
    "interval", "timeout", "deregistercriticalserviceafter", "tlsskipverify", "tlsservername",
    "successbeforepassing", "failuresbeforecritical", "failuresbeforewarning", "args", "scriptargs",
    "dockercontainerid", "shell", "grpc", "grpcusetls", "h2ping", "h2pingusetls", "aliasnode", "aliasservice",
    "udp", "osservice", "tcpusetls", "disableredirects", "outputmaxsize", "type", "namespace", "partition",
}  # fmt: skip
UNSUPPORTED_CHECKS = ("args", "scriptargs", "dockercontainerid", "grpc", "h2ping", "aliasservice", "udp", "osservice")


def norm(data: Any, what: str) -> dict[str, Any]:
    """Keys folded to lower case without underscores (Consul's decoder is case- and underscore-insensitive)."""
    if not isinstance(data, dict):
        raise bad_request(f"{what} must be a JSON object")
    return {str(k).lower().replace("_", ""): v for k, v in data.items()}


def _duration(value: Any, field: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value) / 1e9  # Consul's decoder takes integers as nanoseconds
    try:
        return parse_duration(str(value))
    except DurationError as exc:
        raise bad_request(f"{field}: {exc}") from None


def _str_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{field} must be a list of strings")
    return list(value)


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_request(f"{field} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def _tagged_addresses(value: Any) -> dict[str, dict[str, Any]]:
    """``{"lan": {"address": ..., "port": ...}}`` in any casing, served back as Consul's ``{Address, Port}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("TaggedAddresses must be an object of {Address, Port}")
    out: dict[str, dict[str, Any]] = {}
    for tag, raw in value.items():
        fields = norm(raw, f"TaggedAddresses.{tag}")
        unknown = sorted(set(fields) - {"address", "port"})
        if unknown:
            raise bad_request(f"TaggedAddresses.{tag}: unknown field(s) {unknown}")
        port = fields.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise bad_request(f"TaggedAddresses.{tag}.Port must be an integer between 0 and 65535")
        out[str(tag)] = {"Address": str(fields.get("address") or ""), "Port": port}
    return out


def parse_check(raw: Any, default_id: str, default_name: str, node: str) -> Check:
    body = norm(raw, "Check")
    unknown = sorted(set(body) - CHECK_FIELDS)
    if unknown:
        raise bad_request(f"Check: unknown field(s) {', '.join(unknown)}")
    for key in UNSUPPORTED_CHECKS:
        if body.get(key):
            raise APIError(
                400,
                f"Check: {key} checks are not supported by the devcluster",
                "use an HTTP, TCP or TTL check",
            )
    header = body.get("header") or {}
    if not isinstance(header, dict):
        raise bad_request("Check.Header must be an object of string lists")
    definition = CheckDefinition(
        http=body.get("http") or None,
        method=str(body.get("method") or "GET"),
        header={str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in header.items()},
        body=body.get("body") or None,
        tcp=body.get("tcp") or None,
        ttl_s=_duration(body.get("ttl"), "Check.TTL"),
        interval_s=_duration(body.get("interval"), "Check.Interval"),
        timeout_s=_duration(body.get("timeout"), "Check.Timeout") or 10.0,
        deregister_after_s=_duration(body.get("deregistercriticalserviceafter"), "DeregisterCriticalServiceAfter"),
        tls_skip_verify=bool(body.get("tlsskipverify", False)),
        success_before_passing=int(body.get("successbeforepassing") or 0),
        failures_before_critical=int(body.get("failuresbeforecritical") or 0),
    )
    kinds = [k for k in ("http", "tcp") if getattr(definition, k)] + (["ttl"] if definition.ttl_s is not None else [])
    if len(kinds) != 1:
        raise bad_request("Check: exactly one of HTTP, TCP or TTL must be set", "e.g. {'HTTP': url, 'Interval': '10s'}")
    if kinds[0] in ("http", "tcp") and not definition.interval_s:
        raise bad_request(f"Check: Interval is required for {kinds[0].upper()} checks")
    status = str(body.get("status") or CRITICAL)
    if status not in STATUSES:
        raise bad_request(f"Check: Status must be one of {', '.join(STATUSES)}")
    check_id = str(body.get("checkid") or body.get("id") or default_id)
    return Check(
        check_id=check_id,
        name=str(body.get("name") or default_name),
        node=node,
        status=status,
        definition=definition,
        notes=str(body.get("notes") or ""),
        service_id=str(body.get("serviceid") or ""),
    )


def parse_service(raw: Any, node: str) -> tuple[Service, list[Check]]:
    body = norm(raw, "service registration")
    unknown = sorted(set(body) - SERVICE_FIELDS)
    if unknown:
        raise bad_request(f"unknown field(s) in service registration: {', '.join(unknown)}")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("Missing service name", "set Name")
    service_id = str(body.get("id") or name)
    port = body.get("port") or 0
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise bad_request("Port must be an integer between 0 and 65535")
    weights_raw = body.get("weights")
    weights = {"Passing": 1, "Warning": 1}
    if weights_raw:
        w = norm(weights_raw, "Weights")
        weights = {"Passing": int(w.get("passing", 1)), "Warning": int(w.get("warning", 1))}
    service = Service(
        id=service_id,
        name=name,
        node=node,
        tags=_str_list(body.get("tags"), "Tags"),
        address=str(body.get("address") or ""),
        port=port,
        meta=_str_map(body.get("meta"), "Meta"),
        weights=weights,
        tagged_addresses=_tagged_addresses(body.get("taggedaddresses")),
        enable_tag_override=bool(body.get("enabletagoverride", False)),
    )
    raw_checks: list[Any] = []
    if body.get("check"):
        raw_checks.append(body["check"])
    if body.get("checks"):
        if not isinstance(body["checks"], list):
            raise bad_request("Checks must be a list")
        raw_checks.extend(body["checks"])
    checks = []
    for n, item in enumerate(raw_checks, start=1):
        default_id = f"service:{service_id}" if len(raw_checks) == 1 else f"service:{service_id}:{n}"
        checks.append(parse_check(item, default_id, f"Service '{name}' check", node))
    return service, checks
