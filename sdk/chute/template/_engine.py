"""What the engine-server templates (vLLM, SGLang, embeddings, TEI) share: the argument checks at build time,
the startup hook that launches the engine on 127.0.0.1 (and the shutdown hook that stops it), and the keyword
arguments of a passthrough cord.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chutes.chute.base import Chute
from chutes.chute.template import helpers
from chutes.chute.template.openai import ModelList

# (chute, api key or None) -> the engine's command line, built inside the startup hook.
EngineCommand = Callable[[Chute, str | None], list[str]]


def check_engine_args(
    builder: str,
    model_name: str,
    revision: str | None,
    engine_args: str | Sequence[str] | None,
    forbidden: Sequence[str],
) -> tuple[str, list[str]]:
    """The locked revision and the parsed ``engine_args`` of an engine template; a ChuteError if either is bad."""
    locked = helpers.require_revision(builder, model_name, revision)
    return locked, helpers.parse_engine_args(builder, engine_args, forbidden)


def openai_server_command(
    module: str,
    model_flag: str,
    model_name: str,
    served_name: str,
    revision: str,
    api_key: str,
    port: int,
    args: Sequence[str],
    options: Sequence[str] = (),
) -> list[str]:
    """``python -m <module>``: an OpenAI-compatible engine server (vLLM, SGLang) on 127.0.0.1:``port`` serving
    ``model_name`` (given after ``model_flag``) at ``revision`` as ``served_name``, behind ``api_key``; ``options``
    stand before the host and port, the user's ``args`` last."""
    return [
        sys.executable,
        "-m",
        module,
        model_flag,
        model_name,
        "--served-model-name",
        served_name,
        "--revision",
        revision,
        "--api-key",
        api_key,
        *options,
        "--host",
        helpers.ENGINE_HOST,
        "--port",
        str(port),
        *args,
    ]


def serve_engine(
    chute: Chute,
    name: str,
    command: EngineCommand,
    port: int,
    probe_path: str,
    *,
    download: tuple[str, str] | None = None,
    api_key: bool = True,
    env: Mapping[str, str] | None = None,
) -> None:
    """Add hooks ``start_<name>``/``stop_<name>`` to ``chute`` that run the engine for its lifetime.

    With ``download`` (model, revision) the model is fetched first and the engine runs with ``HF_HUB_OFFLINE=1``;
    with ``api_key`` the engine gets a random key (only the chute can call it), which the passthrough cords send.
    """
    # The engine process, once started (kept here rather than on the chute, which users own).
    engine: dict[str, asyncio.subprocess.Process] = {}

    async def start(self: Chute) -> None:
        if download is not None:
            await helpers.download_model(*download)
        key = secrets.token_urlsafe(32) if api_key else None
        full_env = {**os.environ, **({"HF_HUB_OFFLINE": "1"} if download is not None else {}), **(env or {})}
        headers = {"Authorization": f"Bearer {key}"} if key else None
        probe = helpers.http_probe(f"http://{helpers.ENGINE_HOST}:{port}{probe_path}", headers)
        engine["process"] = await helpers.launch_engine(command(self, key), probe, env=full_env)
        if headers:
            self.passthrough_headers.update(headers)

    async def stop(self: Chute) -> None:
        await helpers.stop_engine(engine.pop("process", None))

    for hook, verb in ((start, "start"), (stop, "stop")):
        hook.__name__ = hook.__qualname__ = f"{verb}_{name}"
    chute.on_startup()(start)
    chute.on_shutdown()(stop)


def passthrough(port: int, path: str, **options: Any) -> dict[str, Any]:
    """The ``@chute.cord`` arguments of a cord that forwards its public ``path`` to the engine's ``path``."""
    return {"passthrough": True, "passthrough_port": port, "passthrough_path": path, "public_api_path": path, **options}


def add_models_cord(chute: Chute, port: int, **options: Any) -> Any:
    """Declare the ``GET /v1/models`` passthrough cord (``get_models``) on ``chute``."""

    @chute.cord(**passthrough(port, "/v1/models", **{**options, "public_api_method": "GET", "method": "GET"}))
    async def get_models(self: Chute) -> ModelList:
        result: ModelList = await helpers.call_engine(self, port, "/v1/models", method="GET")
        return result

    return get_models
