"""The data plane under hostile callers: the gateway's authorisation matrix and direct calls to an instance.

One stack (devcluster, agent, scheduler, gateway with a 1 MB body limit) and alice's private chute ``vault``
(one instance, deployed by the scheduler as Nomad would run it: with its invoke secret, never ``--dev``),
shared with carol.

- Gateway: every address form (path, wildcard host) and its own endpoints, called by anonymous, a wrong key,
  another user, the owner, a user it is shared with, an admin, a gateway key and an instance token; runtime
  paths (``/_ready``, ``/_metrics``) are not reachable through it; a caller's own signature header is
  replaced; oversized and malformed bodies are 413 / 422 JSON.
- Instance, called directly at its Consul address (as anyone on the node's network could): refuses a
  missing, a wrong, a stale, a replayed signature and one made for another path or body; health needs none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from chutes.core.signing import SIGNATURE_HEADER, sign
from tests.resilience.stack import FullStack, full_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

VAULT = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="vault", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/echo")
async def echo(self, text: str = "hi") -> dict:
    return {"text": text}
"""


@dataclass
class World:
    fs: FullStack
    keys: dict[str, str | None]
    instance_url: str
    secret: str
    instance_token: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("sec-gw")
    with full_stack(tmp, ("gpu-a=l40s:2",), gateway_args=("--max-body-mb", "1")) as fs:
        keys: dict[str, str | None] = {"anonymous": None, "wrong key": "cnk_" + "x" * 43, "admin": fs.admin_key}
        for who, name in (("owner", "alice"), ("other", "bob"), ("shared", "carol")):
            keys[who] = fs.new_user(name)
        with fs.client(fs.admin_key) as admin:
            keys["gateway key"] = str(admin.create_key("gw2", role="gateway")["api_key"])
        assert keys["owner"] is not None and keys["gateway key"] is not None
        cid = fs.deploy(keys["owner"], VAULT, "vault_chute")
        with fs.client(keys["owner"]) as client:
            client.share_chute("vault", "carol")
        service = fs.wait_passing(cid, 1, 120)[0]["Service"]
        route = httpx.get(
            f"{fs.sched.url}/v1/internal/routes/alice/vault", headers={"Authorization": f"Bearer {keys['gateway key']}"}
        ).json()
        # The instance's credentials are in its job's Nomad Variable (never in the job).
        version = fs.dc.nomad().job.get_job(f"chute-{cid}")["Meta"]["chute_version"]
        items = fs.dc.nomad().variable.get_variable(f"nomad/jobs/chute-{cid}")["Items"]
        keys["instance token"] = items[f"CHUTES_INSTANCE_TOKEN_{version}"]
        assert items["CHUTES_INVOKE_SECRET"] == route["invoke_secret"]
        url = f"http://{service['Address']}:{service['Port']}"
        yield World(fs, keys, url, route["invoke_secret"], items[f"CHUTES_INSTANCE_TOKEN_{version}"])


CALLERS = ("anonymous", "wrong key", "other", "owner", "shared", "admin", "gateway key", "instance token")
# A private chute: its owner and the users it is shared with; nobody else learns it exists (404), admins
# included (they manage chutes through the API, they do not call other users' private ones).
CHUTE_CALL = {"anonymous": 401, "wrong key": 401, "other": 404, "owner": 200, "shared": 200, "admin": 404,
              "gateway key": 404, "instance token": 401}  # fmt: skip
OWN = dict.fromkeys(CALLERS, 200)


def _call(world: World, who: str, path: str, *, host: str | None = None, body: object = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.keys[who]}"} if world.keys[who] else {}
    if host:
        headers["Host"] = host
    url = world.fs.gateway_url + path
    if body is None:
        return httpx.get(url, headers=headers, timeout=30)
    return httpx.post(url, json=body, headers=headers, timeout=30)


def test_gateway_authorisation_matrix(world: World) -> None:
    cases = [
        ("POST /alice/vault/echo", lambda who, n: _call(world, who, "/alice/vault/echo", body={"text": f"p{n}"}),
         CHUTE_CALL),
        ("POST alice-vault.chutes.test/echo", lambda who, n: _call(world, who, "/echo", host="alice-vault.chutes.test",
                                                                    body={"text": f"h{n}"}), CHUTE_CALL),
        ("GET /healthz", lambda who, n: _call(world, who, "/healthz"), OWN),
        ("GET /metrics", lambda who, n: _call(world, who, "/metrics"), OWN),
        ("GET /nowhere", lambda who, n: _call(world, who, "/nowhere"), dict.fromkeys(CALLERS, 404)),
    ]  # fmt: skip
    wrong = []
    for n, (what, call, expected) in enumerate(cases):
        for who in CALLERS:
            resp = call(who, n)
            if resp.status_code != expected[who]:
                wrong.append(f"{what} as {who}: {resp.status_code} (expected {expected[who]}) {resp.text[:120]}")
            elif resp.status_code >= 400 and not resp.json().get("detail"):
                wrong.append(f"{what} as {who}: error without a JSON detail")
            elif resp.status_code == 401 and resp.headers.get("www-authenticate") != "Bearer":
                wrong.append(f"{what} as {who}: 401 without WWW-Authenticate")
            elif what.startswith("POST") and resp.status_code == 200:
                assert resp.json()["text"].endswith(str(n))
    assert not wrong, "\n".join(wrong)


