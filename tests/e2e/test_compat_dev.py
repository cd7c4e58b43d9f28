"""Chutes code on ``chutes dev`` (the DevStack, in process; the installed CLI as a user runs it):

- chute files written for other usernames deploy for local users of those names, created on the fly;
- the seed's FastAPI example answers through the gateway: 401 without its key, 200 with it;
- a job written as in Chutes (``**job_data``) leaves its file in the outputs: listed by ``chutes jobs get`` and
  downloadable with ``chutes jobs output``;
- the real CLI's forms: ``deploy --public --accept-fee``, ``share --chute-id --user-id``, ``chutes list --limit
  --page``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chutes.client import Client
from chutes.dev import DevStack
from chutes.identity import chute_id

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
CHUTES = str(Path(sys.executable).parent / "chutes")
SEED_FASTAPI = ROOT / "tests" / "runtime" / "chutes" / "seed_fastapi.py"

JOB_CHUTE = """\
import os

from chutes.chute import Chute, NodeSelector

chute = Chute(username="chutes", name="render-frames", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.job(timeout=120, upload=True)
async def render(self, **job_data):
    frames = int(job_data.get("frames", 1))
    with open(os.path.join(job_data["output_dir"], "frames.txt"), "w") as out:
        out.write("\\n".join(f"frame {n}" for n in range(frames)))
    return {"frames": frames}
"""

PUBLIC_CHUTE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="demo", name="{name}", image="python:3.12", node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/ping")
async def ping(self) -> dict:
    return {{"pong": True}}
"""


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHUTES, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def cli_env(tmp: Path, api_url: str, gateway_url: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env.update(
        CHUTES_CONFIG=str(tmp / "config.ini"),
        CHUTES_SCHEDULER_URL=api_url,
        CHUTES_GATEWAY_URL=gateway_url,
        CHUTES_API_KEY=key,
        COLUMNS="200",
    )
    return env


def test_chutes_code_on_the_dev_stack(tmp_path: Path) -> None:
    with DevStack(data_dir=tmp_path / "data", use_local_gpus=False, echo=lambda _: None) as stack:
        info = stack.start()
        env = cli_env(tmp_path, info.api_url, info.gateway_url, info.api_key)
        admin_key = json.loads((Path(info.data_dir) / "secrets.json").read_text())["admin_key"]

        # The seed's FastAPI example names user "myuser": deployed for a local user of that name.
        deployed = cli(env, "deploy", f"{SEED_FASTAPI}:chute", "--accept-fee", "--timeout", "150", timeout=200)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        seed_id = chute_id("myuser", "my-ai-app")
        assert "owner" in deployed.stdout and "created on the fly by the dev stack" in deployed.stdout
        assert f"the local user myuser (the chute's username); it is shared with you: name it by its id, {seed_id}" in (
            deployed.stdout.replace("\n", " ")
        ), deployed.stdout
        assert f"{info.gateway_url}/myuser/my-ai-app/secure-endpoint" in deployed.stdout
        assert "--user myuser" in deployed.stdout

        url = f"{info.gateway_url}/myuser/my-ai-app/secure-endpoint"
        auth = {"Authorization": f"Bearer {info.api_key}"}
        with httpx.Client(timeout=30) as http:
            denied = http.post(url, json={"data": "hi"}, headers=auth)
            assert denied.status_code == 401 and denied.json()["detail"] == "Invalid API key", denied.text
            allowed = http.post(url, json={"data": "hi"}, headers={**auth, "X-App-Key": "seed-secret-key"})
            assert allowed.status_code == 200 and allowed.json() == {"secure_data": "HI"}, allowed.text
            invalid = http.post(f"{info.gateway_url}/myuser/my-ai-app/predict", json={"text": ""}, headers=auth)
            assert invalid.status_code == 422
        invoked = cli(env, "invoke", "my-ai-app", "/cached-predict", "-d", '{"text": "abc"}', "--user", "myuser")
        assert invoked.returncode == 0 and json.loads(invoked.stdout) == {"length": 3}, invoked.stderr

        # A job written as in Chutes, for user "chutes": its file is an output, listed and downloadable.
        job_file = tmp_path / "render_frames.py"
        job_file.write_text(JOB_CHUTE)
        job_deploy = cli(env, "deploy", f"{job_file}:chute", timeout=120)
        assert job_deploy.returncode == 0, job_deploy.stdout + job_deploy.stderr
        job_chute = chute_id("chutes", "render-frames")
        assert f"chutes jobs run {job_chute} render" in job_deploy.stdout
        ran = cli(env, "jobs", "run", job_chute, "render", "--input", '{"frames": 3}', "--json", "--timeout", "150")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        run = json.loads(ran.stdout)
        assert run["status"] == "succeeded" and run["result"] == {"frames": 3}
        shown = cli(env, "jobs", "get", run["run_id"])
        assert "output  frames.txt" in shown.stdout, shown.stdout
        target = tmp_path / "frames.txt"
        got = cli(env, "jobs", "output", run["run_id"], "frames.txt", "-o", str(target))
        assert got.returncode == 0, got.stderr
        assert target.read_text() == "frame 0\nframe 1\nframe 2"

        # deploy --public: refused to a user (with the fix), done by an admin.
        public_file = tmp_path / "pinger.py"
        public_file.write_text(PUBLIC_CHUTE.format(name="pinger"))
        refused = cli(env, "deploy", f"{public_file}:chute", "--public", "--accept-fee", "--no-wait")
        assert refused.returncode == 1 and "only admins may deploy a public chute" in refused.stderr
        assert "Hint:" in refused.stderr and "chutes share --chute-id" in refused.stderr
        as_admin = {**env, "CHUTES_API_KEY": admin_key}
        public = cli(as_admin, "deploy", f"{public_file}:chute", "--public", "--accept-fee", "--no-wait", "--json")
        assert public.returncode == 0, public.stdout + public.stderr
        assert json.loads(public.stdout)["public"] is True

        # share --chute-id --user-id (a user id), and --remove.
        with Client(info.api_url, admin_key) as admin:
            bob = admin.create_user("bob")
        shared = cli(env, "share", "--chute-id", chute_id("demo", "pinger"), "--user-id", str(bob["user_id"]))
        assert shared.returncode == 0, shared.stderr
        detail = json.loads(cli(env, "chutes", "get", "pinger", "--json").stdout)
        assert detail["shared_with"] == ["bob"] and detail["public"] is True
        unshared = cli(env, "share", "--chute-id", "pinger", "--user-id", "bob", "--remove")
        assert unshared.returncode == 0, unshared.stderr
        assert json.loads(cli(env, "chutes", "get", "pinger", "--json").stdout)["shared_with"] == []

        # chutes list --limit --page: demo sees its own chute and the two shared with it.
        everything = [c["name"] for c in json.loads(cli(env, "chutes", "list", "--json").stdout)]
        assert sorted(everything) == ["my-ai-app", "pinger", "render-frames"]
        pages = [
            [
                c["name"]
                for c in json.loads(cli(env, "chutes", "list", "--limit", "2", "--page", str(p), "--json").stdout)
            ]
            for p in (0, 1, 2)
        ]
        assert pages == [everything[:2], everything[2:], []]
