"""The Python client against the whole stack that ``chutes dev`` runs (``chutes.dev.DevStack``, in process):
the async client deploys, follows the events, calls both cords, reads logs, deletes; a data directory keeps
users, keys and chutes across a restart of the stack.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chutes.client import AsyncClient, ChutesAPIError, Client
from chutes.dev import DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
HELLO = str(ROOT / "examples" / "hello.py") + ":chute"


async def test_async_client_on_the_dev_stack_and_state_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with DevStack(data_dir=data, use_local_gpus=False, echo=lambda _: None) as stack:
        info = stack.start()
        async with AsyncClient(info.api_url, info.api_key, gateway_url=info.gateway_url) as client:
            assert (await client.me())["username"] == "demo"
            nodes = {n["node_id"]: n for n in await client.nodes()}
            assert set(nodes) == {"gpu-a", "gpu-b"} and all(n["alive"] for n in nodes.values())

            chute = await client.deploy(HELLO)
            assert chute["name"] == "hello" and chute["placement"]["node_id"] == "gpu-a"  # L4: the cheapest fit
            kinds = []
            async for event in client.events("hello", follow=True):
                kinds.append(event["type"])
                if event["type"] in ("ready", "failed", "unschedulable"):
                    break
            assert kinds[0] == "accepted" and kinds[-1] == "ready", kinds

            answer = await client.invoke("hello", "/hello", {"name": "Ada"})
            assert answer.status == 200 and answer.json()["greeting"] == "Hello, Ada!"
            assert answer.invocation_id
            frames = [frame async for frame in client.invoke_stream("hello", "/count", {"to": 3, "delay": 0})]
            assert [json.loads(frame) for frame in frames] == [{"n": 1}, {"n": 2}, {"n": 3}]
            with pytest.raises(ChutesAPIError) as info_404:
                await client.invoke("hello", "/nope", {})
            assert info_404.value.status == 404

            instances = await client.instances("hello")
            assert [i["node_id"] for i in instances if i["healthy"]] == ["gpu-a"]
            lines = [line async for line in client.logs("hello", stream="stderr")]
            assert any("ready" in line.line for line in lines), [line.line for line in lines][-10:]

            await client.deploy(str(ROOT / "examples" / "job.py") + ":chute")  # a second chute, kept for later
        user_key = info.api_key

    # Same data directory: the same user and key, the chutes still known.
    with DevStack(data_dir=data, use_local_gpus=False, echo=lambda _: None) as stack:
        info = stack.start()
        assert info.api_key == user_key
        with Client(info.api_url, info.api_key) as client:
            assert {c["name"] for c in client.list_chutes()} == {"hello", "primes"}
            client.delete_chute("hello")
            with pytest.raises(ChutesAPIError) as gone:
                client.get_chute("hello")
            assert gone.value.status == 404
