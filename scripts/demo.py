"""``make demo``: the whole platform on this machine, end to end, in one to two minutes.

1. starts ``chutes dev`` in the background (simulated GPU nodes, a temporary data directory, and a config
   file of its own, so ``~/.chutes`` is left alone), and says whether image builds and containers are on;
2. deploys ``examples/hello.py`` with ``chutes deploy --build off`` (live progress: placement, node, GPUs): its
   Image starts FROM ``python:3.12-slim``, which a machine without a public registry cannot pull, so it runs
   as a host process (raw_exec) with the platform's Python;
3. calls both cords through the gateway with ``chutes invoke``: ``/hello`` (JSON) and ``/count`` (streamed);
4. where podman and buildah are installed and ``make base-image`` has built ``localhost/chutes-base:bookworm``:
   builds ``examples/own_image.py`` on the platform (``chutes build --wait``, live build output; a second
   run of the demo is a cache hit in buildah's layers), deploys it, and calls its cord, whose answer proves it
   ran inside its own image: the version of a package only that image has, and the container's hostname next
   to this host's. Elsewhere this step is skipped with one line saying why;
5. shows the instances' logs, prints what to try next, and stops the stack (no process or container left).

Any failing step stops the demo with the relevant logs and a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from chutes.dev.process import session_with_parent_death

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHUTES = str(BIN / "chutes")
START_TIMEOUT = 120.0
STEP_TIMEOUT = 120.0
BUILD_TIMEOUT = 900.0  # a cold build: the base image's layers, pip install, the runtime layer (30-70 s here)
BASE_IMAGE = "localhost/chutes-base:bookworm"  # what examples/own_image.py builds FROM (`make base-image`)
OWN_IMAGE = "examples/own_image.py:chute"


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def run(args: list[str], env: dict[str, str], *, timeout: float = STEP_TIMEOUT) -> str:
    """Run one ``chutes`` command, echoing it and its output; raise DemoFailed if it fails."""
    print("$ chutes " + " ".join(_quote(a) for a in args), flush=True)
    try:
        proc = subprocess.run(
            [CHUTES, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DemoFailed(f"`chutes {args[0]}` did not finish within {timeout:.0f}s") from exc
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    sys.stdout.flush()
    if proc.returncode != 0:
        raise DemoFailed(f"`chutes {' '.join(args[:2])}` failed with exit status {proc.returncode}")
    return proc.stdout


def run_live(args: list[str], env: dict[str, str], *, timeout: float) -> None:
    """Run one ``chutes`` command with its output going straight to the terminal (a build's lines as they come)."""
    print("$ chutes " + " ".join(_quote(a) for a in args), flush=True)
    try:
        proc = subprocess.run([CHUTES, *args], env=env, cwd=ROOT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DemoFailed(f"`chutes {args[0]}` did not finish within {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise DemoFailed(f"`chutes {' '.join(args[:2])}` failed with exit status {proc.returncode}")


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in ' {}"') else arg


def start_stack(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, object], Path]:
    ready = workdir / "ready.json"
    log = workdir / "chutes-dev.log"
    argv = [
        CHUTES,
        "dev",
        "--simulate",
        "--data-dir",
        str(workdir / "data"),
        "--ready-file",
        str(ready),
    ]
    print("$ chutes dev --simulate --data-dir ... --ready-file ...   (in the background)", flush=True)
    with log.open("wb") as out:
        # Its own process group, and SIGTERM if this script dies (even by SIGKILL), so no stack outlives the demo.
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=session_with_parent_death
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None:
            raise DemoFailed(f"`chutes dev` exited with status {proc.returncode} before the stack was up")
        if time.monotonic() > deadline:
            raise DemoFailed(f"the stack was not up after {START_TIMEOUT:.0f}s")
        time.sleep(0.2)
    info = json.loads(ready.read_text())
    return proc, info, log


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C does for a terminal user; `chutes dev` stops everything
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        print("`chutes dev` did not stop within 60 s; killing it", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def containers_conf(env: dict[str, str]) -> None:
    """Point podman at the project's settings (scripts/containers.conf: runc, rlimits) unless the user set some."""
    if not env.get("CONTAINERS_CONF") and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(ROOT / "scripts" / "containers.conf")


def dev_line(log: Path, topic: str) -> str:
    """What `chutes dev` said about ``topic`` (its lines "containers: on (podman 4.3.1): ...", "builds: on ...")."""
    for line in log.read_text(errors="replace").splitlines():
        if line.strip().startswith(f"{topic}:"):
            return line.strip()
    return f"{topic}: (not reported)"


def own_image_unavailable(info: dict[str, object], log: Path, env: dict[str, str]) -> str | None:
    """Why a chute with its own Image cannot be built and run in a container on this stack, or None."""
    if not info.get("builds"):
        return dev_line(log, "builds")
    if not info.get("containers"):
        return dev_line(log, "containers")
    exists = subprocess.run(["podman", "image", "exists", BASE_IMAGE], env=env, capture_output=True, timeout=60)
    if exists.returncode != 0:
        return f"the base image {BASE_IMAGE} is not in local storage (`sudo make base-image` builds it)"
    return None


def how_it_runs(info: dict[str, object], env: dict[str, str], chute: str) -> str:
    """One line: does the chute's instance run in a container (of which image) or as a host process, and why."""
    got = subprocess.run(
        [CHUTES, "chutes", "get", chute, "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    job_id = json.loads(got.stdout)["nomad_job_id"] if got.returncode == 0 else f"chute-{chute}"
    job = httpx.get(
        f"{info['nomad_addr']}/v1/job/{job_id}", headers={"X-Nomad-Token": str(info["nomad_token"])}, timeout=10
    ).json()
    task = job["TaskGroups"][0]["Tasks"][0]
    if task["Driver"] == "docker":
        return f"runs in a podman container of its built image {task['Config']['image']} (docker driver)"
    if info.get("containers"):
        return (
            "runs as a host process (raw_exec): it was deployed without building its image (--build off), and "
            "only chutes with a built image run in containers"
        )
    return "runs as a host process (raw_exec): containers are off on this machine (see the line above)"


def own_image_step(info: dict[str, object], env: dict[str, str]) -> None:
    """Build examples/own_image.py on the platform, deploy it, and show that its answer came from its container."""
    started = time.monotonic()
    run_live(["build", OWN_IMAGE, "--wait"], env, timeout=BUILD_TIMEOUT)
    print(f"     built (or found built) in {time.monotonic() - started:.1f}s")
    run(["deploy", OWN_IMAGE, "--timeout", "240"], env, timeout=300)
    print(f"     own-image {how_it_runs(info, env, 'own-image')}")
    out = run(["invoke", "own-image", "/moo", "-d", '{"text": "I run in my own image"}'], env)
    answer = json.loads(out)
    here = socket.gethostname()
    print(f"     package: {answer['package']}  (installed only in the image: the platform's Python does not have it)")
    print(f"     hostname: {answer['hostname']} (the container)  vs  {here} (this host)")
    if answer["hostname"] == here:
        raise DemoFailed("own-image answered with this host's hostname: it did not run in its container")


def show_logs(workdir: Path, env: dict[str, str]) -> None:
    """What went wrong: `chutes dev`'s output, the tail of each daemon's log, the instance's log."""
    dev_log = workdir / "chutes-dev.log"
    if dev_log.exists():
        say("chutes dev output")
        print(dev_log.read_text(errors="replace")[-4000:])
    for path in sorted((workdir / "data" / "logs").glob("*.log")):
        say(f"last lines of {path.name}")
        print("\n".join(path.read_text(errors="replace").splitlines()[-25:]))
    if (workdir / "ready.json").exists():
        for chute in ("hello", "own-image"):
            say(f"instance logs (chutes logs {chute})")
            subprocess.run([CHUTES, "logs", chute], env=env, cwd=ROOT, timeout=30, check=False)


def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="chutes-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env["CHUTES_CONFIG"] = str(workdir / "config.ini")
    env["COLUMNS"] = env.get("COLUMNS", "120")
    containers_conf(env)
    proc: subprocess.Popen[bytes] | None = None
    failed = False
    try:
        say("1/5  Start the platform on this machine: devcluster (Nomad + Consul APIs), agents, scheduler, gateway")
        proc, info, log = start_stack(workdir, env)
        print(f"     scheduler {info['api_url']}   gateway {info['gateway_url']}   user {info['username']}")
        print(f"     {dev_line(log, 'containers')}")
        print(f"     {dev_line(log, 'builds')}")
        print(f"     up in {time.monotonic() - started:.1f}s")
        run(["nodes"], env)

        say("2/5  Deploy examples/hello.py (placement on a node whose GPUs match its NodeSelector)")
        print("     --build off: its Image starts FROM python:3.12-slim, which needs a public registry to pull")
        run(["deploy", "examples/hello.py:chute", "--build", "off", "--timeout", "90"], env)
        print(f"     hello {how_it_runs(info, env, 'hello')}")

        say("3/5  Call both cords through the gateway")
        run(["invoke", "hello", "/hello", "-d", '{"name": "Ada"}'], env)
        print("     (streamed, one Server-Sent Event frame per line:)")
        run(["invoke", "hello", "/count", "-d", '{"to": 5, "delay": 0.1}', "--stream"], env)

        say("4/5  A chute with its own image: build examples/own_image.py on the platform, run it in a container")
        why_not = own_image_unavailable(info, log, env)
        if why_not is None:
            own_image_step(info, env)
        else:
            print(f"     skipped (this step needs podman, buildah and {BASE_IMAGE}): {why_not}")

        say("5/5  Look around")
        run(["chutes", "list"], env)
        if info.get("builds"):
            run(["images", "list"], env)
        run(["logs", "hello", "--stream", "stderr"], env)

        say("Try more (with `chutes dev` running in another terminal)")
        print(
            "  chutes dev                                     # keep the stack running (Ctrl-C stops it)\n"
            "  chutes deploy examples/hello.py:chute --build off   # deploy, with live progress\n"
            '  chutes invoke hello /hello -d \'{"name": "you"}\'\n'
            "  chutes invoke hello /count -d '{\"to\": 10}' --stream\n"
            "  chutes chutes get hello ; chutes logs hello -f ; chutes nodes ; chutes usage\n"
            "  chutes deploy examples/job.py:chute && chutes jobs run primes count_primes --input '{\"limit\": 1000}'\n"
            "  chutes build examples/own_image.py:chute --wait && chutes images logs own-image:0.1   # builds on\n"
            "  docs: README.md, docs/architecture.md, docs/cluster.md (a real Nomad + Consul cluster)"
        )
    except (DemoFailed, OSError, ValueError, KeyError, httpx.HTTPError) as exc:
        failed = True
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr, flush=True)
        show_logs(workdir, env)
    except KeyboardInterrupt:
        failed = True
        print("\ninterrupted", file=sys.stderr)
    finally:
        # Stop first: printing can fail (a closed pipe) and must not leave the stack running.
        if proc is not None:
            stop_stack(proc)
            with contextlib.suppress(OSError):
                say(f"Stopped the platform (exit status {proc.returncode})")
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                print(f"logs kept in {workdir}", file=sys.stderr)
    if not failed:
        say(f"Demo done in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
