"""What the engine templates share: argument checks at build time, and (inside startup hooks) downloading a
model, launching an engine on 127.0.0.1 and waiting until it answers, and calling it from Python.

Nothing here imports torch, vllm, sglang or huggingface_hub at module level: a template must be importable
(and ``chutes inspect``-able) on a laptop without a GPU.

What chute files import from Chutes' own ``helpers`` is here too, with the same arguments:
``get_current_hf_commit``, ``set_default_cache_dirs``, ``set_nccl_flags`` and, from ``engine_health``,
``prompt_one``, ``warmup_model``, ``validate_auth`` and ``monitor_engine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel

from chutes.chute.errors import ChuteError
from chutes.chute.template.engine_health import EngineCheckError as EngineCheckError
from chutes.chute.template.engine_health import monitor_engine as monitor_engine
from chutes.chute.template.engine_health import prompt_one as prompt_one
from chutes.chute.template.engine_health import validate_auth as validate_auth
from chutes.chute.template.engine_health import warmup_model as warmup_model

if TYPE_CHECKING:
    from chutes.chute.base import Chute

log = logging.getLogger("chutes.template")

ENGINE_HOST = "127.0.0.1"
REVISION_RE = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
TP_FLAGS = ("--tensor-parallel-size", "--tp", "--tp-size", "-tp")


# Compiler and kernel caches that engines fill on first use: kept beside the model, so they survive restarts.
CACHE_DIR_VARIABLES = (
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "FLASHINFER_WORKSPACE_BASE",
    "XFORMERS_CACHE_DIR",
    "DG_JIT_CACHE_DIR",
    "SGL_DG_CACHE_DIR",
    "SGLANG_DG_CACHE_DIR",
    "VLLM_CACHE_ROOT",
)
# GPU models whose multi-GPU servers have working peer-to-peer / InfiniBand paths.
_NCCL_CAPABLE = re.compile(r"h[12]0|b[23]00|5090|l40s|6000 ada|a100|h800|pro 6000|sxm", re.IGNORECASE)
_NCCL_LIMITS = ("NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "NCCL_NET_GDR_LEVEL")


def get_current_hf_commit(model_name: str) -> str | None:
    """The commit at the head of ``main`` of a Hugging Face model (what ``revision=`` should lock), or None."""
    try:
        hf_api = importlib.import_module("huggingface_hub").HfApi
    except ImportError as exc:
        raise ChuteError("get_current_hf_commit needs huggingface_hub", hint="pip install huggingface_hub") from exc
    for ref in hf_api().list_repo_refs(model_name).branches:
        if ref.ref == "refs/heads/main":
            return str(ref.target_commit)
    return None


def set_default_cache_dirs(download_path: str) -> None:
    """Point the engines' compiler caches (Triton, TorchInductor, vLLM...) into ``download_path`` unless set."""
    for key in CACHE_DIR_VARIABLES:
        if not os.environ.get(key):
            os.environ[key] = os.path.join(download_path, f"_{key.lower()}")


def set_nccl_flags(gpu_count: int, model_name: str) -> None:
    """On a multi-GPU instance of a model with fast interconnects, drop settings that disable NCCL's fast paths."""
    if gpu_count > 1 and _NCCL_CAPABLE.search(model_name):
        for key in _NCCL_LIMITS:
            os.environ.pop(key, None)


def require_revision(builder: str, model_name: str, revision: str | None) -> str:
    """The Hugging Face revision a model is locked to; a ChuteError when it is missing or malformed."""
    if not revision:
        raise ChuteError(
            f"{builder} needs revision=: the Hugging Face commit that {model_name!r} is locked to",
            hint=f"copy the latest commit id from https://huggingface.co/{model_name}/commits/main "
            "and pass revision='<commit>'",
        )
    if not REVISION_RE.fullmatch(revision):
        raise ChuteError(f"invalid revision {revision!r}: use a commit id, tag or branch name")
    return revision


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def parse_engine_args(builder: str, engine_args: str | Sequence[str] | None, forbidden: Sequence[str]) -> list[str]:
    """Split ``engine_args`` and refuse the flags the template sets itself (named in the error)."""
    if engine_args is None:
        return []
    if isinstance(engine_args, str):
        try:
            args = shlex.split(engine_args)
        except ValueError as exc:
            raise ChuteError(f"engine_args of {builder} cannot be parsed: {exc}") from exc
    else:
        args = [str(a) for a in engine_args]
    for flag in forbidden:
        if _has_flag(args, flag):
            top_level = {"--revision": "revision=", "--served-model-name": "the chute name"}.get(flag)
            raise ChuteError(
                f"engine_args of {builder} may not set {flag}: the template sets it",
                hint=f"use {top_level} instead" if top_level else "drop it from engine_args",
            )
    if sum(1 for flag in TP_FLAGS if _has_flag(args, flag)) > 1:
        raise ChuteError(
            f"engine_args of {builder} set the tensor-parallel size more than once",
            hint="use only --tensor-parallel-size, or leave it out and let gpu_count set it",
        )
    return args


