"""The authorisation matrix: every scheduler endpoint called by every kind of caller, each answer as designed.

Callers: anonymous (no key), ``other`` (bob, a user who owns nothing here), ``shared`` (carol, whom alice
shares her service chute with: sharing grants calling it, through the gateway, and seeing that it exists,
never its instances, events or logs), ``owner`` (alice, who owns the chutes, keys and runs in the request),
``admin``, a ``gateway`` key, an ``instance`` token (of alice's job chute) and a ``run`` token (of the
finished run: it uploaded its outputs while running, and neither it nor anything else changes them now).
The routes are read from the app itself: a route without an entry in ``MATRIX`` fails
``test_every_route_has_a_matrix_entry``, so a new endpoint cannot ship without deciding who may call it.

The scheduler runs in this process on a real uvicorn server against a devcluster with one simulated node and
its agent, so calls that pass authorisation really deploy, scale, dispatch and read Nomad; a request that
changes or removes something gets a fresh object for each caller. An answer of the expected status with a
JSON error body (``detail``) is what each cell checks; 401 answers also carry ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from chutes.identity import chute_id
from chutes.scheduler.app import create_app
from chutes.scheduler.config import SchedulerConfig
from chutes.scheduler.secret_box import generate_key
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.image_models import ImageRow
from chutes.scheduler.store.models import Chute
from chutes.scheduler.store.secrets import instance_token, run_token, token_secret
from tests.scheduler.server import RunningScheduler, make_config, serve
from tests.support.polling import apoll_until
from tests.support.stack import Stack, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# "run" last: the unshare row re-shares with carol before each caller, and a refused last caller leaves it shared.
WHO = ("anonymous", "other", "shared", "owner", "admin", "gateway", "instance", "run")

SERVICE_CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="{name}", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/echo")
async def echo(self, text: str = "hi") -> dict:
    return {{"text": text}}
"""
JOB_CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="alice", name="trainer", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.job(timeout=60)
async def train(self, steps: int = 1) -> dict:
    return {"steps": steps}
"""


def _bundle(source: str) -> bytes:
    files = {"app.py": source, "chutes_bundle.json": json.dumps({"entrypoint": "app:chute", "sdk_version": "0.1.0"})}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _manifest(name: str, *, job: bool = False) -> dict[str, Any]:
    base: dict[str, Any] = {
        "chute_id": chute_id("alice", name),
        "username": "alice",
        "name": name,
        "image": {"ref": "python:3.12", "dockerfile": None},
        "node_selector": {"gpu_count": 1},
        "sdk_version": "0.1.0",
    }
    if job:
        base["jobs"] = [{"name": "train", "timeout": 60}]
    else:
        base["cords"] = [{"name": "echo", "path": "/echo", "public_api_path": "/echo"}]
    return base


def _deploy_form(name: str, *, job: bool = False) -> dict[str, Any]:
    source = JOB_CHUTE if job else SERVICE_CHUTE.format(name=name)
    return {
        "data": {"manifest": json.dumps(_manifest(name, job=job))},
        "files": {"bundle": ("bundle.tar.gz", _bundle(source), "application/gzip")},
    }


@dataclass
class Ctx:
    api: RunningScheduler
    keys: dict[str, str | None]
    secret_id: str = ""  # alice's private service chute (deployed, one instance)
    trainer_id: str = ""  # alice's job chute
    run_id: str = ""  # a run of trainer.train
    fresh: Iterator[int] = field(default_factory=lambda: count(1))

    def http(self, who: str) -> httpx.AsyncClient:
        key = self.keys[who]
        return self.api.client(key) if key else self.api.client()

    async def as_owner(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self.http("owner") as http:
            resp = await http.request(method, path, **kwargs)
        assert resp.status_code < 300, (method, path, resp.status_code, resp.text)
        return resp

    async def store_chute(self, name: str) -> str:
        """A chute row of alice's written straight to the store (no Nomad job): something to delete."""
        async with self.api.services.store.session() as s:
            user = await users_repo.get_user_by_name(s, "alice")
            assert user is not None
            cid = chute_id("alice", name)
            s.add(
                Chute(
                    id=cid,
                    owner_id=user.id,
                    username="alice",
                    name=name,
                    slug=name,
                    manifest=_manifest(name),
                    version="0" * 64,
                    public=False,
                    invoke_secret="secret",
                    desired_instances=0,
                    status="ready",
                )
            )
        return cid


