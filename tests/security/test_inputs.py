"""Hostile input at the scheduler: oversized and malformed bodies, injection through names and paths, bundles.

- Oversized bodies are refused with 413 JSON before anything reads them, anonymous callers included (FastAPI
  reads a body before it authenticates); malformed ones get a 4xx JSON answer, never a 500.
- A NUL character in any string is a 422 on PostgreSQL too (it refuses NUL in text and JSON).
- Chute names and cord paths built to inject into the Nomad job or a file path are refused before Nomad hears
  of them; odd but valid names reach Nomad as values only: the registered Job (read back from the devcluster)
  has the structure of a plain one.
- Job output names that would escape the output folder are refused.
- Bundles with links, devices, and traversal beyond the cases of tests/scheduler/test_deploy_validation.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chutes.identity import chute_id
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import instance_token, run_token, token_secret
from tests.scheduler.conftest import PG_URL, _pg_reachable
from tests.scheduler.helpers import bundle, manifest
from tests.scheduler.server import RunningScheduler, make_config, serve
from tests.security.test_authz_matrix import _manifest
from tests.support.stack import Stack, scheduler_stack

pytestmark = [pytest.mark.timeout(180)]

ECHO = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name={name!r}, image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/echo")
async def echo(self, text: str = "hi") -> dict:
    return {{"text": text}}
"""


