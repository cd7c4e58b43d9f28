"""The helpers chute files import from ``chutes.chute.template.helpers`` (as in Chutes), against a real engine
stand-in: an OpenAI-style HTTP server on loopback that checks its API key like vLLM does."""

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from chutes.chute import ChuteError
from chutes.chute.template import helpers
from chutes.chute.template.helpers import (
    EngineCheckError,
    get_current_hf_commit,
    monitor_engine,
    set_default_cache_dirs,
    set_nccl_flags,
    validate_auth,
    warmup_model,
)
from tests.support.servers import loopback, uvicorn_thread

pytestmark = pytest.mark.timeout(60)
KEY = "engine-key"


@dataclass
class Engine:
    url: str
    port: int
    prompts: list[str] = field(default_factory=list)
    checks_auth: bool = True


@dataclass
class FakeChute:
    name: str = "tests/model"
    concurrency: int = 2


def engine_app(engine: Engine) -> FastAPI:
    app = FastAPI()

    def authorized(authorization: str | None) -> None:
        if engine.checks_auth and authorization != f"Bearer {KEY}":
            raise HTTPException(401, "unauthorized")

    @app.post("/v1/completions")
    async def completions(body: dict[str, Any], authorization: str | None = Header(None)) -> dict[str, Any]:
        authorized(authorization)
        engine.prompts.append(body["prompt"])
        return {"choices": [{"text": f"story {len(engine.prompts)}"}], "usage": {"completion_tokens": 3}}

    @app.get("/v1/models")
    async def models(authorization: str | None = Header(None)) -> dict[str, Any]:
        authorized(authorization)
        return {"object": "list", "data": [{"id": "tests/model"}]}

    return app


@contextlib.contextmanager
def running_engine(checks_auth: bool = True) -> Iterator[tuple[Engine, uvicorn.Server]]:
    engine = Engine(url="", port=0, checks_auth=checks_auth)
    server = loopback(engine_app(engine))
    with uvicorn_thread(server, "the engine stand-in") as port:
        engine.port, engine.url = port, f"http://127.0.0.1:{port}"
        yield engine, server


def test_warmup_model_prompts_at_the_chutes_concurrency_then_longer_contexts() -> None:
    with running_engine() as (engine, _):
        asyncio.run(warmup_model(FakeChute(concurrency=3), base_url=engine.url, api_key=KEY))
    assert len(engine.prompts) == 3 + 3 * 3 + 1
    assert engine.prompts[3].startswith("Summarize the following stories") and "story 1" in engine.prompts[3]


def test_validate_auth_needs_an_engine_that_refuses_missing_and_wrong_keys() -> None:
    with running_engine() as (engine, _):
        asyncio.run(validate_auth(FakeChute(), base_url=engine.url, api_key=KEY))
        with pytest.raises(EngineCheckError, match="the engine answered HTTP 401"):
            asyncio.run(validate_auth(FakeChute(), base_url=engine.url, api_key="wrong"))
    with (
        running_engine(checks_auth=False) as (open_engine, _),
        pytest.raises(EngineCheckError, match="expected HTTP 401 from the engine, got 200"),
    ):
        asyncio.run(validate_auth(FakeChute(), base_url=open_engine.url, api_key=KEY))


def test_monitor_engine_raises_when_the_process_exits() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        with pytest.raises(EngineCheckError, match="process exited with status 0"):
            asyncio.run(asyncio.wait_for(monitor_engine(process, KEY, asyncio.Event(), check_interval=0.05), 10))
    finally:
        process.kill()
        process.wait()


def test_monitor_engine_raises_after_failed_checks_once_ready() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    async def watch(port: int, stop_engine: Any) -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(monitor_engine(sleeper, KEY, ready, port=port, check_interval=0.05, timeout=1))
        await asyncio.sleep(0.2)
        assert not task.done()  # not ready yet: nothing is checked
        ready.set()
        await asyncio.sleep(0.3)
        assert not task.done()  # the engine answers
        stop_engine()
        with pytest.raises(EngineCheckError, match="stopped answering \\(3 failed checks in a row\\)"):
            await asyncio.wait_for(task, 10)

    try:
        with running_engine() as (engine, server):

            def stop_engine() -> None:
                server.should_exit = True

            asyncio.run(watch(engine.port, stop_engine))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cache_dirs_and_nccl_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_CACHE_DIR", "/keep")
    for key in helpers.CACHE_DIR_VARIABLES[1:]:
        monkeypatch.delenv(key, raising=False)
    set_default_cache_dirs("/models/x")
    import os

    assert os.environ["TRITON_CACHE_DIR"] == "/keep"
    assert os.environ["VLLM_CACHE_ROOT"] == "/models/x/_vllm_cache_root"
    for key in ("NCCL_P2P_DISABLE", "NCCL_IB_DISABLE"):
        monkeypatch.setenv(key, "1")
    set_nccl_flags(1, "NVIDIA H100 80GB HBM3")
    assert os.environ["NCCL_P2P_DISABLE"] == "1"  # one GPU: nothing to change
    set_nccl_flags(2, "NVIDIA GeForce RTX 4090")
    assert os.environ["NCCL_P2P_DISABLE"] == "1"  # no fast interconnect
    set_nccl_flags(2, "NVIDIA H100 80GB HBM3")
    assert "NCCL_P2P_DISABLE" not in os.environ and "NCCL_IB_DISABLE" not in os.environ


def test_get_current_hf_commit_names_what_it_needs() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        with pytest.raises(ChuteError) as info:
            get_current_hf_commit("org/model")
        assert info.value.hint == "pip install huggingface_hub"
    else:
        pytest.skip("huggingface_hub is installed and this machine has no internet access")