Request = tuple[str, str, dict[str, Any]]
Builder = Callable[[Ctx, str], Awaitable[Request]]


def fixed(method: str, path: str, **kwargs: Any) -> Builder:
    async def build(ctx: Ctx, who: str) -> Request:
        return method, path.format(secret=ctx.secret_id, trainer=ctx.trainer_id, run=ctx.run_id), kwargs

    return build


async def _new_user(ctx: Ctx, who: str) -> Request:
    return "POST", "/v1/users", {"json": {"username": f"user-{who}-{next(ctx.fresh)}"}}


async def _revoke_alices_key(ctx: Ctx, who: str) -> Request:
    key_id = (await ctx.as_owner("POST", "/v1/keys", json={"name": f"spare-{who}"})).json()["key_id"]
    return "DELETE", f"/v1/keys/{key_id}", {}


async def _deploy(ctx: Ctx, who: str) -> Request:
    return "POST", "/v1/chutes", _deploy_form(f"fresh-{who}")


async def _delete_chute(ctx: Ctx, who: str) -> Request:
    return "DELETE", f"/v1/chutes/{await ctx.store_chute(f'doomed-{who}')}", {}


async def _unshare(ctx: Ctx, who: str) -> Request:
    await ctx.as_owner("POST", f"/v1/chutes/{ctx.secret_id}/share", json={"username": "carol"})
    return "DELETE", f"/v1/chutes/{ctx.secret_id}/share/carol", {}


async def _dispatch(ctx: Ctx, who: str) -> Request:
    return "POST", f"/v1/jobs/{ctx.trainer_id}/train", {"json": {"steps": 2}}


async def _upload(ctx: Ctx, who: str) -> Request:
    status = {"job": "train", "run_id": ctx.run_id, "status": "succeeded", "error": None, "timed_out": False,
              "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z", "duration": 1.0,
              "result": {"steps": 1}}  # fmt: skip
    files = [("files", ("status.json", json.dumps(status).encode(), "application/json"))]
    return "POST", f"/v1/instances/jobs/{ctx.run_id}/outputs", {"files": files}


async def _create_secret(ctx: Ctx, who: str) -> Request:
    """A secret for one of alice's chutes (stored, no Nomad job), named by its id: bob may not even see it."""
    vault = await ctx.store_chute(f"vault-{who}")
    return "POST", "/v1/secrets", {"json": {"chute": vault, "name": "HF_TOKEN", "value": f"hf_{who}"}}


async def _delete_secret(ctx: Ctx, who: str) -> Request:
    vault = await ctx.store_chute(f"vault-del-{who}")
    await ctx.as_owner("POST", "/v1/secrets", json={"chute": vault, "name": "HF_TOKEN", "value": "hf"})
    return "DELETE", f"/v1/secrets/HF_TOKEN?chute={vault}", {}


async def _sign_in(ctx: Ctx, who: str) -> Request:
    """The dashboard's sign-in with the caller's own key (anonymous: a key that does not exist)."""
    return "POST", "/ui/api/session", {"json": {"api_key": ctx.keys[who] or "cnk_" + "x" * 43}}


async def _try_cord(ctx: Ctx, who: str) -> Request:
    return "POST", "/ui/api/try", {"json": {"chute": ctx.secret_id, "cord": "echo"}}


async def _store_image(ctx: Ctx, name: str) -> str:
    """An image of alice's written straight to the store (built, as far as the API can tell)."""
    image_id = hashlib.sha256(name.encode()).hexdigest()
    async with ctx.api.services.store.session() as s:
        user = await users_repo.get_user_by_name(s, "alice")
        assert user is not None
        if await s.get(ImageRow, image_id) is None:
            s.add(ImageRow(id=image_id, owner_id=user.id, username="alice", name=name, tag="1", status="ready",
                           context=b"", log="STEP 1/1: FROM base\n", log_location="store"))  # fmt: skip
    return image_id


async def _get_image(ctx: Ctx, who: str) -> Request:
    return "GET", f"/v1/images/{await _store_image(ctx, 'kept')}", {}


