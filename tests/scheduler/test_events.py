"""Deployment events: listed in order, streamed as SSE with ?follow=true, and the stream ends on delete."""

from __future__ import annotations

import asyncio
import json

import pytest

from chutes.identity import chute_id
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler

pytestmark = pytest.mark.timeout(60)


async def test_follow_streams_old_and_new_events_then_ends_on_delete(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    cid = chute_id("alice", "echo")
    async with api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, "alice")
        assert user is not None
        s.add(Chute(id=cid, owner_id=user.id, username="alice", name="echo", slug="echo",
                    manifest=manifest("alice", "echo"), version="0" * 64, invoke_secret="x"))  # fmt: skip
    hub = api.services.events
    await hub.record(cid, "accepted", "accepted version 000000000000", version="0" * 64)

    frames: list[dict[str, object]] = []
    async with api.client(key) as http, http.stream("GET", f"/v1/chutes/{cid}/events?follow=true") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.aiter_lines()

        async def next_event() -> dict[str, object]:
            kind = None
            async for line in lines:
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    assert data["type"] == kind
                    return dict(data)
            raise AssertionError("the stream ended")

        frames.append(await asyncio.wait_for(next_event(), 10))
        await hub.record(cid, "registered", "registered Nomad job", data={"jobs": [f"chute-{cid}"]})
        frames.append(await asyncio.wait_for(next_event(), 10))
        async with api.services.store.session() as s:
            await chutes_repo.purge(s, cid)
        rest = [line async for line in lines]  # the server ends the stream once the chute is gone
    assert [f["type"] for f in frames] == ["accepted", "registered"]
    assert frames[1]["data"] == {"jobs": [f"chute-{cid}"]} and frames[0]["id"] < frames[1]["id"]  # type: ignore[operator]
    assert not any(line.startswith("event: ") for line in rest)
    async with api.client(key) as http:
        assert (await http.get(f"/v1/chutes/{cid}/events")).status_code == 404
