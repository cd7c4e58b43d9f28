"""Calling user code: argument building, sync code in threads, generators as async iterators, hooks.

A user function is async, sync, an async generator or a sync generator. Async code runs on the event loop;
sync code runs in the runtime's thread pool so that it never blocks health checks or other calls. Python
cannot stop a thread, so ``ThreadedSteps`` remembers the step still running after a timeout or a disconnect,
and the caller keeps the concurrency slot until that step has really returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T")
_DONE = object()


class FuncKind(enum.Enum):
    ASYNC = "async"
    SYNC = "sync"
    ASYNC_GEN = "async-generator"
    SYNC_GEN = "generator"


def func_kind(func: Callable[..., Any]) -> FuncKind:
    target = inspect.unwrap(func)
    if inspect.isasyncgenfunction(target):
        return FuncKind.ASYNC_GEN
    if inspect.iscoroutinefunction(target):
        return FuncKind.ASYNC
    if inspect.isgeneratorfunction(target):
        return FuncKind.SYNC_GEN
    return FuncKind.SYNC


def call_arguments(
    owner: Any, model: BaseModel | None, takes_model: bool, extra: dict[str, Any] | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``func(chute, model)`` or ``func(chute, **fields)`` (contract: ``takes_model``), plus ``extra`` kwargs.

    The fields a model lets through beyond its own (a function with ``**kwargs``) are passed on too.
    """
    kwargs: dict[str, Any] = dict(extra) if extra else {}
    if model is None:
        return (owner,), kwargs
    if takes_model:
        return (owner, model), kwargs
    for name in type(model).model_fields:
        kwargs[name] = getattr(model, name)
    if model.model_extra:
        for name, value in model.model_extra.items():
            kwargs.setdefault(name, value)
    return (owner,), kwargs


class ThreadedSteps:
    """Runs blocking steps in an executor one at a time, remembering the one still running."""

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self._pending: concurrent.futures.Future[Any] | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._pending = future = self._executor.submit(fn, *args, **kwargs)
        result: T = await asyncio.wrap_future(future)
        return result

    def after_pending(self, then: Callable[[], None], cleanup: Callable[[], Any] | None = None) -> None:
        """Call ``then`` on the loop once the running step (and ``cleanup``, in a thread) has returned."""

        def finish(_: object = None) -> None:
            self._loop.call_soon_threadsafe(then)

        def run_cleanup(_: object = None) -> None:
            if cleanup is None:
                finish()
                return
            try:
                self._executor.submit(cleanup).add_done_callback(finish)
            except RuntimeError:  # executor already shut down: run it here rather than leak the generator
                _quiet(cleanup)
                finish()

        pending = self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(run_cleanup)
        else:
            run_cleanup()


def _quiet(fn: Callable[[], Any]) -> None:
    # Closing the generator of a call that already failed or ended: nothing useful to report.
    with contextlib.suppress(Exception):
        fn()


def _next_or_done(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


async def iterate(value: Any, steps: ThreadedSteps) -> AsyncIterator[Any]:
    """Chunks of a streaming cord's return value: async iterables on the loop, sync iterators in threads,
    any other value as one chunk (``str``, ``bytes`` and mappings are single values, not iterables)."""
    if hasattr(value, "__aiter__"):
        async for chunk in value:
            yield chunk
        return
    if isinstance(value, str | bytes | bytearray | memoryview | dict) or not hasattr(value, "__iter__"):
        yield value
        return
    iterator = iter(value)
    while True:
        chunk = await steps.run(_next_or_done, iterator)
        if chunk is _DONE:
            return
        yield chunk


def run_in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread: a hook stuck in C code must not keep the process alive at exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=f"hook-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return future


async def call_hook(hook: Callable[..., Any], owner: Any) -> None:
    """A startup or shutdown hook: async ones on the loop, sync ones in a daemon thread."""
    if func_kind(hook) is FuncKind.ASYNC:
        await hook(owner)
        return
    result = await run_in_daemon_thread(hook, owner)
    if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
        await result


def hook_name(hook: Callable[..., Any]) -> str:
    return str(getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None) or repr(hook))