async def _image_logs(ctx: Ctx, who: str) -> Request:
    return "GET", f"/v1/images/{await _store_image(ctx, 'kept')}/logs", {}


async def _delete_image(ctx: Ctx, who: str) -> Request:
    return "DELETE", f"/v1/images/{await _store_image(ctx, f'gone-{who}')}", {}


async def _build_context(ctx: Ctx, who: str) -> Request:
    return "GET", f"/v1/internal/images/{await _store_image(ctx, 'kept')}/context", {}


async def _wake(ctx: Ctx, who: str) -> Request:
    return "POST", f"/v1/internal/chutes/{ctx.secret_id}/wake", {}


# Expected answers per caller. Users see only their own private chutes (another's is a 404, not a 403, so
# names do not leak); gateway keys reach only /v1/internal; instance tokens reach only /v1/instances.
OPEN = dict.fromkeys(WHO, 200)
USER = {"anonymous": 401, "other": 200, "shared": 200, "owner": 200, "admin": 200, "gateway": 403, "instance": 401,
        "run": 401}  # fmt: skip
OWNED = USER | {"other": 404, "shared": 404}
ADMIN = USER | {"other": 403, "shared": 403, "owner": 403}
INTERNAL = ADMIN | {"gateway": 200}
INSTANCE = {who: 401 for who in WHO} | {"instance": 200}
# Alice's service chute, shared with carol: carol may see that it exists (and call it through the gateway);
# changing it, and its instances, events and logs, stay the owner's.
SHARED_SEES = OWNED | {"shared": 200}
SHARED_REFUSED = OWNED | {"shared": 403}


def ok(base: dict[str, int], status: int, **changes: int) -> dict[str, int]:
    """``base`` with its success status replaced by ``status`` and some cells changed."""
    return {who: (status if code == 200 else code) for who, code in base.items()} | changes


