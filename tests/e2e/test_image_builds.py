"""Images built by the platform, end to end: ``chutes dev --builds on``, the installed CLI, buildah, a registry.

- ``chutes build --wait`` of an Image (the local base plus ``pip install`` of a package the host venv lacks)
  prints the build live and a digest that ``skopeo inspect`` finds in the registry; a second build is a cache
  hit that registers no Nomad job.
- A build whose RUN step fails exits 1 with that step and its output, the image is ``failed``, and a following
  ``chutes deploy`` reports the failure and deploys nothing.
- The built chute deployed with ``chutes deploy`` answers through the gateway from inside its container (the
  package's version, another hostname); the same chute as a host process (raw_exec) fails on that import, and
  ``chutes logs`` says so.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.containers import BASE_IMAGE, built_image_chute, require_containers
from tests.support.polling import poll_until
from tests.support.processes import terminate

pytestmark = [pytest.mark.e2e, pytest.mark.containers, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CHUTES = str(Path(sys.executable).parent / "chutes")
PACKAGE, VERSION = "tinydb", "4.8.0"  # pure Python, small, and not in this project's virtualenv

WHERE = """\
    import socket

    import {package}  # only the image has it

    return {{"version": {package}.__version__, "hostname": socket.gethostname()}}"""


class Stack:
    def __init__(self, info: dict[str, Any], env: dict[str, str], tmp: Path) -> None:
        self.info, self.env, self.tmp = info, env, tmp
        # New in every session: buildah's layer cache (the host's) cannot serve this module's builds.
        self.nonce = secrets.token_hex(8)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHUTES, *args], env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=timeout
        )

    def nomad(self, path: str) -> Any:
        headers = {"X-Nomad-Token": self.info["nomad_token"]}
        return httpx.get(f"{self.info['nomad_addr']}{path}", headers=headers, timeout=10).json()

    def build_jobs(self) -> dict[str, int]:
        """Build jobs in Nomad: ID → JobModifyIndex (a new registration changes it)."""
        return {j["ID"]: j["JobModifyIndex"] for j in self.nomad("/v1/jobs?prefix=chutes-build-")}

    def chute_file(self, name: str, run: str) -> str:
        path = self.tmp / f"{name}.py"
        path.write_text(built_image_chute(name, "1", run, self.nonce, WHERE.format(package=PACKAGE)))
        return f"{path.name}:chute"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_containers()
    tmp = tmp_path_factory.mktemp("builds")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_", "CONSUL_HTTP_"))}
    env.update(CHUTES_CONFIG=str(tmp / "config.ini"), COLUMNS="200")
    ready, log_path = tmp / "ready.json", tmp / "dev.log"
    argv = [CHUTES, "dev", "--simulate", "--containers", "on", "--builds", "on", "--data-dir", str(tmp / "data")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*argv, "--ready-file", str(ready)], env=env, cwd=tmp, stdout=log, stderr=log)
    try:
        poll_until(lambda: ready.exists() or proc.poll() is not None, "chutes dev up", timeout=180, interval=0.5)
        assert proc.poll() is None, log_path.read_text()
        info = json.loads(ready.read_text())
        assert info["builds"] is True and info["registry"].startswith("127.0.0.1:"), info
        assert "builds: on" in log_path.read_text()
        yield Stack(info, env, tmp)
    finally:
        terminate(proc, 90)


def test_build_pushes_a_digest_the_registry_has_and_a_second_build_is_a_cache_hit(stack: Stack) -> None:
    ref = stack.chute_file("tiny", f"pip install {PACKAGE}=={VERSION}")
    started = time.monotonic()
    built = stack.cli("build", ref, "--wait")
    cold = time.monotonic() - started
    assert built.returncode == 0, built.stdout + built.stderr
    out = built.stdout
    # Live output: the platform's steps, buildah's steps, the RUN step's own lines, the runtime layer.
    assert "==> fetching the build context" in out and "==> pushing" in out
    assert f"RUN pip install {PACKAGE}=={VERSION}" in out and f"Successfully installed {PACKAGE}-{VERSION}" in out
    assert "chutes runtime" in out and "installed" in out
    final = out.strip().splitlines()[-1]
    registry = stack.info["registry"]
    assert final.startswith(f"{registry}/demo/tiny:1@sha256:"), out
    digest = final.split("@", 1)[1]
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry}/demo/tiny:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == digest

    image = json.loads(stack.cli("images", "get", "tiny:1", "--json").stdout)
    assert image["status"] == "ready" and image["ref"] == final and image["digest"] == digest
    jobs = stack.build_jobs()
    assert list(jobs) == [f"chutes-build-{image['image_id']}"]

    started = time.monotonic()
    again = stack.cli("build", ref, "--wait", "--json")
    cached = time.monotonic() - started
    assert again.returncode == 0, again.stdout + again.stderr
    hit = json.loads(again.stdout)
    assert hit["cache_hit"] is True and hit["ref"] == final and hit["image_id"] == image["image_id"]
    assert stack.build_jobs() == jobs  # no new Nomad job, not even the same one registered again
    print(f"\nbuild of {ref}: cold {cold:.1f}s, cache hit {cached:.1f}s; {final}")


def test_a_failing_run_step_fails_the_build_and_the_deploy(stack: Stack) -> None:
    ref = stack.chute_file("broken", "echo about to fail && exit 3")
    failed = stack.cli("build", ref, "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "STEP 3/" in failed.stdout and "RUN echo about to fail && exit 3" in failed.stdout
    assert "about to fail" in failed.stdout  # the step's own output, live
    assert "failed at STEP 3/" in failed.stderr and "exit code 3" in failed.stderr, failed.stderr
    assert "about to fail" in failed.stderr  # and among the last lines of the error
    assert "Traceback" not in failed.stderr
    image = json.loads(stack.cli("images", "get", "broken:1", "--json").stdout)
    assert image["status"] == "failed" and image["ref"] is None

    deployed = stack.cli("deploy", ref, "--timeout", "60")
    assert deployed.returncode == 1
    assert "failed" in deployed.stderr and "RUN echo about to fail" in deployed.stderr, deployed.stderr
    listed = json.loads(stack.cli("chutes", "list", "--json").stdout)
    assert all(c["name"] != "broken" for c in listed)
    assert all(not j["ID"].startswith("chute-") for j in stack.nomad("/v1/jobs") if "broken" in json.dumps(j))


def test_the_deployed_chute_runs_in_its_image_and_as_a_host_process_fails_the_import(stack: Stack) -> None:
    ref = stack.chute_file("tiny", f"pip install {PACKAGE}=={VERSION}")
    deployed = stack.cli("deploy", ref, "--timeout", "240")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # Built by the first test (a cache hit here), or now when this test runs alone.
    assert "building its image first" in deployed.stdout and f"image: {stack.info['registry']}/demo/tiny:1@sha256:" in (
        deployed.stdout.replace("\n", "")
    )
    answer = json.loads(stack.cli("invoke", "tiny", "/where", "-d", "{}").stdout)
    assert answer["version"] == VERSION
    assert answer["hostname"] != socket.gethostname()  # it ran in its container

    host_ref = stack.chute_file("tiny-host", f"pip install {PACKAGE}=={VERSION}")
    deployed = stack.cli("deploy", host_ref, "--build", "off", "--timeout", "240")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    called = stack.cli("invoke", "tiny-host", "/where", "-d", "{}")
    assert called.returncode != 0
    logs = poll_until(
        lambda: (lambda text: text if f"No module named '{PACKAGE}'" in text else None)(
            (lambda r: r.stdout + r.stderr)(stack.cli("logs", "tiny-host"))
        ),
        "the import error in chutes logs",
        timeout=60,
        interval=0.5,
    )
    assert "ModuleNotFoundError" in logs


def test_a_base_without_python_fails_with_a_hint_to_use_with_python(stack: Stack) -> None:
    ref = stack.chute_file("nopython", "rm -f /usr/bin/python3 /usr/bin/python3.* /usr/local/bin/python3")
    failed = stack.cli("build", ref, "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "this image has no Python" in failed.stdout and "Image(...).with_python(...)" in failed.stdout
    assert "exit code 3" in failed.stderr and "with_python" in failed.stderr


def test_a_string_image_gets_the_runtime_layer_on_top(stack: Stack) -> None:
    path = stack.tmp / "plain.py"
    path.write_text(
        "from chutes.chute import Chute, NodeSelector\n"
        f"chute = Chute(username='demo', name='plain', image='{BASE_IMAGE}', node_selector=NodeSelector(gpu_count=1))\n"
        "@chute.cord(public_api_path='/x')\nasync def x(self: Chute) -> dict[str, str]:\n    return {}\n"
    )
    built = stack.cli("build", f"{path.name}:chute", "--wait", "--json")
    assert built.returncode == 0, built.stdout + built.stderr
    image = json.loads(built.stdout)
    assert image["status"] == "ready" and image["kind"] == "base" and image["base"] == BASE_IMAGE
    assert image["ref"].startswith(f"{stack.info['registry']}/demo/base-chutes-base:bookworm@sha256:")
    by_digest = image["ref"].split("@")[0].rsplit(":", 1)[0] + "@" + image["digest"]  # skopeo: no tag with a digest
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{by_digest}"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Labels"]["io.chutes.runtime"] == image["runtime_version"]
