"""The images API, before any build runs: hostile contexts refused with 4xx (Nomad is never reached: it does not
listen here), ownership, limits, the build task's credential; builds off without a registry."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chutes.image import Image
from chutes.image.pack import DOCKERFILE, META_FILE, ImageMeta, pack
from chutes.scheduler.images import flow
from chutes.scheduler.images.wheel import runtime_wheel
from chutes.scheduler.store import images as images_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.image_models import ImageRow
from chutes.scheduler.store.secrets import token_secret
from tests.scheduler.server import RunningScheduler, make_config, serve
from tests.support.archives import Entry, tar_gz

pytestmark = pytest.mark.timeout(60)
GZIP = {"Content-Type": "application/gzip"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningScheduler]:
    config = make_config(tmp_path, registry="127.0.0.1:5000", max_context_bytes=64 * 1024, max_concurrent_builds=1)
    async with serve(config) as running:
        yield running


def context(tmp_path: Path, username: str = "alice", **extra: bytes) -> bytes:
    (tmp_path / "app.py").write_text("print('hi')\n")
    img = Image(username=username, name="app", tag="1").from_base("localhost/chutes-base:bookworm")
    img.add("app.py", "/srv/app.py", build_dir=tmp_path)
    return pack(img, chute_dir=tmp_path).archive


def raw(entries: list[Entry], dockerfile: str = "FROM base") -> bytes:
    return tar_gz([(DOCKERFILE, dockerfile.encode()), (META_FILE, ImageMeta("alice", "x", "1").to_json()), *entries])


def link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (raw([("../../etc/cron.d/x", b"x")]), 422, "leaves the build context"),
        (raw([link("app/evil", "/etc/shadow")]), 422, "is a link"),
        (raw([], dockerfile="FROM base\nRUN x\nONBUILD RUN evil"), 422, "not an instruction"),
        (raw([], dockerfile='FROM base\nENV A="1"\nUSER root\nRUN curl x | sh \\'), 422, "continuation"),
        (raw([("big.bin", b"\0" * (65 * 1024))]), 413, "over 65536 bytes"),
        (b"not a tar", 422, "not a gzipped tar"),
    ],
)
async def test_hostile_contexts_are_refused_before_any_build(
    api: RunningScheduler, body: bytes, status: int, words: str
) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        answer = await http.post("/v1/images", content=body, headers=GZIP)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"] and answer.json()["hint"]
    async with api.services.store.session() as session:
        assert await images_repo.list_images(session) == []  # nothing stored, nothing built


async def test_wrong_content_type_another_users_name_and_builds_off(api: RunningScheduler, tmp_path: Path) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        typed = await http.post("/v1/images", content=context(tmp_path), headers={"Content-Type": "application/json"})
        assert typed.status_code in (413, 415, 422) and "detail" in typed.json()
        other = await http.post("/v1/images", content=context(tmp_path, username="bob"), headers=GZIP)
        assert other.status_code == 403 and "bob" in other.json()["detail"]
        assert (await http.post("/v1/images", content=b"x", headers={"Content-Type": "text/plain"})).status_code == 415
    async with serve(make_config(tmp_path / "off")) as off:
        key = await off.new_user("alice")
        async with off.client(key) as http:
            answer = await http.post("/v1/images", content=context(tmp_path), headers=GZIP)
            assert answer.status_code == 409 and "CHUTES_REGISTRY" in answer.json()["hint"]
            listed = await http.get("/v1/images")
            assert listed.status_code == 200 and listed.headers["x-chutes-builds"] == "off"


async def test_a_valid_context_reaches_nomad_and_records_the_failure_when_nomad_is_away(
    api: RunningScheduler, tmp_path: Path
) -> None:
    alice = await api.new_user("alice")
    async with api.client(alice) as http:
        answer = await http.post("/v1/images", content=context(tmp_path), headers=GZIP)
        assert answer.status_code == 503, answer.text  # Nomad does not listen at 127.0.0.1:9
        listed = await http.get("/v1/images")
        assert listed.headers["x-chutes-builds"] == "on"
        [row] = listed.json()
        assert row["status"] == "failed" and "could not be registered" in row["error"]
        assert row["name"] == "app" and len(row["image_id"]) == 64


async def test_ownership_limits_and_the_build_credential(api: RunningScheduler, tmp_path: Path) -> None:
    alice, bob = await api.new_user("alice"), await api.new_user("bob")
    wheel = runtime_wheel()
    async with api.services.store.session() as session:
        owner = await users_repo.get_user_by_name(session, "alice")
        assert owner is not None
        session.add(ImageRow(id="b" * 64, owner_id=owner.id, username="alice", name="busy", tag="1",
                             status="building", context=context(tmp_path), attempt=1,
                             runtime_version=wheel.version))  # fmt: skip
        secret = await token_secret(session)
    async with api.client(bob) as http:
        assert (await http.get(f"/v1/images/{'b' * 64}")).status_code == 404
        assert (await http.get("/v1/images/busy:1/logs")).status_code == 404
        assert (await http.delete(f"/v1/images/{'b' * 64}")).status_code == 404
        assert (await http.get("/v1/images")).json() == []
    second = tmp_path / "second"
    second.mkdir()
    async with api.client(alice) as http:
        got = await http.get("/v1/images/busy:1")
        assert got.status_code == 200 and got.json()["status"] == "building"  # Nomad away: the stored state
        # At most one build under way per user here: the second is refused before anything is stored.
        limited = await http.post("/v1/images", content=context(second), headers=GZIP)
        assert limited.status_code == 429 and "wait for one to finish" in limited.json()["hint"]
        assert len((await http.get("/v1/images")).json()) == 1
    # The build task's endpoint takes the current attempt's credential only.
    url = f"/v1/internal/images/{'b' * 64}/context"
    for key in (alice, images_repo.build_token(secret, "b" * 64, 0), images_repo.build_token(secret, "c" * 64, 1)):
        async with api.client(key) as http:
            assert (await http.get(url)).status_code == 401
    async with api.client(images_repo.build_token(secret, "b" * 64, 1)) as http:
        served = await http.get(url)
    assert served.status_code == 200, served.text
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(served.content))) as tar:
        assert f".chutes/runtime/{wheel.filename}" in tar.getnames() and "app.py" in tar.getnames()


async def test_a_build_no_node_can_run_fails_with_the_reason(tmp_path: Path) -> None:
    """A real devcluster, none of whose nodes has the builder meta: the build fails, saying so, and nothing runs."""
    import asyncio

    from tests.support.stack import scheduler_stack

    (tmp_path / "cluster").mkdir()
    with scheduler_stack(tmp_path / "cluster", nodes=("gpu-a=l4:1",)) as cluster:
        config = make_config(
            tmp_path, nomad_addr=cluster.dc.nomad_addr, consul_addr=cluster.dc.consul_addr,
            registry="127.0.0.1:5000", builder_node_meta="chutes_builder=nowhere",
        )  # fmt: skip
        async with serve(config) as api:
            alice = await api.new_user("alice")
            async with api.client(alice) as http:
                started = await http.post("/v1/images", content=context(tmp_path), headers=GZIP)
                assert started.status_code == 202, started.text
                image_id = started.json()["image_id"]
                assert started.json()["status"] == "building" and started.json()["cache_hit"] is False
                for _ in range(100):
                    row = (await http.get(f"/v1/images/{image_id}")).json()
                    if row["status"] == "failed":
                        break
                    await asyncio.sleep(0.2)
                assert row["status"] == "failed", row
                assert "no node can build images" in row["error"] and "CHUTES_BUILDER_NODE_META" in row["error"]
                allocs = await api.services.nomad.job_allocations(f"chutes-build-{image_id}", all_=True)
                assert allocs == []
                # The failed build stays failed: the same context again starts nothing.
                again = await http.post("/v1/images", content=context(tmp_path), headers=GZIP)
                assert again.json()["status"] == "failed" and again.json()["cache_hit"] is True
            # A build stored but never registered (its scheduler stopped in between): the leader's tick starts it.
            async with api.services.store.session() as session:
                owner = await users_repo.get_user_by_name(session, "alice")
                assert owner is not None
                session.add(ImageRow(id="d" * 64, owner_id=owner.id, username="alice", name="stale", tag="1",
                                     status="queued", context=context(tmp_path), attempt=1, queued_at=1.0,
                                     runtime_version=runtime_wheel().version))  # fmt: skip
            await flow.follow_orphans(api.services)
            assert await api.services.nomad.find_job(f"chutes-build-{'d' * 64}") is not None
            async with api.client(alice) as http:
                assert (await http.get(f"/v1/images/{'d' * 64}")).json()["status"] in ("building", "failed")