def test_runtime_paths_are_not_reachable_through_the_gateway(world: World) -> None:
    for path in ("/alice/vault/_ready", "/alice/vault/_metrics", "/alice/vault/_alive", "/alice/vault/echo/../_metrics",
                 "/alice/vault/%2e%2e/_metrics", "/alice/../bob/vault/echo"):  # fmt: skip
        for method in ("GET", "POST"):
            resp = httpx.request(method, world.fs.gateway_url + path, json={},
                                 headers={"Authorization": f"Bearer {world.keys['owner']}"})  # fmt: skip
            assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
            assert resp.json()["detail"]


def test_a_callers_own_signature_header_is_replaced(world: World) -> None:
    forged = sign("not-the-secret", "POST", "/echo", b"{}")
    headers = {"Authorization": f"Bearer {world.keys['owner']}", SIGNATURE_HEADER: forged}
    resp = httpx.post(world.fs.gateway_url + "/alice/vault/echo", json={"text": "f"}, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"text": "f"}


def test_oversized_and_malformed_bodies_through_the_gateway(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.keys['owner']}", "content-type": "application/json"}
    url = world.fs.gateway_url + "/alice/vault/echo"
    big = json.dumps({"text": "x" * (2 * 2**20)}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    for what, content in (("declared", big), ("chunked", chunks())):
        resp = httpx.post(url, content=content, headers=headers, timeout=30)
        assert resp.status_code == 413 and resp.json()["detail"], (what, resp.status_code, resp.text[:200])
    malformed = [("not JSON", b"{nope"), ("wrong type", b'{"text": 5}'), ("a list", b"[1]"),
                 ("invalid UTF-8", b'{"text": "\xff"}'), ("nested", b"[" * 50_000 + b"]" * 50_000)]  # fmt: skip
    for what, content in malformed:
        resp = httpx.post(url, content=content, headers=headers, timeout=30)
        assert resp.status_code in (400, 422), (what, resp.status_code, resp.text[:200])
        assert resp.headers["content-type"].startswith("application/json") and resp.json()["detail"], what


def _direct(world: World, header: str | None, body: bytes, path: str = "/echo") -> httpx.Response:
    headers = {"content-type": "application/json"}
    if header is not None:
        headers[SIGNATURE_HEADER] = header
    return httpx.post(world.instance_url + path, content=body, headers=headers, timeout=30)


def test_direct_calls_to_an_instance_need_a_fresh_signature_of_that_exact_request(world: World) -> None:
    body = json.dumps({"text": "direct"}).encode()
    assert _direct(world, None, body).status_code == 401
    user_key = httpx.post(world.instance_url + "/echo", content=body,
                          headers={"Authorization": f"Bearer {world.keys['owner']}"})  # fmt: skip
    assert user_key.status_code == 401  # API keys mean nothing to an instance
    checks = {
        "wrong secret": sign("not-the-secret", "POST", "/echo", body),
        "stale": sign(world.secret, "POST", "/echo", body, timestamp=int(time.time()) - 120),
        "future": sign(world.secret, "POST", "/echo", body, timestamp=int(time.time()) + 120),
        "other path": sign(world.secret, "POST", "/other", body),
        "other method": sign(world.secret, "GET", "/echo", body),
        "other body": sign(world.secret, "POST", "/echo", b'{"text": "else"}'),
        "garbage": "t=1,v1=zz",
    }
    for what, header in checks.items():
        resp = _direct(world, header, body)
        assert resp.status_code == 403, (what, resp.status_code, resp.text)
        assert resp.json()["detail"], what
    good = sign(world.secret, "POST", "/echo", body)
    first = _direct(world, good, body)
    assert first.status_code == 200 and first.json() == {"text": "direct"}
    replayed = _direct(world, good, body)
    assert replayed.status_code == 403 and "replay" in replayed.json()["detail"]
    for health in ("/_alive", "/_ready", "/_metrics"):
        assert httpx.get(world.instance_url + health).status_code == 200, health


def test_the_instance_token_opens_only_its_own_bundle(world: World) -> None:
    """The token in the instance's environment fetches its bundle; it is no API key and no gateway key."""
    headers = {"Authorization": f"Bearer {world.instance_token}"}
    assert httpx.get(f"{world.fs.sched.url}/v1/instances/bundle", headers=headers).status_code == 200
    for path in ("/v1/me", "/v1/chutes", "/v1/internal/routes/alice/vault"):
        assert httpx.get(world.fs.sched.url + path, headers=headers).status_code == 401, path
