"""Containers for tests: podman's settings, a local registry, and an image with this project's runtime.

    require_containers()                       # skip (or fail under CHUTES_REQUIRE_CONTAINERS=1) without podman
    with local_registry(tmp) as registry:      # docker-registry on a free loopback port: "127.0.0.1:PORT"
        ref = runtime_image(registry)           # "127.0.0.1:PORT/test/chutes-runtime:<key>@sha256:..."

The image is ``localhost/chutes-base:bookworm`` plus the runtime wheel the scheduler builds into every image
(``chutes.scheduler.images.wheel``) and the runtime's dependencies (``pip install`` from PyPI inside the build,
through the host's CA bundle). It is built once per code version: its tag is a hash of the wheel's version (which
carries a hash of the code) and the base image, so a second session (or a second test module) on unchanged code
reuses it from local storage; tags of it older than a day are removed when a new one is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chutes.dev import registry as dev_registry
from chutes.scheduler.images.wheel import runtime_requirements, runtime_wheel

REPO = Path(__file__).resolve().parents[2]
REQUIRE_VAR = "CHUTES_REQUIRE_CONTAINERS"
BASE_IMAGE = "localhost/chutes-base:bookworm"
TEST_IMAGE = "localhost/chutes-test-runtime"
REMOTE_PATH = "test/chutes-runtime"
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"  # the one copy of the project's podman settings
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MARKER = "/etc/chutes-test-image"  # a file only the test image has: proof that code ran inside it
BUILD_TIMEOUT_S = 900


_BUILT_CHUTE = """
from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = (
    Image(username="demo", name="{name}", tag="{tag}")
    .from_base("{base}")
    .with_env("{nonce_env}", "{nonce}")
    .run_command({run!r})
)
chute = Chute(username="demo", name="{name}", image=image, node_selector=NodeSelector(gpu_count=1))


