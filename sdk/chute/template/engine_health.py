"""Checking an OpenAI-compatible engine from a startup hook: warm it up, prove it wants its key, watch it.

These are the helpers chute files import from ``chutes.chute.template.helpers`` in Chutes (``warmup_model``,
``validate_auth``, ``monitor_engine``, ``prompt_one``), with the same arguments; they talk to the engine with
httpx. Each raises (``EngineCheckError``) when the engine does not behave, which fails the startup hook and so
keeps a broken instance out of rotation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any, Protocol

import httpx

log = logging.getLogger("chutes.template")

DEFAULT_BASE_URL = "http://127.0.0.1:10101"
_TOPICS = ("apples", "bananas", "grapes", "raspberries", "dogs", "cats", "goats", "zebras")


class EngineCheckError(RuntimeError):
    """The engine answered wrongly (or not at all) to a startup check."""


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def concurrency(self) -> int: ...


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def prompt_one(
    model_name: str,
    base_url: str = DEFAULT_BASE_URL,
    prompt: str | None = None,
    api_key: str | None = None,
    require_status: int | None = None,
    max_tokens: int = 1000,
) -> Any:
    """One ``POST /v1/completions``. With ``require_status``: check the status and return the JSON answer;
    otherwise return the completion's text (None for a 400, which a too-long prompt earns)."""
    prompt = prompt or f"Tell a long, detailed story about {random.choice(_TOPICS)}"
    body = {"model": model_name, "prompt": prompt, "max_tokens": max_tokens}
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0)) as client:
        response = await client.post(f"{base_url}/v1/completions", json=body, headers=_headers(api_key))
    if require_status is not None:
        if response.status_code != require_status:
            raise EngineCheckError(f"expected HTTP {require_status} from the engine, got {response.status_code}")
        return response.json() if response.content else None
    if response.status_code == 400:
        return None
    if response.status_code != 200:
        raise EngineCheckError(f"the engine answered HTTP {response.status_code}: {response.text[:300]}")
    result = response.json()
    tokens = (result.get("usage") or {}).get("completion_tokens")
    if isinstance(tokens, int):
        log.info("generated %d tokens in %.2f s", tokens, time.monotonic() - started)
    return result["choices"][0]["text"]


async def validate_auth(chute: _Named, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None) -> None:
    """The engine answers with its key and refuses (401) without it and with a wrong one."""
    if not api_key or api_key == "None":
        await prompt_one(chute.name, base_url=base_url)
        return
    await prompt_one(chute.name, base_url=base_url, api_key=api_key)
    await prompt_one(chute.name, base_url=base_url, require_status=401)
    await prompt_one(chute.name, base_url=base_url, api_key=str(uuid.uuid4()), require_status=401)


async def warmup_model(chute: _Named, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None) -> None:
    """Prompts at the chute's concurrency, then with longer and longer contexts, then one more."""
    log.info("warming up %s at concurrency %d", chute.name, chute.concurrency)
    answers = await asyncio.gather(
        *(prompt_one(chute.name, base_url=base_url, api_key=api_key) for _ in range(chute.concurrency))
    )
    if not all(isinstance(a, str) for a in answers):
        raise EngineCheckError("the engine refused a warm-up prompt")
    stories = "\n\n".join(answers) + "\n\n"
    for multiplier in range(1, 4):
        prompt = "Summarize the following stories:\n\n" + stories * multiplier + "\nThe summary is:"
        longer = await asyncio.gather(
            *(
                prompt_one(chute.name, base_url=base_url, prompt=prompt, api_key=api_key)
                for _ in range(chute.concurrency)
            )
        )
        if not all(isinstance(a, str) for a in longer):
            log.warning("the engine refused a context %d× the stories long: warm-up stops there", multiplier)
            break
    if await prompt_one(chute.name, base_url=base_url, api_key=api_key) is None:
        raise EngineCheckError("the engine stopped answering after the long-context warm-up")


def _exit_code(process: Any) -> int | None:
    """The exit status of a ``subprocess.Popen`` or an ``asyncio.subprocess.Process``; None while it runs."""
    poll = getattr(process, "poll", None)
    code = poll() if callable(poll) else getattr(process, "returncode", None)
    return code if isinstance(code, int) else None


async def monitor_engine(
    process: Any,
    api_key: str | None,
    ready_event: asyncio.Event,
    port: int = 10101,
    check_interval: float = 5,
    timeout: float = 3.0,  # noqa: ASYNC109 - the per-check HTTP timeout, named as in Chutes
    failure_threshold: int = 3,
    model_name: str = "Engine",
) -> None:
    """Watch the engine until it fails: raise when its process exits, or (once ``ready_event`` is set) when
    ``GET /v1/models`` fails ``failure_threshold`` times in a row. Run it as a task from a startup hook."""
    failures = 0
    url = f"http://127.0.0.1:{port}/v1/models"
    async with httpx.AsyncClient(timeout=timeout) as client:
        while True:
            code = _exit_code(process)
            if code is not None:
                raise EngineCheckError(f"{model_name} process exited with status {code}")
            if ready_event.is_set():
                try:
                    response = await client.get(url, headers=_headers(api_key))
                    failures = 0 if response.status_code == 200 else failures + 1
                except httpx.HTTPError:
                    failures += 1
                if failures >= failure_threshold:
                    raise EngineCheckError(f"{model_name} stopped answering ({failures} failed checks in a row)")
            await asyncio.sleep(check_interval)
