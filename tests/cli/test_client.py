"""``chutes.client`` against a real scheduler process: identity, users, keys, errors; sync and async alike."""

from __future__ import annotations

import socket

import pytest

from chutes.client import AsyncClient, ChutesAPIError, ChutesConnectionError, Client, invocation_path
from tests.cli.conftest import Scheduler

pytestmark = pytest.mark.timeout(60)


def test_health_needs_no_key(scheduler: Scheduler) -> None:
    with Client(scheduler.url, "not-a-key") as client:
        assert client.health()["status"] == "ok"


def test_me_users_and_keys_round_trip(scheduler: Scheduler) -> None:
    with Client(scheduler.url, scheduler.admin_key) as admin:
        assert admin.me()["is_admin"] is True
        created = admin.create_user("client-alice")
    assert created["username"] == "client-alice" and created["api_key"].startswith("cnk_")

    with Client(scheduler.url, created["api_key"]) as alice:
        me = alice.me()
        assert (me["username"], me["is_admin"]) == ("client-alice", False)
        assert alice.username() == "client-alice"
        second = alice.create_key("laptop")
        listed = {k["key_id"]: k for k in alice.list_keys()}
        assert second["key_id"] in listed and listed[second["key_id"]]["name"] == "laptop"
        assert all("api_key" not in k for k in listed.values()), "a listing must never carry secrets"

        alice.delete_key(second["key_id"])
    with Client(scheduler.url, second["api_key"]) as revoked, pytest.raises(ChutesAPIError) as info:
        revoked.me()
    assert info.value.status == 401
    assert info.value.hint  # the scheduler's hint, or the client's default one


def test_domain_errors_carry_status_detail_and_hint(scheduler: Scheduler) -> None:
    key = scheduler.new_user("client-bob")
    with Client(scheduler.url, key) as bob:
        with pytest.raises(ChutesAPIError) as info:
            bob.get_chute("no-such-chute")
        assert info.value.status == 404
        assert info.value.detail and "HTTP 404" in str(info.value)
        with pytest.raises(ChutesAPIError) as info:
            bob.create_user("not-allowed")
        assert info.value.status == 403
        assert bob.list_chutes() == []


def test_unreachable_server_is_a_connection_error_with_a_hint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with Client(f"http://127.0.0.1:{port}", "k") as client, pytest.raises(ChutesConnectionError) as info:
            client.me()
    assert info.value.status == 0
    assert "chutes dev" in (info.value.hint or "")


async def test_async_twin_answers_the_same(scheduler: Scheduler) -> None:
    key = scheduler.new_user("client-carol")
    async with AsyncClient(scheduler.url, key) as carol:
        assert (await carol.me())["username"] == "client-carol"
        created = await carol.create_key("ci")
        assert created["key_id"] in {k["key_id"] for k in await carol.list_keys()}
        await carol.delete_key(created["key_id"])
        assert await carol.list_chutes() == []
        with pytest.raises(ChutesAPIError) as info:
            await carol.get_chute("missing")
        assert info.value.status == 404


def test_gateway_is_required_for_invocations(scheduler: Scheduler) -> None:
    with Client(scheduler.url, scheduler.admin_key) as client, pytest.raises(ChutesAPIError) as info:
        client.invoke("hello", "/hello", {}, username="demo")
    assert "gateway" in str(info.value)


def test_invocation_path_uses_the_slug() -> None:
    assert invocation_path("demo", "unsloth/Llama-3.2-1B", "/v1/chat") == "/demo/unsloth-llama-3-2-1b/v1/chat"