@chute.cord(public_api_path="/where")
async def where(self: Chute) -> dict[str, object]:
{body}
"""


def built_image_chute(
    name: str,
    tag: str,
    run: str,
    nonce: str,
    body: str = "    return {}",
    *,
    nonce_env: str = "CHUTES_TEST_NONCE",
    base: str = BASE_IMAGE,
) -> str:
    """The source of a one-cord chute (``/where``, answering ``body``) whose image the platform builds: ``base``
    plus one RUN step; the nonce (an ENV step) keeps buildah's layer cache from serving another session's build."""
    return _BUILT_CHUTE.format(name=name, tag=tag, base=base, nonce_env=nonce_env, nonce=nonce, run=run, body=body)


def containers_missing() -> str | None:
    """Why container tests cannot run here, or None."""
    for tool in ("podman", "buildah", "docker-registry"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (container tests need podman, buildah and docker-registry)"
    return None


def require_containers() -> None:
    """Skip when podman and friends are absent; fail instead when CHUTES_REQUIRE_CONTAINERS=1 (CI)."""
    reason = containers_missing()
    if reason is None:
        ensure_containers_conf()
        if subprocess.run(["podman", "image", "exists", BASE_IMAGE], capture_output=True).returncode != 0:
            reason = f"the base image {BASE_IMAGE} is not in local storage (make base-image builds it)"
    if reason is None:
        return
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{REQUIRE_VAR}=1 but {reason}")
    pytest.skip(reason)


def ensure_containers_conf() -> None:
    """Point podman at the project's settings (scripts/containers.conf: runc, raised rlimits) unless
    CONTAINERS_CONF is set already. Children (the devcluster, `chutes dev`) inherit the variable. Without runc
    (a laptop with crun) the file's ``[engine]`` section is dropped from a copy, leaving podman's runtime."""
    if os.environ.get("CONTAINERS_CONF"):
        return
    if shutil.which("runc"):
        os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        return
    text = re.split(r"(?m)^\[engine\]", CONTAINERS_CONF.read_text(), maxsplit=1)[0]
    folder = Path(tempfile.gettempdir()) / f"chutes-tests-containers-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    path = folder / "containers.conf"
    tmp = folder / f"containers.conf.{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)
    os.environ["CONTAINERS_CONF"] = str(path)


@contextlib.contextmanager
def local_registry(root: Path) -> Iterator[str]:
    """A docker-registry serving ``root`` on a free loopback port (no TLS, no auth); yields ``127.0.0.1:PORT``."""
    with dev_registry.local_registry(root) as address:
        yield address


def _run(argv: list[str], timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} … failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def local_test_image() -> str:
    """The test image's local tag, built now unless this code version's image is already in local storage."""
    base_id = _run(["podman", "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE]).stdout.strip()
    # The same wheel the scheduler puts into every image it builds: its version carries a hash of the code.
    wheel = runtime_wheel()
    key = hashlib.sha256(f"{base_id}\0{wheel.version}".encode()).hexdigest()[:16]
    tag = f"{TEST_IMAGE}:{key}"
    if subprocess.run(["podman", "image", "exists", tag], capture_output=True).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="chutes-test-image-") as tmp:
        context = Path(tmp)
        (context / wheel.filename).write_bytes(wheel.content)
        requirements = " ".join(f"'{r}'" for r in runtime_requirements())
        (context / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\n"
            f"COPY {wheel.filename} /tmp/\n"
            f"RUN python3 -m pip install -q --break-system-packages --no-cache-dir --no-deps /tmp/{wheel.filename} && "
            f"python3 -m pip install -q --break-system-packages --no-cache-dir {requirements} && "
            f"rm /tmp/{wheel.filename} && echo chutes-test-image > {MARKER}\n"
        )
        argv = ["buildah", "bud", "-q", "--layers=false", "--force-rm", "-f", str(context / "Containerfile"), "-t", tag]
        if CA_BUNDLE.exists():
            argv += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        _run([*argv, str(context)], timeout=BUILD_TIMEOUT_S)
    _prune_old_tags(keep=tag)
    return tag


def _prune_old_tags(keep: str) -> None:
    """Remove tags of the test image older than a day (a younger one may be another checkout's, in use)."""
    listed = subprocess.run(
        ["podman", "images", "--filter", f"reference={TEST_IMAGE}", "--filter", "until=24h",
         "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for tag in listed:
        if tag != keep and tag.startswith(TEST_IMAGE + ":"):
            subprocess.run(["podman", "rmi", tag], capture_output=True)


def push(local: str, registry: str, path: str = REMOTE_PATH) -> str:
    """Push ``local`` to ``registry``; returns the pushed reference pinned by digest."""
    tag = local.rsplit(":", 1)[1]
    remote = f"{registry}/{path}:{tag}"
    with tempfile.TemporaryDirectory(prefix="chutes-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        _run(
            [
                "buildah",
                "push",
                "-q",
                "--tls-verify=false",
                "--digestfile",
                str(digest_file),
                local,
                f"docker://{remote}",
            ],
            timeout=300,
        )
        digest = digest_file.read_text().strip()
    return f"{remote}@{digest}"


def runtime_image(registry: str) -> str:
    """The test image (built if needed) pushed to ``registry``, as a digest reference."""
    return push(local_test_image(), registry)


@contextlib.contextmanager
def private_storage(root: Path) -> Iterator[Path]:
    """Podman image and container storage of its own under ``root`` for the block (CONTAINERS_STORAGE_CONF in
    this process, so the devclusters it starts use it too): images start not pulled. Removed afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "graph"}"\nrunroot = "{root / "run"}"\n')
    previous = os.environ.get("CONTAINERS_STORAGE_CONF")
    os.environ["CONTAINERS_STORAGE_CONF"] = str(conf)
    try:
        yield conf
    finally:
        # Containers first (their layers are mounted), then images, then the files.
        subprocess.run(["podman", "rm", "--all", "--force", "--time", "0"], capture_output=True, timeout=120)
        subprocess.run(["podman", "rmi", "--all", "--force"], capture_output=True, timeout=120)
        if previous is None:
            os.environ.pop("CONTAINERS_STORAGE_CONF", None)
        else:
            os.environ["CONTAINERS_STORAGE_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)


def containers_labelled(label: str, value: str) -> list[str]:
    """Names of the containers (any state) that carry ``label=value``."""
    result = _run(["podman", "ps", "--all", "--filter", f"label={label}={value}", "--format", "{{.Names}}"])
    return result.stdout.split()
