"""The Python client of the platform: one method per call of the scheduler's HTTP API, plus invocations.

``Client`` is synchronous and ``AsyncClient`` its asyncio twin; both sit on httpx. Every ``chutes`` CLI
command is one call on ``Client``, so anything the CLI does can be done from Python::

    from chutes.client import Client

    with Client("http://127.0.0.1:8100", "cnk_...", gateway_url="http://127.0.0.1:8200") as client:
        chute = client.deploy("examples/hello.py:chute")
        for event in client.events(chute["name"], follow=True):
            print(event)
        print(client.invoke("hello", "/echo", {"text": "hi"}))

Errors from the API become ``ChutesAPIError(status, detail, hint)``; an unreachable server is
``ChutesConnectionError`` (status 0). Request descriptions are built by pure helpers shared by both clients,
so the two cannot drift apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from chutes.config import Settings
from chutes.identity import slugify
from chutes.sse import SSEParser, SSEvent

if TYPE_CHECKING:
    from chutes.chute import Chute

__all__ = [
    "AsyncClient",
    "ChutesAPIError",
    "ChutesConnectionError",
    "Client",
    "Invocation",
    "LogLine",
]

DEFAULT_TIMEOUT = 30.0
JSON = dict[str, Any]


class ChutesAPIError(Exception):
    """The platform refused a call: HTTP ``status``, what went wrong (``detail``) and what to do (``hint``)."""

    def __init__(self, status: int, detail: str, hint: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status})" if self.status else self.detail


class ChutesConnectionError(ChutesAPIError):
    """The scheduler or gateway could not be reached at all."""

    def __init__(self, url: str, reason: str, hint: str | None = None) -> None:
        super().__init__(0, f"cannot reach {url}: {reason}", hint)
        self.url = url


@dataclass(frozen=True)
class Invocation:
    """The answer of a non-streaming invocation."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    content_type: str = ""

    @property
    def invocation_id(self) -> str | None:
        return self.headers.get("x-chutes-invocation-id")

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class LogLine:
    """One line of an instance's log."""

    line: str
    instance: str | None = None
    stream: str | None = None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx``'s ``request`` for this request."""
        return {
            "json": self.json, "params": self.params, "files": self.files, "data": self.data,
            "content": self.content, "headers": self.headers or None,
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- requests


def _ref(ref: str) -> str:
    # Chute names may contain "/": keep them one path segment.
    return quote(ref, safe="")


def _load(chute: Chute | str) -> tuple[Chute, str, str]:
    """The chute (loaded if given as ``FILE:ATTR``), its module's path and its entrypoint."""
    from chutes.loader import load_chute, locate_chute

    if isinstance(chute, str):
        loaded = load_chute(chute)
        return loaded.chute, str(loaded.module_path), loaded.entrypoint
    module_path, entrypoint = locate_chute(chute)
    return chute, str(module_path), entrypoint


def pack_image(chute: Chute | str) -> Any:
    """The build context of a chute's image (``chutes.image.pack.PackedContext``): every file from its folder."""
    from pathlib import Path

    from chutes.image.pack import pack

    obj, module_path, _ = _load(chute)
    return pack(obj.image, chute_dir=Path(module_path).resolve().parent, username=obj.username)


def _image_upload(archive: bytes, rebuild: bool = False) -> _Request:
    return _Request(
        "POST", "/v1/images", params={"rebuild": "true"} if rebuild else None, content=archive,
        headers={"Content-Type": "application/gzip"},
    )  # fmt: skip


def _image_line(item: str) -> str:
    try:
        parsed = json.loads(item)
    except ValueError:
        return item
    return str(parsed.get("line", "")) if isinstance(parsed, dict) else item


def _prepare_deploy(chute: Chute | str, public: bool = False, image: str | None = None) -> _Request:
    """Load the chute if given as ``FILE:ATTR``, build its manifest and bundle, describe the upload."""
    from chutes.bundle import build_bundle
    from chutes.loader import load_chute, locate_chute

    if isinstance(chute, str):
        loaded = load_chute(chute)
        obj, module_path, entrypoint = loaded.chute, loaded.module_path, loaded.entrypoint
    else:
        obj = chute
        module_path, entrypoint = locate_chute(chute)
    manifest = obj.manifest()
    bundle = build_bundle(module_path, entrypoint)
    extra = {"public": "true"} if public else {}
    if image:
        extra["image"] = image
    return _Request(
        "POST",
        "/v1/chutes",
        data={"manifest": manifest.model_dump_json(), **extra},
        files={"bundle": ("bundle.tar.gz", bundle.data, "application/gzip")},
    )


def _error_from(response: httpx.Response) -> ChutesAPIError:
    detail: str = response.reason_phrase or "request failed"
    hint: str | None = None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        text = " ".join(response.text.split())  # one line, whatever the server sent
        if text:
            detail = text[:300]
    else:
        if isinstance(body, dict):
            raw = body.get("detail", detail)
            detail = raw if isinstance(raw, str) else _validation_detail(raw)
            hint = body.get("hint") if isinstance(body.get("hint"), str) else None
    if hint is None:
        hint = _default_hint(response.status_code)
    return ChutesAPIError(response.status_code, detail, hint)


def _checked(response: httpx.Response) -> httpx.Response:
    """The response itself, or the API error it carries (status 400 and up; its body read already)."""
    if response.status_code >= 400:
        raise _error_from(response)
    return response


def _unreachable(http: httpx.Client | httpx.AsyncClient, exc: httpx.TransportError) -> ChutesConnectionError:
    url = str(http.base_url)
    return ChutesConnectionError(url, _reason(exc), _connection_hint(url))


def _invocation(response: httpx.Response) -> Invocation:
    return Invocation(
        response.status_code, dict(response.headers), response.content, response.headers.get("content-type", "")
    )


def _builds_on(response: httpx.Response) -> bool:
    return str(response.headers.get("x-chutes-builds", "off")) == "on"


def _validation_detail(raw: Any) -> str:
    # FastAPI's 422 body: a list of {loc, msg}.
    if isinstance(raw, list):
        parts = []
        for item in raw:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        if parts:
            return "; ".join(parts)
    return json.dumps(raw)


def _default_hint(status: int) -> str | None:
    return {
        401: "check your API key (--api-key, CHUTES_API_KEY or the config file)",
        403: "this key may not do that; ask an admin",
        404: "check the name or id you gave",
        429: "the chute is at capacity; retry shortly",
        503: "the platform is not ready; retry shortly",
    }.get(status)


def _connection_hint(url: str) -> str:
    return f"is the server at {url} running? Start a local stack with `chutes dev`"


def _event_from(sse: SSEvent) -> JSON:
    try:
        data = json.loads(sse.data) if sse.data else {}
    except ValueError:
        data = {"message": sse.data}
    if not isinstance(data, dict):
        data = {"data": data}
    if sse.event != "message":
        data.setdefault("type", sse.event)
    return data


def _log_from_json(item: Any) -> LogLine:
    if isinstance(item, dict):
        text = item.get("line", item.get("message", item.get("data", "")))
        return LogLine(str(text), instance=item.get("instance"), stream=item.get("stream"))
    return LogLine(str(item))


def _items(body: Any, *keys: str) -> list[Any]:
    """A list answer, whether bare or wrapped in an object under one of ``keys``."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in keys:
            value = body.get(key)
            if isinstance(value, list):
                return value
    return []


def _event_params(follow: bool, after: int) -> dict[str, str]:
    params = {"follow": "true"} if follow else {}
    if after:
        params["after"] = str(after)
    return params


def _log_params(follow: bool, instance: str | None, stream: str) -> dict[str, str]:
    params = {"stream": stream}
    if follow:
        params["follow"] = "true"
    if instance:
        params["instance"] = instance
    return params


def _key_body(name: str | None, role: str | None) -> dict[str, str]:
    body = {"name": name, "role": role}
    return {k: v for k, v in body.items() if v}


def _usage_params(
    start: str | None, end: str | None, chute: str | None, username: str | None, everyone: bool
) -> dict[str, str]:
    params = {"start": start, "end": end, "chute": chute, "username": username}
    out = {k: v for k, v in params.items() if v}
    if everyone:
        out["everyone"] = "true"
    return out


def _secret_create(name: str, chute: str, value: str) -> _Request:
    return _Request("POST", "/v1/secrets", json={"chute": chute, "name": name, "value": value})


def _secret_list(chute: str | None, everyone: bool) -> _Request:
    params = {"chute": chute} if chute else {}
    if everyone:
        params["all"] = "true"
    return _Request("GET", "/v1/secrets", params=params)


def _secret_delete(name: str, chute: str) -> _Request:
    return _Request("DELETE", f"/v1/secrets/{_ref(name)}", params={"chute": chute})


def invocation_path(username: str, chute_name: str, path: str) -> str:
    """The gateway path of a cord: ``/<username>/<chute_slug>/<public_api_path>``."""
    return f"/{quote(username, safe='')}/{slugify(chute_name)}/{path.lstrip('/')}"


# ---------------------------------------------------------------------------------------------------- both

_H = TypeVar("_H", httpx.Client, httpx.AsyncClient)


class _ClientCore(Generic[_H]):
    """What both clients hold: the URLs, the key, the caller's name once asked, an HTTP client for the
    scheduler and one for the gateway (``make(base_url, headers)`` builds them, sync or async)."""

    def __init__(
        self, api_url: str, api_key: str, gateway_url: str | None, make: Callable[[str, dict[str, str]], _H]
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url.rstrip("/") if gateway_url else None
        self.api_key = api_key
        self._username: str | None = None
        headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "chutes-nomad-client"}
        self._http: _H = make(self.api_url, headers)
        self._gw: _H = make(self.gateway_url or "http://gateway.invalid", headers)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Self:
        api_url, api_key = settings.require_api()
        client: Self = cls(api_url, api_key, gateway_url=settings.gateway_url, **kwargs)
        return client

    def _gateway(self) -> _H:
        if not self.gateway_url:
            raise ChutesAPIError(0, "no gateway URL configured", "pass gateway_url= (CLI: --gateway-url)")
        return self._gw


class _EventDecoder:
    """Turns the lines of a followed events answer (SSE) into events."""

    def __init__(self) -> None:
        self._sse = SSEParser()

    def feed(self, line: str) -> list[JSON]:
        event = self._sse.feed(line)
        return [_event_from(event)] if event is not None else []

    def finish(self) -> list[JSON]:
        last = self._sse.flush()
        return [_event_from(last)] if last is not None else []


class _FrameDecoder:
    """Turns the lines of a streamed invocation into frames: each SSE event's data, or each line of any other
    answer. An ``error`` event raises."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._sse_seen = False

    def feed(self, ctype: str, line: str) -> list[str]:
        if "text/event-stream" not in ctype:
            return [line]
        self._sse_seen = True
        event = self._sse.feed(line)
        return [_frame(event)] if event is not None else []

    def finish(self) -> list[str]:
        last = self._sse.flush() if self._sse_seen else None
        return [_frame(last)] if last is not None else []


# ---------------------------------------------------------------------------------------------------- sync


class Client(_ClientCore[httpx.Client]):
    """Synchronous client. ``api_url`` is the scheduler, ``gateway_url`` the gateway (for invocations)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        gateway_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        def make(base_url: str, headers: dict[str, str]) -> httpx.Client:
            return httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

        super().__init__(api_url, api_key, gateway_url, make)

    def close(self) -> None:
        self._http.close()
        self._gw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    def _send(self, req: _Request, http: httpx.Client | None = None) -> httpx.Response:
        http = http or self._http
        try:
            response = http.request(req.method, req.path, **req.options())
        except httpx.TransportError as exc:
            raise _unreachable(http, exc) from None
        return _checked(response)

    def _json(self, req: _Request) -> Any:
        response = self._send(req)
        return response.json() if response.content else None

    def _stream_lines(self, req: _Request, http: httpx.Client | None = None) -> Iterator[tuple[str, str]]:
        """Yield (content_type, line) for each line of a streamed answer."""
        http = http or self._http
        try:
            with http.stream(req.method, req.path, params=req.params, json=req.json, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _checked(response)
                ctype = response.headers.get("content-type", "")
                for line in response.iter_lines():
                    yield ctype, line
        except httpx.TransportError as exc:
            raise _unreachable(http, exc) from None

    # -- identity, users and keys

    def health(self) -> JSON:
        """``GET /healthz`` (no authentication needed)."""
        return dict(self._json(_Request("GET", "/healthz")) or {})

    def me(self) -> JSON:
        """The caller: ``{user_id, username, is_admin}``."""
        body: JSON = self._json(_Request("GET", "/v1/me"))
        self._username = body.get("username")
        return body

    def username(self) -> str:
        """The caller's username (asked once, then remembered)."""
        return self._username or str(self.me()["username"])

    def create_user(self, username: str) -> JSON:
        """(admin) Create a user; the answer holds its first API key, shown only this once."""
        return dict(self._json(_Request("POST", "/v1/users", json={"username": username})))

    def create_key(self, name: str | None = None, *, role: str | None = None) -> JSON:
        """Create an API key for the caller (``role`` gateway or admin: admins only); the secret is shown once."""
        return dict(self._json(_Request("POST", "/v1/keys", json=_key_body(name, role))))

    def list_keys(self) -> list[JSON]:
        return _items(self._json(_Request("GET", "/v1/keys")), "keys", "items")

    def delete_key(self, key_id: str) -> None:
        self._send(_Request("DELETE", f"/v1/keys/{_ref(key_id)}"))

    # -- secrets

    def create_secret(self, name: str, value: str, *, chute: str) -> JSON:
        """Create or replace the secret ``name`` of ``chute`` (id, name or slug; a name may be of a chute not
        deployed yet). The chute's instances get it as an environment variable; the value is never shown again."""
        return dict(self._json(_secret_create(name, chute, value)))

    def list_secrets(self, chute: str | None = None, *, everyone: bool = False) -> list[JSON]:
        """Names, chutes and times of your secrets (``everyone``: all users', admins only); never values."""
        return _items(self._json(_secret_list(chute, everyone)), "secrets", "items")

    def delete_secret(self, name: str, *, chute: str) -> None:
        self._send(_secret_delete(name, chute))

    # -- chutes

    def deploy(self, chute: Chute | str, *, public: bool = False, image: str | None = None) -> JSON:
        """Upload a chute (an object, or ``FILE:ATTR`` / ``module:attr``); answers as soon as it is accepted.

        ``public``: every user may call it (admins only). ``image``: the id of a built image (``build``) its
        instances run in; the deploy is refused when that build failed."""
        return dict(self._json(_prepare_deploy(chute, public, image)))

    # -- images

    def build(
        self,
        chute: Chute | str,
        *,
        wait: bool = False,
        rebuild: bool = False,
        on_line: Callable[[str], None] | None = None,
    ) -> JSON:
        """Upload the build context of a chute's image and build it (nothing starts when it is built already:
        ``cache_hit``). ``wait``: follow the build, calling ``on_line`` with each line of its output, and answer
        the finished image (``status`` ready with its ``ref``, or failed with its ``error``)."""
        packed = pack_image(chute)
        image = dict(self._json(_image_upload(packed.archive, rebuild)))
        if wait and image.get("status") in ("queued", "building"):
            for line in self.image_logs(image["image_id"], follow=True):
                if on_line is not None:
                    on_line(line)
            image = self.get_image(image["image_id"]) | {"cache_hit": False}
        return image

    def list_images(self) -> list[JSON]:
        return _items(self._json(_Request("GET", "/v1/images")), "images", "items")

    def builds_available(self) -> bool:
        """Whether the platform builds images (a scheduler without the image API: no)."""
        try:
            response = self._send(_Request("GET", "/v1/images"))
        except ChutesAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return _builds_on(response)

    def get_image(self, ref: str) -> JSON:
        """An image by id (or a unique prefix of it, or ``name:tag``)."""
        return dict(self._json(_Request("GET", f"/v1/images/{_ref(ref)}")))

    def image_logs(self, ref: str, *, follow: bool = False) -> Iterator[str]:
        """The build's output lines; ``follow`` streams them while it builds."""
        req = _Request("GET", f"/v1/images/{_ref(ref)}/logs", params={"follow": "true"} if follow else None)
        for _, line in self._stream_lines(req):
            if line:
                yield _image_line(line)

    def delete_image(self, ref: str) -> None:
        self._send(_Request("DELETE", f"/v1/images/{_ref(ref)}"))

    def list_chutes(self) -> list[JSON]:
        return _items(self._json(_Request("GET", "/v1/chutes")), "chutes", "items")

    def get_chute(self, ref: str) -> JSON:
        """A chute by id or by name (the caller's)."""
        return dict(self._json(_Request("GET", f"/v1/chutes/{_ref(ref)}")))

    def delete_chute(self, ref: str) -> None:
        self._send(_Request("DELETE", f"/v1/chutes/{_ref(ref)}"))

    def scale_chute(self, ref: str, instances: int) -> JSON:
        return dict(self._json(_Request("POST", f"/v1/chutes/{_ref(ref)}/scale", json={"instances": instances})) or {})

    def share_chute(self, ref: str, username: str) -> JSON:
        return dict(self._json(_Request("POST", f"/v1/chutes/{_ref(ref)}/share", json={"username": username})) or {})

    def unshare_chute(self, ref: str, username: str) -> None:
        self._send(_Request("DELETE", f"/v1/chutes/{_ref(ref)}/share/{_ref(username)}"))

    def instances(self, ref: str) -> list[JSON]:
        return _items(self._json(_Request("GET", f"/v1/chutes/{_ref(ref)}/instances")), "instances", "items")

    def events(self, ref: str, *, follow: bool = False, after: int = 0, timeout: float | None = None) -> Iterator[JSON]:
        """Deployment events after id ``after``, oldest first.

        ``follow`` keeps yielding new ones as they come, until the server ends the stream or, with ``timeout``,
        until that many seconds have passed (checked on each event and on the server's keep-alives).
        """
        req = _Request("GET", f"/v1/chutes/{_ref(ref)}/events", params=_event_params(follow, after))
        if not follow:
            yield from _items(self._json(req), "events", "items")
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        decoder = _EventDecoder()
        for _, line in self._stream_lines(req):
            yield from decoder.feed(line)
            if deadline is not None and time.monotonic() > deadline:
                return
        yield from decoder.finish()

    def logs(
        self, ref: str, *, follow: bool = False, instance: str | None = None, stream: str = "stdout"
    ) -> Iterator[LogLine]:
        """Instance logs through Nomad (``stream`` stdout or stderr); ``follow`` keeps yielding new lines."""
        params = _log_params(follow, instance, stream)
        decoder = _LogDecoder()
        for ctype, line in self._stream_lines(_Request("GET", f"/v1/chutes/{_ref(ref)}/logs", params=params)):
            yield from decoder.feed(ctype, line)
        yield from decoder.finish()

    # -- nodes, usage, jobs

    def nodes(self) -> list[JSON]:
        return _items(self._json(_Request("GET", "/v1/nodes")), "nodes", "items")

    def node(self, node_id: str) -> JSON:
        return dict(self._json(_Request("GET", f"/v1/nodes/{_ref(node_id)}")))

    def usage(
        self,
        *,
        start: str | None = None,
        end: str | None = None,
        chute: str | None = None,
        username: str | None = None,
        everyone: bool = False,
    ) -> JSON:
        """Usage per chute and UTC day (``start``/``end`` as YYYY-MM-DD); ``username``/``everyone`` for admins."""
        params = _usage_params(start, end, chute, username, everyone)
        return dict(self._json(_Request("GET", "/v1/usage", params=params)) or {})

    def pricing(self) -> JSON:
        return dict(self._json(_Request("GET", "/v1/pricing")) or {})

    def run_job(self, ref: str, job_name: str, payload: Any = None) -> JSON:
        """Dispatch one run of a job method with a JSON input; answers ``{run_id, ...}``."""
        return dict(
            self._json(_Request("POST", f"/v1/jobs/{_ref(ref)}/{_ref(job_name)}", json=payload if payload else {}))
        )

    def get_job(self, run_id: str) -> JSON:
        """A job run: status, error, result and the list of its output files."""
        return dict(self._json(_Request("GET", f"/v1/jobs/{_ref(run_id)}")))

    def job_output(self, run_id: str, name: str) -> bytes:
        """The bytes of one output file of a job run (``name`` as listed in ``get_job``'s outputs)."""
        return self._send(_Request("GET", f"/v1/jobs/{_ref(run_id)}/outputs/{quote(name)}")).content

    # -- invocations (through the gateway)

    def invoke(
        self,
        chute: str,
        path: str,
        data: Any = None,
        *,
        username: str | None = None,
        method: str = "POST",
    ) -> Invocation:
        """Call a cord through the gateway and return the whole answer.

        ``chute`` is the chute's name; ``username`` its owner (default: the caller).
        """
        url = invocation_path(username or self.username(), chute, path)
        body = data if method != "GET" else None
        response = self._send(_Request(method, url, json=body), http=self._gateway())
        return _invocation(response)

    def invoke_stream(
        self,
        chute: str,
        path: str,
        data: Any = None,
        *,
        username: str | None = None,
        method: str = "POST",
    ) -> Iterator[str]:
        """Call a streaming cord and yield its frames as they arrive (the ``data`` of each SSE event)."""
        url = invocation_path(username or self.username(), chute, path)
        decoder = _FrameDecoder()
        for ctype, line in self._stream_lines(_Request(method, url, json=data), http=self._gateway()):
            yield from decoder.feed(ctype, line)
        yield from decoder.finish()


def _frame(event: SSEvent) -> str:
    if event.event == "error":
        raise ChutesAPIError(500, f"the stream failed: {event.data}", "see `chutes logs` for the instance's side")
    return event.data


class _LogDecoder:
    """Turns the lines of a logs answer into LogLines: SSE, JSON lines, a JSON document, or plain text."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._json: list[str] = []

    def feed(self, ctype: str, line: str) -> list[LogLine]:
        if "text/event-stream" in ctype:
            event = self._sse.feed(line)
            return [_log_from_sse(event)] if event is not None else []
        if "ndjson" in ctype or "jsonl" in ctype:
            if not line.strip():
                return []
            try:
                return [_log_from_json(json.loads(line))]
            except ValueError:
                return [LogLine(line)]
        if "json" in ctype:
            self._json.append(line)
            return []
        return [LogLine(line)]

    def finish(self) -> list[LogLine]:
        out: list[LogLine] = []
        event = self._sse.flush()
        if event is not None:
            out.append(_log_from_sse(event))
        if self._json:
            text = "\n".join(self._json)
            try:
                body = json.loads(text)
            except ValueError:
                return [*out, *(LogLine(line) for line in self._json)]
            entries = _items(body, "lines", "logs", "items") if not isinstance(body, list) else body
            if not entries and isinstance(body, dict):
                entries = [body]
            out.extend(_log_from_json(entry) for entry in entries)
        return out


def _log_from_sse(event: SSEvent) -> LogLine:
    try:
        return _log_from_json(json.loads(event.data))
    except ValueError:
        return LogLine(event.data)


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in text.lower() or "Errno 111" in text else text
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return text


# ---------------------------------------------------------------------------------------------------- async


class AsyncClient(_ClientCore[httpx.AsyncClient]):
    """The asyncio twin of ``Client``: the same methods, awaited (iterators become async iterators)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        gateway_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        def make(base_url: str, headers: dict[str, str]) -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

        super().__init__(api_url, api_key, gateway_url, make)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._gw.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, req: _Request, http: httpx.AsyncClient | None = None) -> httpx.Response:
        http = http or self._http
        try:
            response = await http.request(req.method, req.path, **req.options())
        except httpx.TransportError as exc:
            raise _unreachable(http, exc) from None
        return _checked(response)

    async def _json(self, req: _Request) -> Any:
        response = await self._send(req)
        return response.json() if response.content else None

    async def _stream_lines(
        self, req: _Request, http: httpx.AsyncClient | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        http = http or self._http
        try:
            async with http.stream(req.method, req.path, params=req.params, json=req.json, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _checked(response)
                ctype = response.headers.get("content-type", "")
                async for line in response.aiter_lines():
                    yield ctype, line
        except httpx.TransportError as exc:
            raise _unreachable(http, exc) from None

    async def health(self) -> JSON:
        return dict(await self._json(_Request("GET", "/healthz")) or {})

    async def me(self) -> JSON:
        body: JSON = await self._json(_Request("GET", "/v1/me"))
        self._username = body.get("username")
        return body

    async def username(self) -> str:
        return self._username or str((await self.me())["username"])

    async def create_user(self, username: str) -> JSON:
        return dict(await self._json(_Request("POST", "/v1/users", json={"username": username})))

    async def create_key(self, name: str | None = None, *, role: str | None = None) -> JSON:
        return dict(await self._json(_Request("POST", "/v1/keys", json=_key_body(name, role))))

    async def list_keys(self) -> list[JSON]:
        return _items(await self._json(_Request("GET", "/v1/keys")), "keys", "items")

    async def delete_key(self, key_id: str) -> None:
        await self._send(_Request("DELETE", f"/v1/keys/{_ref(key_id)}"))

    async def create_secret(self, name: str, value: str, *, chute: str) -> JSON:
        return dict(await self._json(_secret_create(name, chute, value)))

    async def list_secrets(self, chute: str | None = None, *, everyone: bool = False) -> list[JSON]:
        return _items(await self._json(_secret_list(chute, everyone)), "secrets", "items")

    async def delete_secret(self, name: str, *, chute: str) -> None:
        await self._send(_secret_delete(name, chute))

    async def build(
        self,
        chute: Chute | str,
        *,
        wait: bool = False,
        rebuild: bool = False,
        on_line: Callable[[str], None] | None = None,
    ) -> JSON:
        """As ``Client.build``."""
        packed = pack_image(chute)
        image = dict(await self._json(_image_upload(packed.archive, rebuild)))
        if wait and image.get("status") in ("queued", "building"):
            async for line in self.image_logs(image["image_id"], follow=True):
                if on_line is not None:
                    on_line(line)
            image = await self.get_image(image["image_id"]) | {"cache_hit": False}
        return image

    async def list_images(self) -> list[JSON]:
        return _items(await self._json(_Request("GET", "/v1/images")), "images", "items")

    async def builds_available(self) -> bool:
        """As ``Client.builds_available``."""
        try:
            response = await self._send(_Request("GET", "/v1/images"))
        except ChutesAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return _builds_on(response)

    async def get_image(self, ref: str) -> JSON:
        return dict(await self._json(_Request("GET", f"/v1/images/{_ref(ref)}")))

    async def image_logs(self, ref: str, *, follow: bool = False) -> AsyncIterator[str]:
        req = _Request("GET", f"/v1/images/{_ref(ref)}/logs", params={"follow": "true"} if follow else None)
        async for _, line in self._stream_lines(req):
            if line:
                yield _image_line(line)

    async def delete_image(self, ref: str) -> None:
        await self._send(_Request("DELETE", f"/v1/images/{_ref(ref)}"))

    async def deploy(self, chute: Chute | str, *, public: bool = False, image: str | None = None) -> JSON:
        return dict(await self._json(_prepare_deploy(chute, public, image)))

    async def list_chutes(self) -> list[JSON]:
        return _items(await self._json(_Request("GET", "/v1/chutes")), "chutes", "items")

    async def get_chute(self, ref: str) -> JSON:
        return dict(await self._json(_Request("GET", f"/v1/chutes/{_ref(ref)}")))

    async def delete_chute(self, ref: str) -> None:
        await self._send(_Request("DELETE", f"/v1/chutes/{_ref(ref)}"))

    async def scale_chute(self, ref: str, instances: int) -> JSON:
        req = _Request("POST", f"/v1/chutes/{_ref(ref)}/scale", json={"instances": instances})
        return dict(await self._json(req) or {})

    async def share_chute(self, ref: str, username: str) -> JSON:
        req = _Request("POST", f"/v1/chutes/{_ref(ref)}/share", json={"username": username})
        return dict(await self._json(req) or {})

    async def unshare_chute(self, ref: str, username: str) -> None:
        await self._send(_Request("DELETE", f"/v1/chutes/{_ref(ref)}/share/{_ref(username)}"))

    async def instances(self, ref: str) -> list[JSON]:
        return _items(await self._json(_Request("GET", f"/v1/chutes/{_ref(ref)}/instances")), "instances", "items")

    async def events(self, ref: str, *, follow: bool = False, after: int = 0) -> AsyncIterator[JSON]:
        """As ``Client.events``; bound a follow with ``asyncio.timeout`` instead of a timeout argument."""
        req = _Request("GET", f"/v1/chutes/{_ref(ref)}/events", params=_event_params(follow, after))
        if not follow:
            for item in _items(await self._json(req), "events", "items"):
                yield item
            return
        decoder = _EventDecoder()
        async for _, line in self._stream_lines(req):
            for event in decoder.feed(line):
                yield event
        for event in decoder.finish():
            yield event

    async def logs(
        self, ref: str, *, follow: bool = False, instance: str | None = None, stream: str = "stdout"
    ) -> AsyncIterator[LogLine]:
        params = _log_params(follow, instance, stream)
        decoder = _LogDecoder()
        async for ctype, line in self._stream_lines(_Request("GET", f"/v1/chutes/{_ref(ref)}/logs", params=params)):
            for log in decoder.feed(ctype, line):
                yield log
        for log in decoder.finish():
            yield log

    async def nodes(self) -> list[JSON]:
        return _items(await self._json(_Request("GET", "/v1/nodes")), "nodes", "items")

    async def node(self, node_id: str) -> JSON:
        return dict(await self._json(_Request("GET", f"/v1/nodes/{_ref(node_id)}")))

    async def usage(
        self,
        *,
        start: str | None = None,
        end: str | None = None,
        chute: str | None = None,
        username: str | None = None,
        everyone: bool = False,
    ) -> JSON:
        params = _usage_params(start, end, chute, username, everyone)
        return dict(await self._json(_Request("GET", "/v1/usage", params=params)) or {})

    async def pricing(self) -> JSON:
        return dict(await self._json(_Request("GET", "/v1/pricing")) or {})

    async def run_job(self, ref: str, job_name: str, payload: Any = None) -> JSON:
        req = _Request("POST", f"/v1/jobs/{_ref(ref)}/{_ref(job_name)}", json=payload if payload else {})
        return dict(await self._json(req))

    async def get_job(self, run_id: str) -> JSON:
        return dict(await self._json(_Request("GET", f"/v1/jobs/{_ref(run_id)}")))

    async def job_output(self, run_id: str, name: str) -> bytes:
        return (await self._send(_Request("GET", f"/v1/jobs/{_ref(run_id)}/outputs/{quote(name)}"))).content

    async def invoke(
        self, chute: str, path: str, data: Any = None, *, username: str | None = None, method: str = "POST"
    ) -> Invocation:
        url = invocation_path(username or await self.username(), chute, path)
        body = data if method != "GET" else None
        response = await self._send(_Request(method, url, json=body), http=self._gateway())
        return _invocation(response)

    async def invoke_stream(
        self, chute: str, path: str, data: Any = None, *, username: str | None = None, method: str = "POST"
    ) -> AsyncIterator[str]:
        url = invocation_path(username or await self.username(), chute, path)
        decoder = _FrameDecoder()
        async for ctype, line in self._stream_lines(_Request(method, url, json=data), http=self._gateway()):
            for frame in decoder.feed(ctype, line):
                yield frame
        for frame in decoder.finish():
            yield frame
