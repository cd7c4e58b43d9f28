"""``chutes secrets create|list|delete`` and the clients' secret methods against a real scheduler process.

The values the commands send are read back from the scheduler's store with its key (the API never returns
them): stdin loses its one trailing newline, a file is taken byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chutes.client import AsyncClient, ChutesAPIError
from chutes.scheduler.secret_box import SecretBox, sealed_context
from chutes.scheduler.store import Store
from chutes.scheduler.store import chute_secrets as secrets_repo
from tests.cli.conftest import Scheduler
from tests.cli.test_cli import run

pytestmark = pytest.mark.timeout(60)


async def stored(scheduler: Scheduler, chute_id: str, name: str) -> str:
    assert scheduler.data_dir is not None
    store = Store(f"sqlite+aiosqlite:///{scheduler.data_dir / 'scheduler.db'}")
    try:
        async with store.session() as s:
            row = next(r for r in await secrets_repo.for_chute(s, chute_id) if r.name == name)
    finally:
        await store.close()
    return SecretBox(scheduler.secrets_key).open(row.sealed, sealed_context(chute_id, name))


async def test_create_list_delete_from_the_command_line(scheduler: Scheduler, tmp_path: Path) -> None:
    env = {"CHUTES_SCHEDULER_URL": scheduler.url, "CHUTES_API_KEY": scheduler.new_user("carla")}
    created = run("secrets", "create", "HF_TOKEN", "--chute", "llm", "--json", env=env, stdin="hf_from_stdin\n")
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert answer["created"] is True and "hf_from_stdin" not in created.stdout
    assert await stored(scheduler, answer["chute_id"], "HF_TOKEN") == "hf_from_stdin"

    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    from_file = run("secrets", "create", "TLS_KEY", "-c", "llm", "--from-file", str(pem), env=env)
    assert from_file.returncode == 0 and "created" in from_file.stdout
    assert await stored(scheduler, answer["chute_id"], "TLS_KEY") == pem.read_text()
    replaced = run("secrets", "create", "HF_TOKEN", "-c", "llm", "--value", "hf_two", env=env)
    assert "replaced" in replaced.stdout and "not deployed yet" in replaced.stdout

    listed = run("secrets", "list", env=env)
    assert "HF_TOKEN" in listed.stdout and "TLS_KEY" in listed.stdout and "llm" in listed.stdout
    assert "hf_two" not in listed.stdout and "abc" not in listed.stdout

    both = run("secrets", "create", "X", "-c", "llm", "--value", "a", "--from-file", str(pem), env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    bad = run("secrets", "create", "../etc", "-c", "llm", "--value", "a", env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: invalid secret name") and "Hint:" in bad.stderr

    assert run("secrets", "delete", "TLS_KEY", "-c", "llm", env=env).returncode == 0
    again = run("secrets", "delete", "TLS_KEY", "-c", "llm", env=env)
    assert again.returncode == 1 and "has no secret TLS_KEY" in again.stderr
    assert [s["name"] for s in json.loads(run("secrets", "list", "--json", env=env).stdout)] == ["HF_TOKEN"]
    admin = run("secrets", "list", "--all", env={**env, "CHUTES_API_KEY": scheduler.admin_key})
    assert "carla" in admin.stdout and "USER" in admin.stdout


async def test_the_async_client(scheduler: Scheduler) -> None:
    async with AsyncClient(scheduler.url, scheduler.new_user("dario")) as client:
        made = await client.create_secret("API_KEY", "k1", chute="svc")
        assert made["created"] and made["chute_name"] == "svc"
        assert [s["name"] for s in await client.list_secrets("svc")] == ["API_KEY"]
        with pytest.raises(ChutesAPIError) as refused:
            await client.list_secrets(everyone=True)
        assert refused.value.status == 403
        await client.delete_secret("API_KEY", chute="svc")
        assert await client.list_secrets() == []
