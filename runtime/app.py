"""The ASGI application of one instance: health, signatures, concurrency, cords, streams, passthrough.

Order of checks on a cord call: body read (413 past the limit) → signature (401 missing, 403 wrong, stale or
replayed; skipped with ``--dev``; nothing of the body is parsed before it) → route (404, 405) → phase (503
while starting or draining) → concurrency (429 with ``Retry-After``) → input validation (422 for JSON nested
deeper than ``max_json_depth``, 422 with pydantic's field errors) → the call (504 past the cord's timeout, 500
with a JSON body when it raises, the status of a raised ``HTTPException``). A signature
is only recorded as used once its call is admitted, so a 429/503 answer can be retried with the same one.

Return values: a Starlette/FastAPI ``Response`` is sent as is; ``bytes`` with the cord's
``output_content_type`` (default ``application/octet-stream``); a ``str`` as text when the cord declares a
non-JSON ``output_content_type``; anything else as JSON (pydantic models, dataclasses, ``None``...).
Streaming cords: see ``chutes.runtime.sse``.

Cords with FastAPI request parameters (``Depends``, ``Header``, ``Request``, ``BackgroundTasks``...) or a
``response_model`` / ``status_code`` take one more step after input validation: FastAPI solves those parameters
(``chutes.runtime.dependencies``): 422 when a header or query parameter is invalid, the status of an
``HTTPException`` a dependency raises; dependency cleanup runs after the answer (after a stream's end), then the
background tasks. Plain cords skip all of it.

Routes a user added to the Chute itself (it is a FastAPI app) are served as a fallback for paths that are no
cord, behind the same signature check, phase and concurrency limit; their input and output are FastAPI's
business (no cord timeout there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_json
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chutes.core.edge import strictjson
from chutes.core.signing import SIGNATURE_HEADER, ParsedSignature, SignatureError
from chutes.runtime import dependencies, sse
from chutes.runtime.asgi import (
    JSON,
    BodyTooLarge,
    ClientGone,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_error,
    send_response,
)
from chutes.runtime.config import ServeConfig
from chutes.runtime.invoke import FuncKind, ThreadedSteps, call_arguments, call_hook, hook_name, iterate
from chutes.runtime.lifecycle import Lifecycle, Phase
from chutes.runtime.limiter import ConcurrencyLimiter
from chutes.runtime.metrics import RuntimeMetrics
from chutes.runtime.passthrough import PassthroughProxy, StreamCut, passthrough_url
from chutes.runtime.protocols import ChuteLike
from chutes.runtime.routes import CordPair, CordRoute, Routes, build_routes
from chutes.runtime.signatures import RequestVerifier

log = logging.getLogger("chutes.runtime")

ASGIApp = Callable[[Scope, Receive, Send], Any]
CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer"
_SIGNATURE = SIGNATURE_HEADER.lower().encode()
_EMPTY = object()
_SSE_HEADERS: Headers = [
    (b"content-type", sse.MEDIA_TYPE.encode()),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class _Call:
    """One admitted cord call: where to answer, and whether a thread still holds its slot.

    ``status`` and ``headers`` are those of a successful answer (dependencies may change them).
    """

    __slots__ = ("body", "headers", "keep_slot", "receive", "route", "scope", "send", "status")

    def __init__(self, scope: Scope, receive: Receive, send: Send, route: CordRoute, body: bytes) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.route = route
        self.body = body
        self.keep_slot = False
        self.status = 200
        self.headers: Headers = []


class RuntimeApp:
    """Serves one chute. ``on_fatal(code)`` is called when a startup hook fails (the server should exit)."""

    def __init__(self, chute: ChuteLike, config: ServeConfig, on_fatal: Callable[[int], None] | None = None) -> None:
        self.chute = chute
        self.config = config
        self.on_fatal = on_fatal
        self.exit_code = 0
        self.lifecycle = Lifecycle()
        self.limiter = ConcurrencyLimiter(chute.concurrency)
        self.metrics = RuntimeMetrics(self.limiter)
        self.verifier = None if config.dev else RequestVerifier(config.invoke_secret or "")
        self.routes = build_routes(chute.cords, config.cord_timeout)
        has_passthrough = any(c.passthrough for c in chute.cords)
        self.proxy = PassthroughProxy(lambda: getattr(chute, "passthrough_headers", None)) if has_passthrough else None
        self.fallback = _user_routes(chute)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._startup: asyncio.Task[None] | None = None

    # ---- ASGI entry -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: not a cord transport
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- lifecycle ----------------------------------------------------------------------------------------

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.limiter.limit, thread_name_prefix="cord"
            )
        return self._executor

    async def startup(self) -> None:
        """Start serving health at once; run the startup hooks in the background, then turn ready."""
        if self.proxy is not None:
            await self.proxy.start()
        self._startup = asyncio.create_task(self._run_startup_hooks(), name="startup-hooks")

    async def _run_startup_hooks(self) -> None:
        for hook in self.chute.startup_hooks:
            name = hook_name(hook)
            log.info("startup hook %s: running", name)
            try:
                await call_hook(hook, self.chute)
            except Exception as exc:
                log.error("startup hook %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
                self.lifecycle.mark_failed()
                self.exit_code = 1
                if self.on_fatal is not None:
                    self.on_fatal(1)
                return
        if self.lifecycle.mark_ready():
            log.info("ready: %d cord route(s), concurrency %d", _count(self.routes), self.limiter.limit)

    async def wait_started(self) -> bool:
        """Wait for the startup hooks; True when the instance became ready."""
        if self._startup is not None:
            await asyncio.shield(self._startup)
        return self.lifecycle.phase is Phase.READY

    def begin_drain(self) -> bool:
        """Turn ``/_ready`` and new calls to 503; True the first time."""
        started = self.lifecycle.begin_drain()
        if started:
            log.info("draining: %d call(s) in flight", self.limiter.in_flight)
        return started

    async def drain(self) -> bool:
        """Wait for the calls in flight, up to the drain timeout; False when some were still running."""
        idle = await self.limiter.wait_idle(self.config.drain_timeout)
        if not idle:
            log.warning(
                "drain timeout (%g s) passed with %d call(s) still in flight",
                self.config.drain_timeout,
                self.limiter.in_flight,
            )
        return idle

    async def shutdown(self) -> None:
        """Stop the startup hooks if still running, run the shutdown hooks, release resources."""
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
            try:
                await self._startup
            except asyncio.CancelledError:
                log.warning("startup hooks interrupted by shutdown")
        for hook in self.chute.shutdown_hooks:
            name = hook_name(hook)
            try:
                await call_hook(hook, self.chute)
            except Exception as exc:
                log.error("shutdown hook %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
        if self.proxy is not None:
            await self.proxy.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self.lifecycle.phase is not Phase.FAILED:
            self.lifecycle.begin_drain()
        self.lifecycle.mark_stopped()
        log.info("stopped")

    # ---- HTTP -----------------------------------------------------------------------------------------------

    def _conn_headers(self) -> Headers:
        used = self.limiter.in_flight
        return [
            (b"x-chutes-conn-used", str(used).encode()),
            (b"x-chutes-conn-available", str(max(self.limiter.limit - used, 0)).encode()),
        ]

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path[:2] == "/_" and path in _HEALTH:
            await _HEALTH[path](self, scope, send)
            return
        try:
            body = await read_body(scope, receive, self.config.max_body_bytes)
        except BodyTooLarge:
            await send_error(send, 413, f"request body larger than {self.config.max_body_bytes} bytes")
            return
        except ClientGone:
            return
        method: str = scope["method"]
        by_method = self.routes.get(path)
        entry = by_method.get(method) if by_method is not None else None

        # The signature first: nothing of an unsigned body is parsed.
        parsed: ParsedSignature | None = None
        if self.verifier is not None:
            try:
                parsed = self.verifier.check(_signature(scope), method, _target(scope), body)
            except SignatureError as exc:
                if entry is not None:
                    self.metrics.count(entry.unary.name if isinstance(entry, CordPair) else entry.name, exc.status)
                await send_error(send, exc.status, str(exc), _signature_hint(exc.status))
                return
        route = entry.pick(body, scope.get("query_string", b"")) if isinstance(entry, CordPair) else entry

        if route is None:
            if by_method is not None:
                allowed = ", ".join(sorted(by_method))
                await send_error(
                    send, 405, f"{method} is not allowed on {path}", f"use {allowed}", [(b"allow", allowed.encode())]
                )
            elif self.fallback is not None:
                await self._serve_fallback(scope, receive, send, body, parsed)
            else:
                await send_error(send, 404, f"no cord at {path}")
            return

        if not self.lifecycle.accepting:
            self.metrics.count(route.name, 503)
            await send_error(send, 503, _not_accepting(self.lifecycle.phase), None, self._closing_headers())
            return
        if not self.limiter.try_acquire():
            self.metrics.count(route.name, 429)
            await send_error(
                send,
                429,
                f"instance is at its concurrency limit ({self.limiter.limit} calls in flight)",
                "retry later or on another instance",
                [(b"retry-after", b"1"), *self._conn_headers()],
            )
            return
        if parsed is not None and self.verifier is not None:
            self.verifier.commit(parsed)

        call = _Call(scope, receive, send, route, body)
        started = time.perf_counter()
        status = 500
        try:
            status = await self._dispatch(call)
        finally:
            self.metrics.observe(route.name, status, time.perf_counter() - started)
            if not call.keep_slot:
                self.limiter.release()

    def _closing_headers(self) -> Headers:
        headers = self._conn_headers()
        if self.lifecycle.phase is not Phase.STARTING:
            headers.append((b"connection", b"close"))
        return headers

    async def _dispatch(self, call: _Call) -> int:
        route = call.route
        model_cls = route.cord.input_model
        model: BaseModel | None = None
        if model_cls is not None:
            try:
                if route.query_input:
                    query = call.scope.get("query_string", b"").decode("latin-1")
                    fields = dict(parse_qsl(query, keep_blank_values=True))
                    if route.binding is not None and route.binding.query_names:
                        # Query() parameters are FastAPI's to read, not the cord's input.
                        fields = {k: v for k, v in fields.items() if k not in route.binding.query_names}
                    model = model_cls.model_validate(fields)
                else:
                    strictjson.check_depth(call.body, self.config.max_json_depth)
                    model = model_cls.model_validate_json(call.body or b"{}")
            except strictjson.JSONTooDeep as exc:
                await send_error(call.send, 422, str(exc), "send flatter JSON", self._conn_headers())
                return 422
            except ValidationError as exc:
                detail = exc.errors(include_url=False, include_context=False, include_input=False)
                await send_error(
                    call.send, 422, detail, f"input of cord {route.name!r} is invalid", self._conn_headers()
                )
                return 422
        if route.passthrough_port is not None:
            return await self._passthrough(call)
        args, kwargs = call_arguments(self.chute, model, route.cord.takes_model)
        if route.binding is not None:
            return await self._with_dependencies(call, route.binding, model, args, kwargs)
        if route.stream:
            return await self._stream(call, args, kwargs)
        return await self._unary(call, args, kwargs)

    # ---- unary cords ----------------------------------------------------------------------------------------

    async def _unary(self, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        try:
            result = await self._call_unary(call, args, kwargs)
        except ClientGone:
            return CLIENT_CLOSED
        except TimeoutError:
            return await self._send_timeout(call)
        except Exception as exc:
            return await self._send_failure(call, exc)
        return await self._send_result(call, result)

    async def _call_unary(self, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The function's result within the cord's timeout: raises TimeoutError, ClientGone or what it raised."""
        route = call.route
        func = route.cord.func
        if route.kind is FuncKind.ASYNC:
            work = asyncio.ensure_future(func(*args, **kwargs))
            try:
                return await self._guarded(call, work, route.timeout)
            except ClientGone:
                log.info("cord %s: the client disconnected; the call was cancelled and its slot freed", route.name)
                raise
        steps = ThreadedSteps(self.executor)
        try:
            async with asyncio.timeout(route.timeout):
                return await self._threaded(call, steps, func, args, kwargs)
        except TimeoutError:
            call.keep_slot = True  # the thread still runs: its slot stays taken until it returns
            steps.after_pending(self.limiter.release)
            raise

    async def _send_timeout(self, call: _Call) -> int:
        route = call.route
        detail = f"cord {route.name!r} timed out after {route.timeout:g} s"
        await send_error(call.send, 504, detail, None, self._conn_headers())
        return 504

    # ---- cords with FastAPI parameters ----------------------------------------------------------------------

    async def _with_dependencies(
        self,
        call: _Call,
        binding: dependencies.RequestBinding,
        model: BaseModel | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> int:
        """Solve the cord's FastAPI parameters, call it and answer, in FastAPI's order: function-scoped
        dependencies close when the function returns; then the answer; then the background tasks; then the
        other dependencies close (after a stream's last byte for a streaming cord).

        Errors raised by the dependencies or the function go through the dependencies' exit stacks first (a
        generator dependency sees them, as in FastAPI) and are answered after: HTTPException with its status,
        invalid headers, query or cookies with 422, anything else with 500.
        """
        route = call.route
        if model is not None and route.cord.takes_model and binding.model_param:
            args, kwargs = (self.chute,), {binding.model_param: model}  # by name: request parameters may precede
        scope = dependencies.request_scope(call.scope, self.chute)
        request = Request(scope, dependencies.replay(call.body, call.receive))
        answered = False
        send = call.send

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            answered = True
            await send(message)

        call.send = tracked_send
        status = 500
        try:
            async with contextlib.AsyncExitStack() as request_stack:
                scope[dependencies.REQUEST_STACK] = request_stack
                async with contextlib.AsyncExitStack() as function_stack:
                    scope[dependencies.FUNCTION_STACK] = function_stack
                    solved = await dependencies.solve(binding, request, self.chute)
                    kwargs.update(solved.values)  # after the body's fields: a body can never set a dependency
                    if route.stream:
                        call.status, call.headers = dependencies.answer_of(binding, solved)
                        status = await self._stream(call, args, kwargs)
                    else:
                        result = await self._call_unary(call, args, kwargs)
                if not route.stream:
                    # After the call: the function may have set headers or a status on its `response: Response`.
                    call.status, call.headers = dependencies.answer_of(binding, solved)
                    if isinstance(result, Response):
                        if result.background is None:  # the Response runs them after its body, as in FastAPI
                            result.background, solved.background_tasks = solved.background_tasks, None
                    elif binding.response_field is not None:
                        result = await dependencies.serialize(binding, result)
                    status = await self._send_result(call, result)
                if solved.background_tasks is not None:
                    await self._run_background(route.name, solved.background_tasks)
        except Exception as exc:
            if answered:  # e.g. a dependency's cleanup failed after the answer went out
                log.error("cord %s: %s after the answer: %s", route.name, type(exc).__name__, exc, exc_info=exc)
                return status
            if isinstance(exc, ClientGone):
                return CLIENT_CLOSED
            if isinstance(exc, TimeoutError):
                return await self._send_timeout(call)
            return await self._send_failure(call, exc)
        return status

    @staticmethod
    async def _run_background(name: str, tasks: Callable[[], Any]) -> None:
        try:
            await tasks()
        except Exception as exc:
            log.error("background task of cord %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)

    async def _threaded(
        self, call: _Call, steps: ThreadedSteps, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A sync cord in a thread. Python cannot stop a thread: when the client disconnects the call ends
        (ClientGone) but the thread runs on and keeps the concurrency slot until it returns; the log says so."""
        work = asyncio.ensure_future(steps.run(func, *args, **kwargs))
        watcher = asyncio.ensure_future(call.receive())
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # a timeout: the caller keeps the slot until the thread returns
            watcher.cancel()
            work.add_done_callback(_retrieved)
            raise
        if work.done():
            watcher.cancel()
            return work.result()
        if watcher.result().get("type") != "http.disconnect":  # nothing else can arrive once the body is read
            return await work
        name = call.route.name
        log.info("cord %s: the client disconnected; a sync cord cannot be interrupted: its thread runs on and "
                 "its slot is freed when it returns", name)  # fmt: skip
        call.keep_slot = True

        def freed() -> None:
            self.limiter.release()
            log.info("cord %s: the thread of a disconnected call returned; its slot is free", name)

        steps.after_pending(freed)
        work.add_done_callback(_retrieved)
        raise ClientGone

    async def _guarded(self, call: _Call, work: asyncio.Future[Any], seconds: float | None) -> Any:
        """Await ``work`` for at most ``seconds``; a client disconnect cancels it and raises ClientGone."""
        watcher = asyncio.ensure_future(_cancel_on_disconnect(call.receive, work))
        try:
            async with asyncio.timeout(seconds):
                return await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if work.cancelled() and watcher.done() and (current is None or not current.cancelling()):
                raise ClientGone from None
            raise
        finally:
            watcher.cancel()

    async def _send_result(self, call: _Call, result: Any) -> int:
        route = call.route
        if call.headers and not isinstance(result, Response):
            headers = self._conn_headers() + call.headers
        else:
            headers = self._conn_headers()
        if isinstance(result, Response):
            for key, value in self._conn_headers():
                result.headers[key.decode()] = value.decode()
            await result(call.scope, call.receive, call.send)
            return result.status_code
        if isinstance(result, bytes | bytearray | memoryview):
            body, content_type = bytes(result), route.content_type or b"application/octet-stream"
        elif isinstance(result, str) and route.content_type and not route.content_type.startswith(JSON):
            body, content_type = result.encode(), route.content_type
        else:
            try:
                body = to_json(result)
            except PydanticSerializationError as exc:
                log.error("cord %s returned a value that is not JSON-serialisable: %s", route.name, exc)
                await send_error(
                    call.send,
                    500,
                    f"cord {route.name!r} returned a {type(result).__name__}, which is not JSON-serialisable",
                    "return a dict, a list, a pydantic model, bytes or a Response",
                    self._conn_headers(),
                )
                return 500
            content_type = route.content_type or JSON
        await send_response(call.send, call.status, body, content_type, headers)
        return call.status

    async def _send_failure(self, call: _Call, exc: Exception) -> int:
        """A user exception before anything was sent: its HTTPException status, else 500."""
        if isinstance(exc, HTTPException):
            headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            await send_error(call.send, exc.status_code, exc.detail, None, headers + self._conn_headers())
            return exc.status_code
        if isinstance(exc, RequestValidationError):
            detail = dependencies.validation_detail(exc)
            hint = f"the request's headers, query or cookies do not fit cord {call.route.name!r}"
            await send_error(call.send, 422, detail, hint, self._conn_headers())
            return 422
        log.error("cord %s raised %s: %s", call.route.name, type(exc).__name__, exc, exc_info=exc)
        await send_error(
            call.send,
            500,
            f"cord {call.route.name!r} failed: {type(exc).__name__}: {exc}",
            "see the instance's log for the traceback",
            self._conn_headers(),
        )
        return 500

    # ---- streaming cords ------------------------------------------------------------------------------------

    async def _stream(self, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        route = call.route
        func = route.cord.func
        steps = ThreadedSteps(self.executor)
        cleanup: Callable[[], Any] | None = None
        chunks: AsyncIterator[Any]
        if route.kind is FuncKind.ASYNC_GEN:
            chunks = func(*args, **kwargs)
        elif route.kind is FuncKind.SYNC_GEN:
            generator = func(*args, **kwargs)  # creating a generator runs none of its code
            cleanup = generator.close
            chunks = iterate(generator, steps)
        else:
            chunks = _chunks_of_call(route.kind, func, args, kwargs, steps)
        deadline = asyncio.get_running_loop().time() + route.timeout
        work = asyncio.ensure_future(self._pump(call, chunks, deadline))
        try:
            return int(await self._guarded(call, work, None))
        except ClientGone:
            return CLIENT_CLOSED
        finally:
            if route.kind is not FuncKind.ASYNC_GEN:
                call.keep_slot = True
                steps.after_pending(self.limiter.release, cleanup)

    async def _pump(self, call: _Call, chunks: AsyncIterator[Any], deadline: float) -> int:
        """Await the first chunk before answering 200, then send one SSE frame per chunk."""
        route, send = call.route, call.send
        try:
            try:
                async with asyncio.timeout_at(deadline) as cm:
                    first = await anext(chunks, _EMPTY)
                data = b"" if first is _EMPTY else sse.frame(first)
            except TimeoutError:
                if not cm.expired():
                    raise
                detail = f"cord {route.name!r} sent nothing within {route.timeout:g} s"
                await send_error(send, 504, detail, None, self._conn_headers())
                return 504
            except Exception as exc:
                return await self._send_failure(call, exc)
            headers = _SSE_HEADERS + self._conn_headers() + call.headers
            start = {"type": "http.response.start", "status": call.status, "headers": headers}
            await send(start)
            while first is not _EMPTY:
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                try:
                    async with asyncio.timeout_at(deadline) as cm:
                        chunk = await anext(chunks, _EMPTY)
                    if chunk is _EMPTY:
                        break
                    data = sse.frame(chunk)
                except Exception as exc:
                    await send(
                        {"type": "http.response.body", "body": self._stream_error(route, exc, cm), "more_body": True}
                    )
                    break
            await send({"type": "http.response.body", "body": b""})
            return call.status
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    def _stream_error(route: CordRoute, exc: Exception, cm: asyncio.Timeout) -> bytes:
        if isinstance(exc, TimeoutError) and cm.expired():
            return sse.error_frame(f"cord {route.name!r} timed out after {route.timeout:g} s")
        log.error("stream of cord %s failed: %s", route.name, exc, exc_info=exc)
        return sse.error_frame(f"cord {route.name!r} failed: {type(exc).__name__}: {exc}")

    # ---- passthrough cords ----------------------------------------------------------------------------------

    async def _passthrough(self, call: _Call) -> int:
        route = call.route
        assert self.proxy is not None and route.passthrough_port is not None and route.passthrough_path
        request_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in call.scope["headers"]}
        url = passthrough_url(route.passthrough_port, route.passthrough_path, call.scope.get("query_string", b""))
        work = asyncio.ensure_future(
            self.proxy.forward(
                method=route.cord.method.upper(),
                url=url,
                body=call.body,
                request_headers=request_headers,
                send=call.send,
                response_headers=self._conn_headers,
                seconds=route.timeout,
                stream=route.stream,
            )
        )
        try:
            return int(await self._guarded(call, work, None))
        except ClientGone:
            return CLIENT_CLOSED
        except StreamCut:
            return 502

    # ---- user routes on the Chute -----------------------------------------------------------------------------

    async def _serve_fallback(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, parsed: ParsedSignature | None
    ) -> None:
        assert self.fallback is not None
        if not self.lifecycle.accepting:
            await send_error(send, 503, _not_accepting(self.lifecycle.phase), None, self._closing_headers())
            return
        if not self.limiter.try_acquire():
            await send_error(
                send, 429, "instance is at its concurrency limit", None, [(b"retry-after", b"1"), *self._conn_headers()]
            )
            return
        if parsed is not None and self.verifier is not None:
            self.verifier.commit(parsed)
        replay = dependencies.replay(body, receive)
        status = 500

        async def send_with_conn(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), *self._conn_headers()]
            await send(message)

        started = time.perf_counter()
        try:
            await self.fallback(scope, replay, send_with_conn)
        finally:
            self.metrics.observe("_routes", status, time.perf_counter() - started)
            self.limiter.release()

    # ---- health -------------------------------------------------------------------------------------------------

    async def _alive(self, scope: Scope, send: Send) -> None:
        await send_response(send, 200, b'{"status":"alive"}')

    async def _ready(self, scope: Scope, send: Send) -> None:
        phase = self.lifecycle.phase
        status = 200 if self.lifecycle.accepting else 503
        await send_response(send, status, b'{"status":"' + phase.value.encode() + b'"}')

    async def _metrics(self, scope: Scope, send: Send) -> None:
        await send_response(send, 200, self.metrics.render(), self.metrics.content_type.encode())


_HEALTH: dict[str, Callable[[RuntimeApp, Scope, Send], Any]] = {
    "/_alive": RuntimeApp._alive,
    "/_ready": RuntimeApp._ready,
    "/_metrics": RuntimeApp._metrics,
}


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Done callback of a call whose outcome has nowhere to go: retrieve it so asyncio does not warn."""
    if not future.cancelled():
        future.exception()


async def _cancel_on_disconnect(receive: Receive, work: asyncio.Future[Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            work.cancel()
            return


async def _chunks_of_call(
    kind: FuncKind, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], steps: ThreadedSteps
) -> AsyncIterator[Any]:
    """Chunks of a streaming cord written as a plain function returning an iterable (or one value)."""
    value = await func(*args, **kwargs) if kind is FuncKind.ASYNC else await steps.run(func, *args, **kwargs)
    async for chunk in iterate(value, steps):
        yield chunk


def _signature(scope: Scope) -> str | None:
    value = header(scope, _SIGNATURE)
    return value.decode("latin-1") if value is not None else None


def _target(scope: Scope) -> str:
    """The request target as sent: raw path plus ``?query`` when there is one (what the gateway signs)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _signature_hint(status: int) -> str:
    if status == 401:
        return f"calls reach instances through the gateway, which signs them with {SIGNATURE_HEADER}"
    return "the signature must be fresh (60 s), used once, and made with this chute's invoke secret"


def _not_accepting(phase: Phase) -> str:
    if phase is Phase.STARTING:
        return "instance is starting: startup hooks are still running"
    return f"instance is {phase.value} and takes no new calls"


def _count(routes: Routes) -> int:
    return sum(len(by_method) for by_method in routes.values())


def _user_routes(chute: object) -> ASGIApp | None:
    """The Chute as an ASGI app when the user added routes of their own to it (it is a FastAPI app)."""
    routes = getattr(chute, "routes", None)
    if not callable(chute) or not routes:
        return None
    builtin = {
        getattr(chute, name, None)
        for name in ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")
    }
    user = [r for r in routes if getattr(r, "path", None) not in builtin]
    return chute if user else None