MATRIX: dict[tuple[str, str], tuple[Builder, dict[str, int]]] = {
    ("GET", "/healthz"): (fixed("GET", "/healthz"), OPEN),
    ("GET", "/metrics"): (fixed("GET", "/metrics"), INTERNAL),  # operators: admin, gateway (or the metrics token)
    ("GET", "/v1/me"): (fixed("GET", "/v1/me"), USER | {"gateway": 200}),  # a gateway may ask who it is
    ("POST", "/v1/users"): (_new_user, ok(ADMIN, 201)),
    ("GET", "/v1/keys"): (fixed("GET", "/v1/keys"), USER),
    ("POST", "/v1/keys"): (fixed("POST", "/v1/keys", json={"name": "ci"}), ok(USER, 201)),
    # Keys belong to their user: nobody else revokes them, admins included (they revoke by deleting users).
    ("DELETE", "/v1/keys/{key_id}"): (_revoke_alices_key, ok(OWNED, 204, admin=404)),
    ("POST", "/v1/chutes"): (_deploy, ok(OWNED, 202, other=403, shared=403)),  # only alice uploads for alice
    ("GET", "/v1/chutes"): (fixed("GET", "/v1/chutes"), USER),
    ("GET", "/v1/chutes/{ref}"): (fixed("GET", "/v1/chutes/{secret}"), SHARED_SEES),
    ("DELETE", "/v1/chutes/{ref}"): (_delete_chute, ok(OWNED, 204)),
    ("POST", "/v1/chutes/{ref}/scale"): (
        fixed("POST", "/v1/chutes/{secret}/scale", json={"instances": 1}),
        SHARED_REFUSED,
    ),
    ("POST", "/v1/chutes/{ref}/share"): (
        fixed("POST", "/v1/chutes/{secret}/share", json={"username": "carol"}),
        SHARED_REFUSED,
    ),
    ("DELETE", "/v1/chutes/{ref}/share/{username}"): (_unshare, ok(SHARED_REFUSED, 204)),
    ("GET", "/v1/chutes/{ref}/instances"): (fixed("GET", "/v1/chutes/{secret}/instances"), SHARED_REFUSED),
    ("GET", "/v1/chutes/{ref}/events"): (fixed("GET", "/v1/chutes/{secret}/events"), SHARED_REFUSED),
    ("GET", "/v1/chutes/{ref}/logs"): (fixed("GET", "/v1/chutes/{secret}/logs"), SHARED_REFUSED),
    ("GET", "/v1/nodes"): (fixed("GET", "/v1/nodes"), USER),
    ("GET", "/v1/nodes/{node_id}"): (fixed("GET", "/v1/nodes/gpu-a"), USER),
    ("POST", "/v1/jobs/{ref}/{job_name}"): (_dispatch, ok(OWNED, 202)),
    ("GET", "/v1/jobs/{run_id}"): (fixed("GET", "/v1/jobs/{run}"), OWNED),
    ("GET", "/v1/jobs/{run_id}/outputs/{name}"): (fixed("GET", "/v1/jobs/{run}/outputs/status.json"), OWNED),
    ("GET", "/v1/usage"): (fixed("GET", "/v1/usage"), USER),
    ("GET", "/v1/pricing"): (fixed("GET", "/v1/pricing"), USER),
    # Secrets: only the owner writes them; admins see names only (403 on writes); bob sees nothing (404).
    ("POST", "/v1/secrets"): (_create_secret, ok(OWNED, 201, admin=403)),
    ("GET", "/v1/secrets"): (fixed("GET", "/v1/secrets"), USER),
    ("DELETE", "/v1/secrets/{name}"): (_delete_secret, ok(OWNED, 204, admin=403)),
    # Images: each user's own (another's answers 404); no registry here, so an upload is a 409 once authorised;
    # a build's context only for that build's own credential (none of these callers has one).
    ("POST", "/v1/images"): (fixed("POST", "/v1/images"), ok(USER, 409)),
    ("GET", "/v1/images"): (fixed("GET", "/v1/images"), USER),
    ("GET", "/v1/images/{ref}"): (_get_image, OWNED),
    ("GET", "/v1/images/{ref}/logs"): (_image_logs, OWNED),
    ("DELETE", "/v1/images/{ref}"): (_delete_image, ok(OWNED, 204)),
    ("GET", "/v1/internal/images/{image_id}/context"): (_build_context, dict.fromkeys(WHO, 401)),
    ("GET", "/v1/instances/bundle"): (fixed("GET", "/v1/instances/bundle"), INSTANCE),
    # Only the run's own token uploads, and only while the run is unfinished: this one has finished.
    ("POST", "/v1/instances/jobs/{run_id}/outputs"): (_upload, INSTANCE | {"instance": 401, "run": 403}),
    ("POST", "/v1/internal/authenticate"): (
        fixed("POST", "/v1/internal/authenticate", json={"api_key": "cnk_x"}),
        ok(INTERNAL, 401),
    ),  # authorised callers learn the key is invalid
    ("GET", "/v1/internal/routes/{username}/{slug}"): (fixed("GET", "/v1/internal/routes/alice/secret"), INTERNAL),
    ("POST", "/v1/internal/chutes/{chute_id}/wake"): (_wake, INTERNAL),
    ("POST", "/v1/internal/invocations"): (
        fixed("POST", "/v1/internal/invocations", json={"records": []}),
        ok(INTERNAL, 202),
    ),
    # The dashboard (docs/dashboard.md): its files are public; sign-in checks the key in the body (a gateway
    # key or an instance token cannot sign in); sign-out only clears the caller's own cookie.
    ("GET", "/ui"): (fixed("GET", "/ui"), ok(OPEN, 308)),
    ("GET", "/ui/"): (fixed("GET", "/ui/"), OPEN),
    ("GET", "/ui/static/{name}"): (fixed("GET", "/ui/static/app.js"), OPEN),
    ("POST", "/ui/api/session"): (_sign_in, {**USER, "gateway": 403}),
    ("GET", "/ui/api/session"): (fixed("GET", "/ui/api/session"), USER),
    ("DELETE", "/ui/api/session"): (fixed("DELETE", "/ui/api/session"), ok(OPEN, 204)),
    ("GET", "/ui/api/chutes"): (fixed("GET", "/ui/api/chutes"), USER),
    ("GET", "/ui/api/chute"): (fixed("GET", "/ui/api/chute?ref={secret}"), SHARED_SEES),
    ("GET", "/ui/api/nodes"): (fixed("GET", "/ui/api/nodes?chute={secret}"), SHARED_SEES),
    ("GET", "/ui/api/usage/running"): (fixed("GET", "/ui/api/usage/running"), USER),
    ("GET", "/ui/api/usage/models"): (fixed("GET", "/ui/api/usage/models"), USER),
    # No gateway is configured here: the callers who may call the chute learn that (503); others get 404.
    ("POST", "/ui/api/try"): (_try_cord, ok(SHARED_SEES, 503)),
}


