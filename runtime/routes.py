"""The routing table of an instance: each cord at ``public_api_method public_api_path`` and at ``POST path``.

Built once at start-up into a dict keyed by path then method, so a call costs two dict lookups. A cord whose
public method is GET takes its input from the query string there; everywhere else input is a JSON body.
Generator functions always stream (Server-Sent Events), whatever the cord's ``stream`` flag says.

Two cords may share one public address only as a stream/non-stream pair (the OpenAI-style templates'
``chat_stream`` and ``chat``): the JSON body's ``"stream"`` field picks one (``true``: the streaming cord; absent
or anything else: the other), or for a GET address the ``stream`` query parameter (``true`` or ``1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from chutes.core.edge import strictjson
from chutes.runtime.config import ConfigError
from chutes.runtime.dependencies import RequestBinding
from chutes.runtime.invoke import FuncKind, func_kind
from chutes.runtime.protocols import CordLike

HEALTH_PATHS = frozenset({"/_alive", "/_ready", "/_metrics"})


@dataclass(frozen=True, slots=True)
class CordRoute:
    cord: CordLike
    name: str
    kind: FuncKind
    query_input: bool
    stream: bool
    timeout: float
    passthrough_port: int | None
    passthrough_path: str | None
    content_type: bytes | None
    #: FastAPI's part in the call (Depends, Request, response_model...); None for a plain cord (the fast path)
    binding: RequestBinding | None = None


@dataclass(frozen=True, slots=True)
class CordPair:
    """A streaming and a non-streaming cord at one public address."""

    streaming: CordRoute
    unary: CordRoute

    def pick(self, body: bytes, query: bytes) -> CordRoute:
        if self.unary.query_input:
            wanted = dict(parse_qsl(query.decode("latin-1"))).get("stream", "").lower() in ("true", "1")
        else:
            try:
                payload = strictjson.loads(body) if body else None
            except ValueError:  # not JSON, or nested too deep
                payload = None  # the non-streaming cord's validation answers 422
            wanted = isinstance(payload, dict) and payload.get("stream") is True
        return self.streaming if wanted else self.unary


Routes = dict[str, dict[str, CordRoute | CordPair]]


def _timeout(cord: CordLike, default: float) -> float:
    # Not in the contract: a Cord may carry its own ``timeout`` (seconds); otherwise the runtime's default.
    value = getattr(cord, "timeout", None)
    return float(value) if isinstance(value, int | float) and value > 0 else default


def build_routes(cords: Sequence[CordLike], default_timeout: float) -> Routes:
    """Routes for ``cords``; a ConfigError when two of them (or a health endpoint) claim one method and path."""
    routes: Routes = {}
    for cord in cords:
        kind = func_kind(cord.func)
        if cord.passthrough and not cord.passthrough_port:
            raise ConfigError(f"cord {cord.name!r} is a passthrough cord without a passthrough_port")
        public_method = cord.public_api_method.upper()
        entries = [(public_method, cord.public_api_path, public_method == "GET")]
        if (public_method, cord.public_api_path) != ("POST", cord.path):
            entries.append(("POST", cord.path, False))
        content_type = cord.output_content_type.encode("latin-1") if cord.output_content_type else None
        binding = None if cord.passthrough else RequestBinding.of(cord)
        for method, path, query_input in entries:
            if path in HEALTH_PATHS:
                raise ConfigError(f"cord {cord.name!r} uses {path}, which the runtime serves itself")
            route = CordRoute(
                cord=cord,
                name=cord.name,
                kind=kind,
                query_input=query_input,
                stream=cord.stream or kind in (FuncKind.ASYNC_GEN, FuncKind.SYNC_GEN),
                timeout=_timeout(cord, default_timeout),
                passthrough_port=cord.passthrough_port if cord.passthrough else None,
                passthrough_path=(cord.passthrough_path or cord.path) if cord.passthrough else None,
                content_type=content_type,
                binding=binding,
            )
            by_method = routes.setdefault(path, {})
            other = by_method.get(method)
            if other is None:
                by_method[method] = route
            elif isinstance(other, CordRoute) and other.stream != route.stream:
                by_method[method] = CordPair(*((route, other) if route.stream else (other, route)))
            else:
                names = f"{other.name!r}" if isinstance(other, CordRoute) else f"{other.streaming.name!r}"
                raise ConfigError(
                    f"cords {names} and {cord.name!r} both claim {method} {path}",
                    "only a streaming and a non-streaming cord may share an address",
                )
    return routes
