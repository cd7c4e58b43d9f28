"""The dashboard's server side on a real scheduler (uvicorn on a loopback port): sign-in and the sealed session
cookie, CSRF on every cookie-authenticated write, security headers, the page's files, ownership on the
dashboard's own routes, and the "try a cord" call forwarded to a gateway (a recording stand-in on a port).
Browser tests of the page itself are in tests/e2e/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from chutes.identity import chute_id, slugify
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.ui.middleware import CSP
from tests.scheduler.helpers import manifest
from tests.scheduler.server import RunningScheduler, make_config, serve

pytestmark = pytest.mark.timeout(60)

COOKIE = "chutes_session"


async def sign_in(api: RunningScheduler, key: str, **headers: str) -> tuple[httpx.Response, dict[str, Any]]:
    async with api.client() as http:
        resp = await http.post("/ui/api/session", json={"api_key": key}, headers=headers)
    return resp, (resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {})


def browser(api: RunningScheduler, cookie: str, **headers: str) -> httpx.AsyncClient:
    """A client that, like the page, sends only the session cookie (no Authorization header)."""
    return httpx.AsyncClient(base_url=api.url, cookies={COOKIE: cookie}, headers=headers, timeout=30)


async def add_chute(api: RunningScheduler, owner: str, name: str, **overrides: Any) -> Chute:
    async with api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, owner)
        assert user is not None
        chute = Chute(
            id=chute_id(owner, name), owner_id=user.id, username=owner, name=name, slug=slugify(name),
            manifest=manifest(owner, name, **overrides), version="0" * 64, public=False, invoke_secret="s",
            desired_instances=0, status="ready",
        )  # fmt: skip
        s.add(chute)
    return chute


async def test_sign_in_sets_a_sealed_httponly_strict_session_cookie(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    resp, body = await sign_in(api, alice)
    assert resp.status_code == 200, resp.text
    header = resp.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert "Max-Age" not in header and "Expires" not in header  # gone when the browser session ends
    assert resp.headers["cache-control"] == "no-store"
    cookie = resp.cookies[COOKIE]
    assert alice not in cookie and alice[4:] not in cookie  # the key is sealed, not readable
    assert body["username"] == "alice" and body["is_admin"] is False and body["csrf_token"]
    # The scheduler serves /v1/secrets: the dashboard shows its Secrets page (names only, through the cookie).
    assert body["features"] == {"gateway": False, "images": True, "secrets": True}
    async with browser(api, cookie) as http:
        assert (await http.get("/v1/me")).json()["username"] == "alice"
        assert (await http.get("/v1/secrets")).json() == []
        again = (await http.get("/ui/api/session")).json()
        assert again["csrf_token"] == body["csrf_token"] and again["expires_at"] == body["expires_at"]


async def test_wrong_keys_get_clear_messages(api: RunningScheduler) -> None:
    resp, body = await sign_in(api, "hunter2")
    assert resp.status_code == 401 and "not an API key" in body["detail"] and body["hint"]
    resp, body = await sign_in(api, "cnk_" + "x" * 43)
    assert resp.status_code == 401 and "unknown or has been revoked" in body["detail"]
    assert "set-cookie" not in resp.headers
    async with api.client(api.admin_key) as http:
        gateway_key = (await http.post("/v1/keys", json={"name": "gw", "role": "gateway"})).json()["api_key"]
    resp, body = await sign_in(api, gateway_key)
    assert resp.status_code == 403 and "gateway key" in body["detail"]
    alice = await api.new_user("alice")
    resp, body = await sign_in(api, alice, origin="https://evil.example")
    assert resp.status_code == 403 and "another site" in body["detail"]


async def test_cookie_writes_need_the_csrf_token_and_the_same_origin(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    resp, body = await sign_in(api, alice)
    cookie, csrf = resp.cookies[COOKIE], body["csrf_token"]
    async with browser(api, cookie) as http:
        missing = await http.post("/v1/keys", json={"name": "x"})
        assert missing.status_code == 403 and missing.json()["detail"] == "missing or wrong CSRF token"
        wrong = await http.post("/v1/keys", json={"name": "x"}, headers={"X-Chutes-CSRF": csrf[:-2] + "AA"})
        assert wrong.status_code == 403
        other_site = await http.post(
            "/v1/keys", json={"name": "x"}, headers={"X-Chutes-CSRF": csrf, "Origin": "https://evil.example"}
        )
        assert other_site.status_code == 403 and "another site" in other_site.json()["detail"]
        ok = await http.post("/v1/keys", json={"name": "x"}, headers={"X-Chutes-CSRF": csrf, "Origin": api.url})
        assert ok.status_code == 201, ok.text
        assert (await http.delete("/v1/keys/nope")).status_code == 403  # DELETE is a write too
        assert ok.headers["x-content-type-options"] == "nosniff"
    # Another session's token does not fit this cookie.
    _, body2 = await sign_in(api, alice)
    async with browser(api, cookie, **{"X-Chutes-CSRF": body2["csrf_token"]}) as http:
        assert (await http.post("/v1/keys", json={"name": "y"})).status_code == 403


async def test_the_cookie_is_refused_where_it_does_not_belong_and_when_forged(api: RunningScheduler) -> None:
    resp, body = await sign_in(api, api.admin_key)
    cookie, csrf = resp.cookies[COOKIE], body["csrf_token"]
    async with browser(api, cookie, **{"X-Chutes-CSRF": csrf}) as http:
        # Gateway and instance endpoints take explicit keys only, even from an admin's session.
        internal = await http.post("/v1/internal/authenticate", json={"api_key": api.admin_key})
        assert internal.status_code == 401
        assert (await http.get("/v1/instances/bundle")).status_code == 401
    forged = cookie[:-6] + ("A" if cookie[-6] != "A" else "B") + cookie[-5:]
    async with browser(api, forged) as http:
        refused = await http.get("/v1/me")
        assert refused.status_code == 401 and "session has expired or is not valid" in refused.json()["detail"]
        assert "Max-Age=0" in refused.headers["set-cookie"]
    async with browser(api, "not-a-token") as http:
        assert (await http.get("/ui/api/session")).status_code == 401
    # An Authorization header wins over the cookie (API clients are unaffected by a stray cookie).
    alice = await api.new_user("alice")
    async with browser(api, "garbage", Authorization=f"Bearer {alice}") as http:
        assert (await http.get("/v1/me")).json()["username"] == "alice"


async def test_revoking_the_key_ends_its_sessions_and_sign_out_clears_the_cookie(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        created = (await http.post("/v1/keys", json={"name": "laptop"})).json()
    resp, body = await sign_in(api, created["api_key"])
    cookie = resp.cookies[COOKIE]
    async with browser(api, cookie) as http:
        assert (await http.get("/v1/me")).status_code == 200
    async with api.client(alice) as http:
        assert (await http.delete(f"/v1/keys/{created['key_id']}")).status_code == 204
    async with browser(api, cookie) as http:
        assert (await http.get("/v1/me")).status_code == 401
    resp, body = await sign_in(api, alice)
    async with browser(api, resp.cookies[COOKIE], **{"X-Chutes-CSRF": body["csrf_token"]}) as http:
        out = await http.delete("/ui/api/session")
        assert out.status_code == 204 and re.search(r"chutes_session=;.*Max-Age=0", out.headers["set-cookie"])


async def test_a_session_lasts_the_configured_time(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, ui_session_ttl_s=60)) as api:
        resp, body = await sign_in(api, api.admin_key)
        cookie = resp.cookies[COOKIE]
        keyring = api.services.extras["ui_keyring"]
        opened = keyring.open(cookie)
        assert opened is not None and opened[0] == api.admin_key
        assert body["expires_at"] == opened[1]
        issued = opened[1] - 60
        assert keyring.open(cookie, now=issued + 59) is not None
        assert keyring.open(cookie, now=issued + 61) is None


async def test_pages_and_files_carry_a_strict_policy_and_stay_small(api: RunningScheduler) -> None:
    async with api.client() as http:
        redirect = await http.get("/ui")
        assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
        page = await http.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert csp == CSP and "'unsafe-inline'" not in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text and " on" not in re.sub(r"<(script|link|img)[^>]*>", "", page.text)
        refs = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
        assert {"static/app.js", "static/app.css", "static/icon.svg"} <= set(refs)
        total = len(page.content)
        for ref in set(refs):
            asset = await http.get(f"/ui/{ref}", headers={"Accept-Encoding": "identity"})
            assert asset.status_code == 200, ref
            total += len(asset.content)
            zipped = await http.get(f"/ui/{ref}", headers={"Accept-Encoding": "gzip"})
            assert zipped.headers.get("content-encoding") == "gzip" or ref.endswith(".svg")
            again = await http.get(f"/ui/{ref}", headers={"If-None-Match": asset.headers["etag"]})
            assert again.status_code == 304
        assert total < 200 * 1024, total  # the first page, uncompressed
        js = (await http.get("/ui/static/app.js")).text
        assert "innerHTML" not in js and "eval(" not in js and "document.write" not in js
        assert (await http.get("/ui/static/..%2Fsession.py")).status_code == 404
        assert (await http.get("/ui/static/nope.js")).status_code == 404


async def test_dashboard_routes_check_who_may_see_what(api: RunningScheduler) -> None:
    alice = await api.new_user("alice")
    bob = await api.new_user("bob")
    chute = await add_chute(api, "alice", "private-model", readme="<script>alert(1)</script>")
    async with api.client() as http:
        for method, path in [("GET", "/ui/api/session"), ("GET", "/ui/api/chutes"), ("GET", "/ui/api/nodes"),
                             ("GET", "/ui/api/usage/running"), ("GET", "/ui/api/usage/models"),
                             ("GET", f"/ui/api/chute?ref={chute.id}"), ("POST", "/ui/api/try")]:  # fmt: skip
            assert (await http.request(method, path)).status_code == 401, path
    async with api.client(alice) as http:
        rows = (await http.get("/ui/api/chutes")).json()
        assert [(r["name"], r["owned"], r["instances"]["live"]) for r in rows] == [("private-model", True, 0)]
        detail = (await http.get(f"/ui/api/chute?ref={chute.id}")).json()
        assert detail["readme"] == "<script>alert(1)</script>"  # data, escaped by the page
        assert detail["cord_forms"][0]["name"] == "echo" and detail["invoke_url"] is None
        assert (await http.get("/ui/api/usage/running?everyone=true")).status_code == 403
        tried = await http.post("/ui/api/try", json={"chute": chute.id, "cord": "echo", "input": {}})
        assert tried.status_code == 503 and "gateway" in tried.json()["detail"]  # no gateway configured here
    async with api.client(bob) as http:
        assert (await http.get("/ui/api/chutes")).json() == []
        assert (await http.get(f"/ui/api/chute?ref={chute.id}")).status_code == 404
        assert (await http.get(f"/ui/api/nodes?chute={chute.id}")).status_code in (404, 503)
        tried = await http.post("/ui/api/try", json={"chute": chute.id, "cord": "echo", "input": {}})
        assert tried.status_code == 404  # bob may not see it: that comes before anything else
    async with api.client(api.admin_key) as http:
        assert [r["name"] for r in (await http.get("/ui/api/chutes?all=true")).json()] == ["private-model"]
        assert (await http.get(f"/ui/api/chute?ref={chute.id}")).json()["owned"] is True


# -- "try a cord" through a gateway -----------------------------------------------------------------------


@asynccontextmanager
async def recording_gateway() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for the gateway on a loopback port: records each call, streams three SSE frames back."""
    seen: list[dict[str, Any]] = []

    async def call(request: Request) -> StreamingResponse:
        seen.append({"method": request.method, "path": request.url.path, "query": request.url.query,
                     "auth": request.headers.get("authorization"), "body": await request.body()})  # fmt: skip

        async def frames() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f'data: {{"i": {i}}}\n\n'.encode()
                await asyncio.sleep(0.05)

        headers = {"X-Chutes-Invocation-Id": "inv-1", "Set-Cookie": "stolen=1"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    app = Starlette(routes=[Route("/{path:path}", call, methods=["GET", "POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_try_forwards_the_sessions_key_to_the_cords_gateway_address_and_streams_back(tmp_path: Path) -> None:
    cords = [
        {"name": "echo", "path": "/echo", "public_api_path": "/v1/echo"},
        {"name": "get_it", "path": "/get_it", "public_api_path": "/get", "public_api_method": "GET"},
    ]
    async with recording_gateway() as (gateway_url, seen), serve(make_config(tmp_path, gateway_url=gateway_url)) as api:
        alice = await api.new_user("alice")
        bob = await api.new_user("bob")
        chute = await add_chute(api, "alice", "my.model", cords=cords)
        resp, body = await sign_in(api, alice)
        assert body["features"]["gateway"] is True
        async with browser(api, resp.cookies[COOKIE], **{"X-Chutes-CSRF": body["csrf_token"]}) as http:
            async with http.stream(
                "POST", "/ui/api/try", json={"chute": chute.id, "cord": "echo", "input": {"text": "hi"}}
            ) as answer:
                assert answer.status_code == 200
                frames = [line async for line in answer.aiter_lines() if line.startswith("data:")]
            assert frames == ['data: {"i": 0}', 'data: {"i": 1}', 'data: {"i": 2}']
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert answer.headers["x-chutes-invocation-id"] == "inv-1" and "set-cookie" not in answer.headers
            assert answer.headers["content-security-policy"].startswith("sandbox")
            got = await http.post("/ui/api/try", json={"chute": chute.id, "cord": "get_it", "input": {"n": 2}})
            assert got.status_code == 200
            missing = await http.post("/ui/api/try", json={"chute": chute.id, "cord": "nope", "input": {}})
            assert missing.status_code == 404 and "no cord 'nope'" in missing.json()["detail"]
            no_csrf = await http.post(
                "/ui/api/try", json={"chute": chute.id, "cord": "echo"}, headers={"X-Chutes-CSRF": ""}
            )
            assert no_csrf.status_code == 403
        assert seen[0] == {"method": "POST", "path": "/alice/my-model/v1/echo", "query": "",
                           "auth": f"Bearer {alice}", "body": b'{"text":"hi"}'}  # fmt: skip
        assert seen[1]["method"] == "GET" and seen[1]["path"] == "/alice/my-model/get" and seen[1]["query"] == "n=2"
        bob_resp, bob_body = await sign_in(api, bob)
        async with browser(api, bob_resp.cookies[COOKIE], **{"X-Chutes-CSRF": bob_body["csrf_token"]}) as http:
            hidden = await http.post("/ui/api/try", json={"chute": chute.id, "cord": "echo", "input": {}})
            assert hidden.status_code == 404
        assert len(seen) == 2  # nothing reached the gateway for bob