def _walk(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, APIRoute):
            for method in route.methods - {"HEAD"}:
                yield method, prefix + route.path.replace(":path}", "}")
        elif hasattr(route, "original_router"):  # FastAPI ≥ 0.16x keeps included routers as one node
            context = getattr(route, "include_context", None)
            yield from _walk(route.original_router.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every API route of the scheduler app, ``{x:path}`` written as ``{x}``."""
    app = create_app(SchedulerConfig(data_dir=Path("/nonexistent"), run_loops=False))
    found = set(_walk(app.routes))
    # Cross-check the walk against the OpenAPI document (which lists every route in the schema).
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= found, documented - found
    return found


def test_every_route_has_a_matrix_entry() -> None:
    routes = app_routes()
    missing = sorted(routes - set(MATRIX))
    assert not missing, f"routes without an authorisation matrix entry: {missing}"
    stale = sorted(set(MATRIX) - routes)
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with scheduler_stack(tmp_path_factory.mktemp("authz"), nodes=("gpu-a=l40s:8",)) as stack:
        yield stack


async def _setup(api: RunningScheduler) -> Ctx:
    keys: dict[str, str | None] = {"anonymous": None, "admin": api.admin_key}
    for who, name in (("owner", "alice"), ("other", "bob"), ("shared", "carol")):
        keys[who] = await api.new_user(name)
    async with api.client(api.admin_key) as http:
        gateway = await http.post("/v1/keys", json={"name": "gw", "role": "gateway"})
        keys["gateway"] = gateway.json()["api_key"]
    ctx = Ctx(api, keys)
    ctx.secret_id = (await ctx.as_owner("POST", "/v1/chutes", **_deploy_form("secret"))).json()["chute_id"]
    await ctx.as_owner("POST", f"/v1/chutes/{ctx.secret_id}/share", json={"username": "carol"})
    ctx.trainer_id = (await ctx.as_owner("POST", "/v1/chutes", **_deploy_form("trainer", job=True))).json()["chute_id"]
    ctx.run_id = (await ctx.as_owner("POST", f"/v1/jobs/{ctx.trainer_id}/train", json={})).json()["run_id"]
    async with api.services.store.session() as s:
        chute = await chutes_repo.get_chute(s, ctx.trainer_id)
        assert chute is not None
        keys["instance"] = instance_token(await token_secret(s), chute.id, chute.version)
        keys["run"] = run_token(await token_secret(s), ctx.run_id)
    return ctx


async def test_every_endpoint_answers_every_caller_as_designed(cluster: Stack, tmp_path: Path) -> None:
    config = make_config(
        tmp_path, nomad_addr=cluster.dc.nomad_addr, consul_addr=cluster.dc.consul_addr, secrets_key=generate_key()
    )
    async with serve(config) as api:
        ctx = await _setup(api)
        # The run uploads its own outputs (status.json) when it finishes: wait, so the output read has a file.
        async with ctx.http("owner") as http:

            async def finished() -> bool:
                return (await http.get(f"/v1/jobs/{ctx.run_id}")).json()["status"] in ("succeeded", "failed")

            await apoll_until(finished, "the job run to finish", 60, 0.3)
        wrong: list[str] = []
        for (method, route), (build, expected) in sorted(MATRIX.items()):
            for who in WHO:
                m, path, kwargs = await build(ctx, who)
                async with ctx.http(who) as http:
                    resp = await http.request(m, path, **kwargs)
                if resp.status_code != expected[who]:
                    wrong.append(f"{method} {route} as {who}: {resp.status_code} (expected {expected[who]}) "
                                 f"{resp.text[:160]}")  # fmt: skip
                    continue
                if resp.status_code >= 400:
                    body = resp.json()
                    if not (isinstance(body, dict) and body.get("detail")):
                        wrong.append(f"{method} {route} as {who}: error without a JSON detail: {resp.text[:160]}")
                exempt = (method, route) == ("POST", "/v1/internal/authenticate") and who in ("gateway", "admin")
                exempt |= (method, route) == ("POST", "/ui/api/session")  # a wrong key in the body: no challenge
                if resp.status_code == 401 and resp.headers.get("www-authenticate") != "Bearer" and not exempt:
                    wrong.append(f"{method} {route} as {who}: 401 without WWW-Authenticate: Bearer")
        assert not wrong, "\n".join(wrong)


async def test_a_dev_stacks_adopter_manages_the_chute_it_deployed_and_a_plain_share_only_calls(
    cluster: Stack, tmp_path: Path
) -> None:
    """``dev_adopt_users`` (``chutes dev``): demo deploys a chute written for ``carla``; carla's chute is shared
    with demo as its adopter, who watches and manages it; a user it is merely shared with may not."""
    config = make_config(
        tmp_path, nomad_addr=cluster.dc.nomad_addr, consul_addr=cluster.dc.consul_addr, dev_adopt_users=True
    )
    async with serve(config) as api:
        demo, bob = await api.new_user("demo"), await api.new_user("bob")
        form = _deploy_form("adopted")
        manifest = json.loads(form["data"]["manifest"]) | {
            "username": "carla",
            "chute_id": chute_id("carla", "adopted"),
        }
        form["data"]["manifest"] = json.dumps(manifest)
        async with api.client(demo) as http:
            deployed = await http.post("/v1/chutes", **form)
            assert deployed.status_code == 202, deployed.text
            cid = deployed.json()["chute_id"]
            assert deployed.json()["username"] == "carla" and deployed.json()["shared_with"] == ["demo"]
        async with api.client(api.admin_key) as http:
            shared = await http.post(f"/v1/chutes/{cid}/share", json={"username": "bob"})
            assert shared.status_code == 200, shared.text
        watch = ("instances", "events", "logs")
        async with api.client(bob) as http:
            assert (await http.get(f"/v1/chutes/{cid}")).status_code == 200
            for what in watch:
                assert (await http.get(f"/v1/chutes/{cid}/{what}")).status_code == 403, what
            assert (await http.delete(f"/v1/chutes/{cid}")).status_code == 403
        async with api.client(demo) as http:
            for what in watch:
                resp = await http.get(f"/v1/chutes/{cid}/{what}")
                assert resp.status_code == 200, (what, resp.text)
            assert (await http.delete(f"/v1/chutes/{cid}")).status_code == 204


async def test_the_nodes_view_names_gpu_holders_only_to_whom_manages_the_chute(cluster: Stack, tmp_path: Path) -> None:
    """Which instance holds which GPU is the owner's (and admins') to know: carol, whom the chute is shared
    with, sees the GPU taken but not by what."""
    config = make_config(tmp_path, nomad_addr=cluster.dc.nomad_addr, consul_addr=cluster.dc.consul_addr)
    async with serve(config) as api:
        alice, carol = await api.new_user("alice"), await api.new_user("carol")
        async with api.client(alice) as http:
            deployed = await http.post("/v1/chutes", **_deploy_form("holder"))
            assert deployed.status_code == 202, deployed.text
            cid = deployed.json()["chute_id"]
            assert (await http.post(f"/v1/chutes/{cid}/share", json={"username": "carol"})).status_code == 200

            async def held() -> list[dict[str, Any]]:
                nodes = (await http.get("/ui/api/nodes")).json()["nodes"]
                return [g["held_by"] for n in nodes for g in n["gpus"] if (g["held_by"] or {}).get("chute_id") == cid]

            await apoll_until(lambda: _nonempty(held()), "alice's instance holding a GPU", 60, 0.3)
            [mine] = await held()
            assert mine["chute_name"] == "holder" and mine["instance_id"]
        async with api.client(carol) as http:
            nodes = (await http.get(f"/ui/api/nodes?chute={cid}")).json()
            taken = [g["held_by"] for n in nodes["nodes"] for g in n["gpus"] if g["held_by"]]
            assert taken and nodes["chute"] == "holder"  # the GPU is taken, and carol may ask where one more fits
            assert all(h["chute_id"] != cid and h["instance_id"] != mine["instance_id"] for h in taken), taken
        async with api.client(alice) as http:
            assert (await http.delete(f"/v1/chutes/{cid}")).status_code == 204


async def _nonempty(values: Awaitable[list[Any]]) -> bool:
    return bool(await values)
