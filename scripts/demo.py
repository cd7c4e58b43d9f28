"""``make demo``: the whole platform on this machine, end to end, in about a minute.

1. starts ``chutes dev`` in the background (simulated GPU nodes, a temporary data directory, and a config
   file of its own, so ``~/.chutes`` is left alone);
2. deploys ``examples/hello.py`` with ``chutes deploy`` (live progress: placement, node, GPUs);
3. calls both cords through the gateway with ``chutes invoke``: ``/hello`` (JSON) and ``/count`` (streamed);
4. shows the instance's logs, prints what to try next, and stops the stack (no process left behind).

It says whether instances can run in containers here (``chutes dev --containers auto``: podman and buildah
installed) and how the demo's instance runs: in a podman container of its built image, or as a host process
(raw_exec) when the chute has no built image on this stack, which is the case while images are not built by
the platform. Without podman everything runs as host processes; the demo works the same either way.

Any failing step stops the demo with the relevant logs and a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in ' {}"') else arg


def start_stack(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, object], Path]:
    ready = workdir / "ready.json"
    log = workdir / "chutes-dev.log"
    argv = [
        CHUTES,
        "dev",
        "--simulate",
        "--builds",
        "off",
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


def containers_line(log: Path) -> str:
    """What `chutes dev` said about containers (its line "containers: on (podman 4.3.1): ...")."""
    for line in log.read_text(errors="replace").splitlines():
        if line.strip().startswith("containers:"):
            return line.strip()
    return "containers: (not reported)"


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
            "runs as a host process (raw_exec): containers are on, but this stack has no built image of the "
            "chute's Image (the platform does not build images in this version), and only chutes with a built "
            "image run in containers"
        )
    return "runs as a host process (raw_exec): containers are off on this machine (see the line above)"


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
        say("instance logs (chutes logs hello)")
        subprocess.run([CHUTES, "logs", "hello"], env=env, cwd=ROOT, timeout=30, check=False)


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
        say("1/4  Start the platform on this machine: devcluster (Nomad + Consul APIs), agents, scheduler, gateway")
        proc, info, log = start_stack(workdir, env)
        print(f"     scheduler {info['api_url']}   gateway {info['gateway_url']}   user {info['username']}")
        print(f"     {containers_line(log)}")
        print(f"     up in {time.monotonic() - started:.1f}s")
        run(["nodes"], env)

        say("2/4  Deploy examples/hello.py (placement on a node whose GPUs match its NodeSelector)")
        run(["deploy", "examples/hello.py:chute", "--timeout", "90"], env)
        print(f"     hello {how_it_runs(info, env, 'hello')}")

        say("3/4  Call both cords through the gateway")
        run(["invoke", "hello", "/hello", "-d", '{"name": "Ada"}'], env)
        print("     (streamed, one Server-Sent Event frame per line:)")
        run(["invoke", "hello", "/count", "-d", '{"to": 5, "delay": 0.1}', "--stream"], env)

        say("4/4  Look around")
        run(["chutes", "list"], env)
        run(["logs", "hello", "--stream", "stderr"], env)

        say("Try more (with `chutes dev` running in another terminal)")
        print(
            "  chutes dev                                     # keep the stack running (Ctrl-C stops it)\n"
            "  chutes deploy examples/hello.py:chute          # deploy, with live progress\n"
            '  chutes invoke hello /hello -d \'{"name": "you"}\'\n'
            "  chutes invoke hello /count -d '{\"to\": 10}' --stream\n"
            "  chutes chutes get hello ; chutes logs hello -f ; chutes nodes ; chutes usage\n"
            "  chutes deploy examples/job.py:chute && chutes jobs run primes count_primes --input '{\"limit\": 1000}'\n"
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