def with_tensor_parallel(args: list[str], gpu_count: int, flag: str = "--tensor-parallel-size") -> list[str]:
    """``args`` plus the tensor-parallel size of the instance's GPUs, unless the user set one."""
    if any(_has_flag(args, f) for f in TP_FLAGS):
        return list(args)
    return [*args, flag, str(gpu_count)]


def visible_gpu_count(chute: Chute) -> int:
    """GPUs given to this instance (NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES), else the selector's count."""
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = os.environ.get(var, "").strip()
        if value and value not in ("all", "none", "void"):
            return len([v for v in value.split(",") if v.strip()])
    return chute.node_selector.gpu_count


async def download_model(model_name: str, revision: str | None, attempts: int = 5, pause_s: float = 60.0) -> str:
    """Download a Hugging Face snapshot into the local cache (retrying) and return its path."""
    snapshot_download = importlib.import_module("huggingface_hub").snapshot_download  # on the instance only

    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            path: str = await asyncio.to_thread(snapshot_download, repo_id=model_name, revision=revision)
            return path
        except Exception as exc:
            last = exc
            log.warning("downloading %s@%s failed (attempt %d/%d): %s", model_name, revision, attempt, attempts, exc)
            if attempt < attempts:
                await asyncio.sleep(pause_s)
    raise RuntimeError(f"could not download {model_name}@{revision} after {attempts} attempts: {last}")


def http_probe(url: str, headers: dict[str, str] | None = None) -> Callable[[], Awaitable[bool]]:
    """A readiness probe: True once ``url`` answers 200."""

    async def probe() -> bool:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(url, headers=headers)
                return response.status_code == 200
        except httpx.HTTPError:
            return False

    return probe


async def launch_engine(
    command: Sequence[str],
    ready: Callable[[], Awaitable[bool]],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 1.0,
) -> asyncio.subprocess.Process:
    """Start an engine process and wait until ``ready()``; RuntimeError if it exits or times out first."""
    log.info("launching engine: %s", shlex.join(command))
    process = await asyncio.create_subprocess_exec(*command, env=env, start_new_session=True)
    started = time.monotonic()
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"engine exited with status {process.returncode} before it was ready: {command[0]}")
        if await ready():
            log.info("engine ready after %.1f s", time.monotonic() - started)
            return process
        if time.monotonic() - started > timeout_s:
            await stop_engine(process)
            raise RuntimeError(f"engine was not ready after {timeout_s:g} s")
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(poll_s):
                await process.wait()


async def stop_engine(process: asyncio.subprocess.Process | None, grace_s: float = 15.0) -> None:
    """Terminate an engine (its whole process group), then kill it after ``grace_s``."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        async with asyncio.timeout(grace_s):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()


def _body(data: Any) -> Any:
    return data.model_dump(exclude_unset=True) if isinstance(data, BaseModel) else data


async def call_engine(chute: Chute, port: int, path: str, data: Any = None, method: str = "POST") -> Any:
    """Call the engine from Python (what a passthrough cord does over HTTP) and return its JSON answer."""
    url = f"http://{ENGINE_HOST}:{port}{path}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0, connect=5.0)) as client:
        response = await client.request(method, url, json=_body(data), headers=chute.passthrough_headers)
        response.raise_for_status()
        return response.json()


async def stream_engine(chute: Chute, port: int, path: str, data: Any) -> AsyncIterator[Any]:
    """Call a streaming engine endpoint from Python, yielding each server-sent event's JSON data."""
    url = f"http://{ENGINE_HOST}:{port}{path}"
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(1800.0, connect=5.0)) as client,
        client.stream("POST", url, json=_body(data), headers=chute.passthrough_headers) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            yield json.loads(payload)
