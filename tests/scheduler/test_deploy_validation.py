"""Deploy refuses bad input with a 4xx and a JSON reason, before anything is stored or sent to Nomad."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.scheduler.helpers import bundle, manifest
from tests.scheduler.server import RunningScheduler, make_config, serve

pytestmark = pytest.mark.timeout(90)


def _tar_gz(members: list[tarfile.TarInfo], contents: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            data = (contents or {}).get(info.name)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _symlink_bundle() -> bytes:
    meta, meta_data = _file("chutes_bundle.json", b'{"entrypoint": "app:chute"}')
    app, app_data = _file("app.py", b"x = 1\n")
    link = tarfile.TarInfo("evil.py")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    return _tar_gz([meta, app, link], {"chutes_bundle.json": meta_data, "app.py": app_data})


async def _deploy(api: RunningScheduler, key: str, man: Any, data: bytes) -> Any:
    text = man if isinstance(man, str) else json.dumps(man)
    async with api.client(key) as http:
        return await http.post(
            "/v1/chutes", data={"manifest": text}, files={"bundle": ("bundle.tar.gz", data, "application/gzip")}
        )


@pytest.fixture
async def small_api(tmp_path: Path) -> Any:
    async with serve(make_config(tmp_path, max_bundle_bytes=4096)) as running:
        yield running


async def test_bad_deploys_are_refused_with_reasons(small_api: RunningScheduler) -> None:
    api = small_api
    key = await api.new_user("alice")
    good = manifest("alice", "echo")
    cases: list[tuple[str, Any, bytes, int, str]] = [
        ("not json", "{nope", bundle(), 422, "not JSON"),
        ("not an object", "[1, 2]", bundle(), 422, "JSON object"),
        ("unknown field", {**good, "extra": 1}, bundle(), 422, "extra"),
        ("someone else's name", manifest("bob", "echo"), bundle(), 403, "not yours"),
        ("chute id mismatch", {**good, "chute_id": "00000000-0000-0000-0000-000000000000"}, bundle(), 422, "chute_id"),
        ("bad chute name", {**good, "name": "../etc"}, bundle(), 422, "name"),
        (
            "vram no model has",
            {**good, "node_selector": {"gpu_count": 2, "min_vram_gb_per_gpu": 100, "include": ["a100", "h100_sxm"]}},
            bundle(),
            422,
            "VRAM",
        ),
        ("unknown gpu", {**good, "node_selector": {"include": ["tpu"]}}, bundle(), 422, "tpu"),
        ("unknown selector field", {**good, "node_selector": {"min_vram_gpu_per_gpu": 24}}, bundle(), 422, "unknown"),
        ("no cords and no jobs", {**good, "cords": []}, bundle(), 422, "cord"),
        ("empty bundle", good, b"", 422, "empty"),
        ("not gzip", good, b"hello world", 422, "gzip"),
        ("path traversal", good, bundle({"../escape.py": "x", "app.py": "x"}), 422, ".."),
        ("absolute path", good, bundle({"/etc/cron.d/x": "x", "app.py": "x"}), 422, "absolute"),
        ("symlink", good, _symlink_bundle(), 422, "link"),
        ("no bundle metadata", good, _tar_gz([_file("app.py", b"x")[0]], {"app.py": b"x"}), 422, "chutes_bundle"),
        ("entrypoint missing", good, bundle({"other.py": "x"}), 422, "app.py"),
        ("too big", good, bundle({"app.py": os.urandom(8192)}), 413, "limit"),
    ]  # fmt: skip
    for what, man, data, status, needle in cases:
        resp = await _deploy(api, key, man, data)
        assert resp.status_code == status, (what, resp.status_code, resp.text)
        body = resp.json()
        assert isinstance(body["detail"], str) and "hint" in body, what
        assert needle.lower() in body["detail"].lower(), (what, body["detail"])
    async with api.client(key) as http:
        assert (await http.get("/v1/chutes")).json() == []
        missing = await http.post("/v1/chutes", data={"manifest": json.dumps(good)})
        assert missing.status_code == 422 and "bundle" in missing.json()["detail"]


async def test_docker_image_refs_are_checked_before_nomad(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, task_driver="docker")) as api:
        key = await api.new_user("alice")
        for ref in ("python:3.11-${attr.unique.hostname}", "Python:Latest", "a b"):
            man = {**manifest("alice", "echo"), "image": {"ref": ref, "dockerfile": None}}
            resp = await _deploy(api, key, man, bundle())
            assert resp.status_code == 422, (ref, resp.text)
            assert "image" in resp.json()["detail"]


async def test_admin_may_deploy_for_existing_users_only(small_api: RunningScheduler) -> None:
    resp = await _deploy(small_api, small_api.admin_key, manifest("ghost", "echo"), bundle())
    assert resp.status_code == 422 and "ghost" in resp.json()["detail"]


async def test_unreachable_cluster_is_a_clear_503(small_api: RunningScheduler) -> None:
    key = await small_api.new_user("alice")
    resp = await _deploy(small_api, key, manifest("alice", "echo"), bundle())
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert "Consul" in body["detail"] or "Nomad" in body["detail"]
    assert body["hint"]
    async with small_api.client(key) as http:
        assert (await http.get("/v1/chutes")).json() == []
        nodes = await http.get("/v1/nodes")
        assert nodes.status_code == 503 and nodes.json()["hint"]


async def test_public_chutes_are_for_admins_to_deploy(small_api: RunningScheduler) -> None:
    key = await small_api.new_user("alice")
    async with small_api.client(key) as http:
        resp = await http.post(
            "/v1/chutes",
            data={"manifest": json.dumps(manifest("alice", "echo")), "public": "true"},
            files={"bundle": ("bundle.tar.gz", bundle(), "application/gzip")},
        )
    assert resp.status_code == 403, resp.text
    assert "only admins may deploy a public chute" in resp.json()["detail"]
    assert "chutes share --chute-id" in resp.json()["hint"]


async def test_dev_stacks_accept_a_chute_of_another_username(tmp_path: Path) -> None:
    """With dev_adopt_users the username check lets the deploy through (it then needs the cluster: 503 here)."""
    async with serve(make_config(tmp_path, dev_adopt_users=True)) as api:
        key = await api.new_user("demo")
        resp = await _deploy(api, key, manifest("chutes", "echo"), bundle())
        assert resp.status_code == 503, resp.text
        refused = await _deploy(api, key, manifest("admin", "echo"), bundle())
        assert refused.status_code == 403 and "admin account" in refused.json()["detail"]