def assert_json_error(resp: httpx.Response, status: int | tuple[int, ...], what: str) -> dict[str, Any]:
    allowed = (status,) if isinstance(status, int) else status
    assert resp.status_code in allowed, (what, resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json"), (what, resp.headers)
    body: dict[str, Any] = resp.json()
    assert isinstance(body.get("detail"), str) and body["detail"], (what, body)
    return body


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    async with serve(make_config(tmp_path)) as running:
        yield running


# ---------------------------------------------------------------------------------------------- bodies


async def test_oversized_json_bodies_are_413_before_authentication(api: RunningScheduler) -> None:
    key = await api.new_user("alice")
    big = b'{"name": "' + b"x" * (2 * 2**20) + b'"}'
    headers = {"content-type": "application/json"}

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    for who in (None, key):
        async with api.client(who) as http:
            assert_json_error(await http.post("/v1/keys", content=big, headers=headers), 413, f"declared, {who}")
            chunked = await http.post("/v1/keys", content=chunks(), headers=headers)
            body = assert_json_error(chunked, 413, f"chunked, {who}")
            assert "limit" in body["detail"]
            assert_json_error(await http.post("/v1/internal/invocations", content=big, headers=headers), 413, "gw")
    async with api.client(key) as http:  # small bodies still work
        assert (await http.post("/v1/keys", json={"name": "ok"})).status_code == 201


def _raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request on a raw socket (to send a Content-Length the body does not have)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_end = data.index(b"\r\n\r\n")
        status = int(data.split(b" ", 2)[1])
        lines = data[:head_end].split(b"\r\n")
        length = next((int(ln.split(b":")[1]) for ln in lines if ln.lower().startswith(b"content-length")), 0)
        rest = data[head_end + 4 :]
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


async def test_a_declared_huge_upload_is_refused_without_reading_it(api: RunningScheduler) -> None:
    head = (
        "POST /v1/chutes HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {10 * 2**30}\r\n"
    )
    status, body = await asyncio.to_thread(_raw_request, api.url, head)
    assert status == 413 and "limit" in json.loads(body)["detail"]


JSON_TYPE = {"content-type": "application/json"}
MALFORMED: list[tuple[str, str, dict[str, Any]]] = [
    ("not JSON", "/v1/keys", {"content": b"{nope", "headers": JSON_TYPE}),
    ("deeply nested", "/v1/keys", {"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON_TYPE}),
    ("invalid UTF-8", "/v1/keys", {"content": b'{"name": "\xff\xfe"}', "headers": JSON_TYPE}),
    ("huge number", "/v1/chutes/x/scale", {"content": b'{"instances": 1e999999}', "headers": JSON_TYPE}),
    ("integer overflow", "/v1/chutes/x/scale", {"json": {"instances": 2**80}}),
    ("wrong type", "/v1/keys", {"json": ["a", "list"]}),
    ("text/plain", "/v1/keys", {"content": b"name=x", "headers": {"content-type": "text/plain"}}),
    ("empty JSON", "/v1/keys", {"content": b"", "headers": JSON_TYPE}),
    ("multipart without boundary", "/v1/chutes", {"content": b"--x\r\n",
                                                  "headers": {"content-type": "multipart/form-data"}}),
    ("truncated multipart", "/v1/chutes", {
        "content": b'--b\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n{"a"',
        "headers": {"content-type": "multipart/form-data; boundary=b"}}),
    ("manifest not a form field", "/v1/chutes", {"json": manifest("alice", "echo")}),
    ("bundle as text", "/v1/chutes", {"data": {"manifest": json.dumps(manifest("alice", "echo")), "bundle": "abc"}}),
]  # fmt: skip


@pytest.mark.parametrize(("what", "path", "kwargs"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_bodies_are_4xx_json(api: RunningScheduler, what: str, path: str, kwargs: Any) -> None:
    key = await api.new_user("alice")
    async with api.client(key) as http:
        resp = await http.post(path, **kwargs)
    assert_json_error(resp, (400, 404, 413, 415, 422), what)


@pytest.fixture
async def pg_api(tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    reason = await _pg_reachable()
    if reason is not None:
        pytest.skip(reason)
    import asyncpg

    admin_dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    db = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{db}"')
    await conn.close()
    try:
        url = PG_URL.rsplit("/", 1)[0] + f"/{db}"
        async with serve(make_config(tmp_path, database_url=url)) as running:
            yield running
    finally:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
        await conn.close()


async def test_nul_characters_are_422_on_postgresql(pg_api: RunningScheduler) -> None:
    key = await pg_api.new_user("alice")
    record = {"invocation_id": "a\x00", "chute_id": "c", "caller": "u", "status": 200, "duration_ms": 1,
              "started_at": 1.7e9}  # fmt: skip
    async with pg_api.client(key) as http:
        assert_json_error(await http.post("/v1/keys", json={"name": "a\x00b"}), 422, "key name")
        assert_json_error(await http.get("/v1/chutes/a%00b"), (404, 422), "chute ref")
        assert_json_error(await http.get("/v1/jobs/r%00n"), (404, 422), "run id")
    async with pg_api.client(pg_api.admin_key) as http:
        assert_json_error(await http.post("/v1/internal/invocations", json={"records": [record]}), 422, "record")
        assert_json_error(await http.post("/v1/users", json={"username": "a\x00"}), 422, "username")
        assert (await http.get("/v1/me")).status_code == 200  # the store is fine afterwards


# ---------------------------------------------------------------------------------------------- injection


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with scheduler_stack(tmp_path_factory.mktemp("inject"), nodes=("gpu-a=l40s:4",)) as stack:
        yield stack


@pytest.fixture
async def live_api(cluster: Stack, tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    config = make_config(tmp_path, nomad_addr=cluster.dc.nomad_addr, consul_addr=cluster.dc.consul_addr)
    async with serve(config) as running:
        yield running


async def _deploy(api: RunningScheduler, key: str, man: Any, data: bytes) -> httpx.Response:
    async with api.client(key) as http:
        return await http.post(
            "/v1/chutes",
            data={"manifest": man if isinstance(man, str) else json.dumps(man)},
            files={"bundle": ("bundle.tar.gz", data, "application/gzip")},
        )


HOSTILE_NAMES = [
    'x" }, "Driver": "docker', "${node.unique.id}", "x\n]\njob \"evil\" {", "a/../b", "../etc", "/abs", "a//b",
    "a\\b", "name with spaces", "$(touch /tmp/pwned)", "`id`", "a;b", "x" * 129, "", ".", "ümlaut", "a\x00b",
]  # fmt: skip
HOSTILE_CORD_PATHS = ["/../etc", "/a/../../b", "/%2e%2e/x", "/a b", "/${x}", "relative", "/_ready", "/_metrics", "//x"]


async def test_hostile_names_and_paths_are_refused_before_nomad(cluster: Stack, live_api: RunningScheduler) -> None:
    key = await live_api.new_user("alice")
    nomad = cluster.dc.nomad()
    before = {j["ID"] for j in nomad.jobs.get_jobs()}
    for name in HOSTILE_NAMES:
        man = {**manifest("alice", "echo"), "name": name, "chute_id": chute_id("alice", name)}
        assert_json_error(await _deploy(live_api, key, man, bundle()), 422, f"name {name!r}")
    for username in ("Alice", "al ice", "a${x}", "-a"):
        man = {**manifest("alice", "echo"), "username": username, "chute_id": chute_id(username, "echo")}
        assert_json_error(await _deploy(live_api, key, man, bundle()), (403, 422), f"username {username!r}")
    for path in HOSTILE_CORD_PATHS:
        for field in ("path", "public_api_path"):
            man = manifest("alice", "echo")
            man["cords"][0][field] = path
            assert_json_error(await _deploy(live_api, key, man, bundle()), 422, f"cord {field} {path!r}")
    assert {j["ID"] for j in nomad.jobs.get_jobs()} == before
    async with live_api.client(key) as http:
        assert (await http.get("/v1/chutes")).json() == []


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not the values (lists by their items' shapes)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


# Values that differ between any two chutes whatever their names (the bundle) or that Nomad stamps. (No
# credential is in a job: the template names the instance token's item by version, swapped below.)
PER_VERSION = {"CHUTES_BUNDLE_SHA256", "chute_version"}
NOMAD_STATE = {"CreateIndex", "ModifyIndex", "JobModifyIndex", "SubmitTime", "Version", "Status", "Stable"}


def unexplained(plain: Any, odd: Any, swap: dict[str, str], where: str = "") -> list[str]:
    """Paths where ``odd`` differs from ``plain`` other than by the identity swap (name, id) or a per-version
    value: any such difference would mean the name changed the job's structure or reached another field."""
    key = where.rsplit("/", 1)[-1]
    if key in PER_VERSION | NOMAD_STATE:
        return []
    if isinstance(plain, dict) and isinstance(odd, dict):
        if set(plain) != set(odd):
            return [f"{where}: keys {sorted(set(plain) ^ set(odd))}"]
        return [p for k in plain for p in unexplained(plain[k], odd[k], swap, f"{where}/{k}")]
    if isinstance(plain, list) and isinstance(odd, list):
        if len(plain) != len(odd):
            return [f"{where}: {len(plain)} vs {len(odd)} items"]
        return [
            p for i, (a, b) in enumerate(zip(plain, odd, strict=True)) for p in unexplained(a, b, swap, f"{where}[{i}]")
        ]
    if isinstance(plain, str) and isinstance(odd, str):
        expected = plain
        for old, new in swap.items():
            expected = expected.replace(old, new)
        return [] if expected == odd else [f"{where}: {odd!r} (expected {expected!r})"]
    return [] if plain == odd else [f"{where}: {odd!r} vs {plain!r}"]


ODD_NAMES = ["org/Model.v2-1_0", "user.bob", "chutes", "a..b/c", "X" * 60 + "/" + "y" * 67]


async def test_odd_valid_names_reach_nomad_as_values_only(cluster: Stack, live_api: RunningScheduler) -> None:
    key = await live_api.new_user("alice")
    nomad = cluster.dc.nomad()
    jobs: dict[str, dict[str, Any]] = {}
    for name in ["plain", *ODD_NAMES]:
        resp = await _deploy(live_api, key, manifest("alice", name), bundle({"app.py": ECHO.format(name=name)}))
        assert resp.status_code == 202, (name, resp.text)
        cid = resp.json()["chute_id"]
        jobs[name] = await asyncio.to_thread(nomad.job.get_job, f"chute-{cid}")
        async with live_api.client(key) as http:  # gone again, so the instances do not pile up
            assert (await http.delete(f"/v1/chutes/{cid}")).status_code in (202, 204)
    for job in jobs.values():  # a digest of everything compared below: it differs with the names by design
        job["Meta"].pop("chutes_spec", None)
    reference = jobs.pop("plain")
    for name, job in jobs.items():
        swap = {chute_id("alice", "plain"): chute_id("alice", name), "plain": name,
                reference["Meta"]["chute_version"]: job["Meta"]["chute_version"]}  # fmt: skip
        problems = unexplained(reference, job, swap)
        assert not problems, (name, problems)
        service = job["TaskGroups"][0]["Services"][0]
        assert service["Tags"] == ["chutes", "user:alice", f"chute:{name}"], name
        assert job["TaskGroups"][0]["Tasks"][0]["Config"] == reference["TaskGroups"][0]["Tasks"][0]["Config"]


async def test_job_output_names_cannot_escape_the_output_folder(api: RunningScheduler) -> None:
    await api.new_user("alice")
    async with api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, "alice")
        assert user is not None
        cid = chute_id("alice", "trainer")
        s.add(Chute(id=cid, owner_id=user.id, username="alice", name="trainer", slug="trainer",
                    manifest=_manifest("trainer", job=True), version="0" * 64, public=False, invoke_secret="s",
                    desired_instances=0, status="ready"))  # fmt: skip
        await s.flush()
        token = instance_token(await token_secret(s), cid, "0" * 64)
        await chutes_repo.put_version(s, cid, "0" * 64, b"bundle", _manifest("trainer", job=True), token)
        run = await jobs_repo.create_run(s, chute_id=cid, job_name="train", user_id=user.id, version="0" * 64, input={})
        run_id = run.id
        token = run_token(await token_secret(s), run_id)
    async with api.client(token) as http:
        for name in ("../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".hidden", "a/.git/config", "a\\..\\..\\b",
                     "x" * 300):  # fmt: skip
            resp = await http.post(
                f"/v1/instances/jobs/{run_id}/outputs", files=[("files", (name, b"x", "text/plain"))]
            )
            assert_json_error(resp, 422, name)
        ok = await http.post(
            f"/v1/instances/jobs/{run_id}/outputs", files=[("files", ("sub/out.txt", b"x", "text/plain"))]
        )
        assert ok.status_code < 300, ok.text


# ---------------------------------------------------------------------------------------------- bundles


def _tar(*members: tarfile.TarInfo, contents: dict[str, bytes] | None = None) -> bytes:
    meta = json.dumps({"entrypoint": "app:chute", "sdk_version": "0.1.0"}).encode()
    files = {"chutes_bundle.json": meta, "app.py": b"x = 1\n", **(contents or {})}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("chutes_bundle.json", "app.py"):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
        for info in members:
            data = files.get(info.name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


HOSTILE_BUNDLES = {
    "hard link to a system file": _tar(_member("evil.py", tarfile.LNKTYPE, "/etc/passwd")),
    "hard link inside": _tar(_member("copy.py", tarfile.LNKTYPE, "app.py")),
    "symlinked folder then a file through it": _tar(
        _member("lib", tarfile.SYMTYPE, "/tmp"), _member("lib/x.py"), contents={"lib/x.py": b"x"}
    ),
    "relative symlink escaping": _tar(_member("up.py", tarfile.SYMTYPE, "../../../etc/passwd")),
    "character device": _tar(_member("tty", tarfile.CHRTYPE)),
    "fifo": _tar(_member("pipe", tarfile.FIFOTYPE)),
    "nested traversal": _tar(_member("a/b/../../../x.py"), contents={"a/b/../../../x.py": b"x"}),
    "backslash traversal": _tar(_member("..\\..\\x.py"), contents={"..\\..\\x.py": b"x"}),
    "dot-dot folder": _tar(_member("..", tarfile.DIRTYPE)),
}


@pytest.mark.parametrize("what", sorted(HOSTILE_BUNDLES))
async def test_hostile_bundles_are_refused_at_deploy(api: RunningScheduler, what: str) -> None:
    key = await api.new_user("alice")
    resp = await _deploy(api, key, manifest("alice", "echo"), HOSTILE_BUNDLES[what])
    assert_json_error(resp, 422, what)
    async with api.client(key) as http:
        assert (await http.get("/v1/chutes")).json() == []
