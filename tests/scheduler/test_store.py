"""The store on SQLite and PostgreSQL: migrations, keys (hashed, revocable), chutes, visibility, events, instances."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from chutes.identity import chute_id
from chutes.scheduler.store import Store
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import events as events_repo
from chutes.scheduler.store import instances as instances_repo
from chutes.scheduler.store import jobs as jobs_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.base import load_table_modules
from chutes.scheduler.store.models import ApiKey, Chute
from chutes.scheduler.store.secrets import hash_secret, instance_token, token_secret
from tests.scheduler.helpers import manifest

pytestmark = pytest.mark.timeout(60)


async def test_migrations_match_models_and_rerun(store: Store) -> None:
    def diff(conn: object) -> list[object]:
        ctx = MigrationContext.configure(conn)  # type: ignore[arg-type]
        return list(compare_metadata(ctx, load_table_modules()))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    # Running the migrations again, from two schedulers at once, is a no-op.
    await asyncio.gather(store.migrate(), store.migrate())
    async with store.session() as s:
        version = (await s.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == "0001" or version > "0001"


async def test_keys_are_random_hashed_listed_and_revocable(store: Store) -> None:
    async with store.session() as s:
        alice = await users_repo.create_user(s, "alice")
        key1, plain1 = await users_repo.create_key(s, alice, name="laptop")
        _, plain2 = await users_repo.create_key(s, alice, name="ci")
    assert plain1.startswith("cnk_") and len(plain1) == 47 and plain1 != plain2
    async with store.session() as s:
        rows = (await s.execute(select(ApiKey))).scalars().all()
        assert all(plain1 not in (r.key_hash, r.prefix, r.name) for r in rows)
        assert any(r.key_hash == hashlib.sha256(plain1.encode()).hexdigest() for r in rows)
        principal = await users_repo.authenticate(s, plain1)
        assert principal is not None and principal.username == "alice" and not principal.is_admin
        assert await users_repo.authenticate(s, plain1[:-1] + ("A" if plain1[-1] != "A" else "B")) is None
        assert await users_repo.authenticate(s, "not a key") is None
        listed = await users_repo.list_keys(s, alice.id)
        assert [k.name for k in listed] == ["laptop", "ci"]
        assert [k.prefix for k in listed] == [plain1[:12], plain2[:12]]
    async with store.session() as s:
        assert await users_repo.revoke_key(s, alice.id, key1.id) is not None
        assert await users_repo.revoke_key(s, "someone-else", key1.id) is None
    async with store.session() as s:
        assert await users_repo.authenticate(s, plain1) is None
        assert await users_repo.authenticate(s, plain2) is not None


async def test_users_unique_and_roles_checked(store: Store) -> None:
    async with store.session() as s:
        bob = await users_repo.create_user(s, "bob")
        with pytest.raises(users_repo.UserExistsError):
            await users_repo.create_user(s, "bob")
        with pytest.raises(users_repo.RoleError, match="only an admin"):
            await users_repo.create_key(s, bob, role="gateway")
        with pytest.raises(users_repo.RoleError, match="unknown role"):
            await users_repo.create_key(s, bob, role="root")
        with pytest.raises(ValueError, match="invalid username"):
            await users_repo.create_user(s, "Bad Name")


async def test_admin_bootstrap_is_idempotent(store: Store) -> None:
    key = "cnk_" + "a" * 43
    for _ in range(2):
        async with store.session() as s:
            user, created = await users_repo.ensure_admin(s, "admin", key)
            assert created is None and user.is_admin
    async with store.session() as s:
        principal = await users_repo.authenticate(s, key)
        assert principal is not None and principal.is_admin and principal.is_gateway
        assert len(await users_repo.list_keys(s, principal.user_id)) == 1
        _, fresh = await users_repo.ensure_admin(s, "admin")
        assert fresh is not None and fresh != key
    with pytest.raises(ValueError, match="CHUTES_ADMIN_KEY"):
        async with store.session() as s:
            await users_repo.ensure_admin(s, "admin", "short")


async def _add_chute(store: Store, owner: str, name: str, public: bool = False) -> Chute:
    async with store.session() as s:
        user = await users_repo.get_user_by_name(s, owner) or await users_repo.create_user(s, owner)
        chute = Chute(
            id=chute_id(owner, name), owner_id=user.id, username=owner, name=name, slug=name.lower().replace("/", "-"),
            manifest=manifest(owner, name), version="0" * 64, public=public, invoke_secret="s",
        )  # fmt: skip
        s.add(chute)
    return chute


async def test_chute_visibility_and_refs(store: Store) -> None:
    await _add_chute(store, "alice", "Private/Model")
    await _add_chute(store, "alice", "open", public=True)
    async with store.session() as s:
        bob_user = await users_repo.create_user(s, "bob")
        _, bob_key = await users_repo.create_key(s, bob_user)
        alice_user = await users_repo.get_user_by_name(s, "alice")
        assert alice_user is not None
        _, alice_key = await users_repo.create_key(s, alice_user)
        alice = await users_repo.authenticate(s, alice_key)
        bob = await users_repo.authenticate(s, bob_key)
        assert alice and bob
        private_id = chute_id("alice", "Private/Model")
        for ref in (private_id, "Private/Model", "private-model"):
            found = await chutes_repo.resolve(s, alice, ref)
            assert found is not None and found.id == private_id, ref
        # Another user's private chute is invisible, whichever way it is named; a public one is visible by id.
        assert await chutes_repo.resolve(s, bob, private_id) is None
        assert await chutes_repo.resolve(s, bob, "Private/Model") is None
        assert await chutes_repo.resolve(s, bob, chute_id("alice", "open")) is not None
        assert [c.name for c in await chutes_repo.list_visible(s, bob)] == []
        chute = await chutes_repo.get_chute(s, private_id)
        assert chute is not None
        assert await chutes_repo.share(s, chute, bob_user) is True
        assert await chutes_repo.share(s, chute, bob_user) is False
    async with store.session() as s:
        assert await chutes_repo.resolve(s, bob, private_id) is not None
        assert [c.name for c in await chutes_repo.list_visible(s, bob)] == ["Private/Model"]
        assert await chutes_repo.shared_with(s, private_id) == ["bob"]
        chute = await chutes_repo.get_chute(s, private_id)
        assert chute is not None
        assert await chutes_repo.unshare(s, chute, bob_user) is True
    async with store.session() as s:
        assert await chutes_repo.resolve(s, bob, private_id) is None


async def test_versions_tokens_prune_and_purge(store: Store) -> None:
    chute = await _add_chute(store, "alice", "echo")
    async with store.session() as s:
        secret = await token_secret(s)
        assert secret == await token_secret(s)
        shas = []
        for i in range(4):
            sha = hashlib.sha256(bytes([i])).hexdigest()
            shas.append(sha)
            token = instance_token(secret, chute.id, sha)
            row = await chutes_repo.put_version(s, chute.id, sha, bytes([i]), {"i": i}, token)
            row.created_at = float(i)
        token0 = instance_token(secret, chute.id, shas[0])
        assert token0.startswith("cit_") and hash_secret(token0) != token0
        found = await chutes_repo.version_by_token(s, token0)
        assert found is not None and found.sha256 == shas[0] and found.bundle == b"\x00"
        assert await chutes_repo.version_by_token(s, "cit_nope") is None
    async with store.session() as s:
        assert await chutes_repo.prune_versions(s, chute.id, keep=2, current=shas[0]) == 1
    async with store.session() as s:
        kept = {v for v in shas if await chutes_repo.get_version(s, chute.id, v) is not None}
        assert kept == {shas[0], shas[2], shas[3]}
        await events_repo.add_event(s, chute.id, "accepted", "ok")
        await chutes_repo.purge(s, chute.id)
    async with store.session() as s:
        assert await chutes_repo.get_chute(s, chute.id) is None
        assert await chutes_repo.get_version(s, chute.id, shas[3]) is None
        assert await events_repo.list_events(s, chute.id) == []


async def test_events_are_ordered_and_paged(store: Store) -> None:
    async with store.session() as s:
        for kind in ("accepted", "registered", "placed", "running", "ready"):
            await events_repo.add_event(s, "c1", kind, f"{kind}!", version="v1", data={"k": kind})
        await events_repo.add_event(s, "c2", "accepted", "other chute")
    async with store.session() as s:
        events = await events_repo.list_events(s, "c1")
        assert [e.kind for e in events] == ["accepted", "registered", "placed", "running", "ready"]
        later = await events_repo.list_events(s, "c1", after=events[2].id)
        assert [e.kind for e in later] == ["running", "ready"]
        last = await events_repo.last_event(s, "c1")
        assert last is not None and last.data == {"k": "ready"}


async def test_instance_transitions_are_recorded_once(store: Store) -> None:
    obs = instances_repo.Observed("a1", "c1", "v1", "pending", node_id="gpu-b", gpu_model="a100", gpu_count=2)
    async with store.session() as s:
        assert await instances_repo.record(s, obs) == instances_repo.Transition("a1", None, "pending")
        assert await instances_repo.record(s, obs) is None
    running = instances_repo.Observed("a1", "c1", "v1", "running")

    async def observe() -> instances_repo.Transition | None:
        async with store.session() as s:
            return await instances_repo.record(s, running)

    results = [await observe(), await observe()]
    assert results.count(instances_repo.Transition("a1", "pending", "running")) == 1
    async with store.session() as s:
        rows = await instances_repo.list_for(s, "c1")
        assert len(rows) == 1 and rows[0].node_id == "gpu-b" and rows[0].started_at is not None
        await instances_repo.record(s, instances_repo.Observed("a1", "c1", "v1", "stopped"))
    async with store.session() as s:
        assert await instances_repo.list_for(s, "c1", live_only=True) == []


async def test_job_runs_and_outputs(store: Store) -> None:
    chute = await _add_chute(store, "alice", "jobby")
    async with store.session() as s:
        run = await jobs_repo.create_run(
            s, chute_id=chute.id, job_name="train", user_id=chute.owner_id, version="v", input={"x": 1}
        )
        await jobs_repo.put_output(s, run.id, "out.txt", b"hello")
        await jobs_repo.put_output(s, run.id, "out.txt", b"hello!")
        jobs_repo.set_status(run, "succeeded")
        jobs_repo.set_status(run, "running")  # a finished run keeps its outcome
    async with store.session() as s:
        got = await jobs_repo.get_run(s, run.id)
        assert got is not None and got.status == "succeeded" and got.finished_at is not None
        assert await jobs_repo.list_outputs(s, run.id) == [("out.txt", 6, hashlib.sha256(b"hello!").hexdigest())]
        assert await jobs_repo.list_runs(s, unfinished=True) == []


async def test_fresh_database_migrated_by_two_schedulers_at_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    stores = [Store(url), Store(url)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        async with stores[1].session() as s:
            assert (await s.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0
    finally:
        for s in stores:
            await s.close()
