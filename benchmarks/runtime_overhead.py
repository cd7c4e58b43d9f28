"""Runtime overhead: a no-op cord through ``chutes.runtime`` vs a bare FastAPI app serving the same function.

    python -m benchmarks.runtime_overhead [--requests 20000] [--clients 16] [--rounds 3]

Both servers run side by side in this one run, each in its own process on 127.0.0.1 with the same uvicorn
settings (uvloop + httptools when installed, one worker, no access log). The load generator (aiohttp on
uvloop, in this process) keeps ``--clients`` requests in flight until ``--requests`` have been answered,
after a warm-up; rounds alternate between the servers so that drift on a shared machine hits both alike, and
the median round is reported. With two CPUs or more, the servers share CPU 0 and the load generator gets the
others, so that the two never compete for one core. Scenarios:

- ``noop``: ``POST /noop`` with no input, answering ``{"ok": true}``;
- ``echo``: ``POST /echo`` with ``{"text": ...}`` validated by pydantic on both sides, echoed back;
- ``echo signed``: the same call to a runtime that is not in ``--dev`` mode, every request signed
  (``X-Chutes-Signature``, a distinct body each time so no signature repeats) and checked, replay cache included;
- ``depends``: ``POST /depends`` whose one parameter is a FastAPI ``Depends`` reading a header, on both sides
  (the runtime solves it with FastAPI's own ``solve_dependencies``; issue 14). Reported, no target.

Figures: requests/s, p50/p99 latency, and the server's CPU time per request (user+system of the server
process over the measured window, from /proc): throughput on a 2-core machine is partly bounded by the load
generator, CPU per request is not. Target from issue 4: the runtime reaches at least 80% of the bare app's
throughput. Loopback only, bounded in requests and time. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._proc import cpu_seconds
from benchmarks.report import table, write_results
from chutes.core.signing import SIGNATURE_HEADER, sign

REPO = Path(__file__).resolve().parent.parent
SECRET = "benchmark-secret"
TIME_CAP_SECONDS = 120  # per measured round: the load stops here even if requests remain

CHUTE_SOURCE = """
from fastapi import Depends, Header

from chutes.chute import Chute

chute = Chute(username="bench", name="noop", image="python:3.12", concurrency={concurrency})


@chute.cord()
async def noop(self) -> dict:
    return {{"ok": True}}


@chute.cord()
async def echo(self, text: str) -> dict:
    return {{"text": text}}


def caller(user_agent: str | None = Header(None)) -> str:
    return user_agent or ""


@chute.cord()
async def depends(self, who: str = Depends(caller)) -> dict:
    return {{"ok": bool(who)}}
"""

BARE_SOURCE = """
import sys

import uvicorn
from fastapi import Depends, FastAPI, Header
from pydantic import BaseModel

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class EchoInput(BaseModel):
    text: str


@app.post("/noop")
async def noop() -> dict:
    return {"ok": True}


@app.post("/echo")
async def echo(data: EchoInput) -> dict:
    return {"text": data.text}


def caller(user_agent: str | None = Header(None)) -> str:
    return user_agent or ""


@app.post("/depends")
async def depends(who: str = Depends(caller)) -> dict:
    return {"ok": bool(who)}


if __name__ == "__main__":
    import asyncio

    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="auto", http="auto", access_log=False,
                            log_level="warning", server_header=False)
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        with open(sys.argv[1], "w") as handle:
            handle.write(str(server.servers[0].sockets[0].getsockname()[1]))
        await task

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())
"""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    signed: bool

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)


def _wait_port(path: Path, proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def start_servers(workdir: Path, concurrency: int) -> Iterator[dict[str, Server]]:
    (workdir / "bench_chute.py").write_text(CHUTE_SOURCE.format(concurrency=concurrency))
    (workdir / "bare_app.py").write_text(BARE_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "NOMAD_"))}
    runtime = [sys.executable, "-m", "chutes.runtime", f"{workdir / 'bench_chute.py'}:chute", "--port", "0"]
    commands = {
        "bare FastAPI": ([sys.executable, str(workdir / "bare_app.py")], False),
        "chutes runtime": ([*runtime, "--dev", "--log-level", "warning"], False),
        "chutes runtime signed": ([*runtime, "--invoke-secret", SECRET, "--log-level", "warning"], True),
    }
    servers: dict[str, Server] = {}
    try:
        for name, (command, signed) in commands.items():
            port_file = workdir / f"{name.replace(' ', '_')}.port"
            log = workdir / f"{name.replace(' ', '_')}.log"
            args = [*command, str(port_file)] if name == "bare FastAPI" else [*command, "--port-file", str(port_file)]
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, preexec_fn=_pin_server
                )
            servers[name] = Server(name, proc, "", signed)
            servers[name].url = f"http://127.0.0.1:{_wait_port(port_file, proc, log)}"
        yield servers
    finally:
        for server in servers.values():
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in servers.values():
            try:
                server.proc.wait(15)
            except subprocess.TimeoutExpired:
                server.proc.kill()


def _cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def _pin_server() -> None:
    cpus = sorted(_cpus())
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})


def _pin_load_generator() -> None:
    cpus = sorted(_cpus())
    if len(cpus) >= 2:
        os.sched_setaffinity(0, set(cpus[1:]))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def load(server: Server, path: str, requests: int, clients: int, with_body: bool) -> dict[str, Any]:
    """``requests`` calls with ``clients`` in flight; latencies in ms, failures counted by status."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    issued = 0
    url = server.url + path
    deadline = time.monotonic() + TIME_CAP_SECONDS
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.monotonic() < deadline:
                n = issued
                issued += 1
                body = json.dumps({"text": f"hello {n}"}).encode() if with_body else b""
                headers = {"content-type": "application/json"}
                if server.signed:
                    headers[SIGNATURE_HEADER] = sign(SECRET, "POST", path, body)
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    failures[str(status)] = failures.get(str(status), 0) + 1

        cpu_before = server.cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu_before
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "server_cpu_us_per_request": cpu / max(len(latencies), 1) * 1e6,
        "failures": failures,
    }


async def scenario(
    servers: list[Server], path: str, with_body: bool, requests: int, clients: int, rounds: int
) -> dict[str, dict[str, Any]]:
    for server in servers:  # warm-up: connections, imports, caches
        await load(server, path, min(2000, requests // 5), clients, with_body)
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for round_no in range(rounds):
        order = servers if round_no % 2 == 0 else list(reversed(servers))
        for server in order:
            runs[server.name].append(await load(server, path, requests, clients, with_body))
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
        failures: dict[str, int] = {}
        for r in results:
            for status, count in r["failures"].items():
                failures[status] = failures.get(status, 0) + count
        summary[name] = {
            "rps": round(median["rps"], 1),
            "p50_ms": round(median["p50_ms"], 3),
            "p99_ms": round(median["p99_ms"], 3),
            "server_cpu_us_per_request": round(statistics.median(r["server_cpu_us_per_request"] for r in results), 1),
            "rounds_rps": [round(r["rps"], 1) for r in results],
            "failures": failures,
        }
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None

    rows: list[dict[str, Any]] = []
    _pin_load_generator()
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp, start_servers(Path(tmp), 2 * args.clients) as srv:
        bare, runtime, signed = srv["bare FastAPI"], srv["chutes runtime"], srv["chutes runtime signed"]
        plan = [
            ("noop", "/noop", False, [bare, runtime]),
            ("echo", "/echo", True, [bare, runtime, signed]),
            ("depends", "/depends", False, [bare, runtime]),
        ]
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            for label, path, with_body, servers in plan:
                summary = runner.run(scenario(servers, path, with_body, args.requests, args.clients, args.rounds))
                base = summary[bare.name]
                for name, figures in summary.items():
                    rows.append(
                        {
                            "scenario": label,
                            "server": name,
                            **figures,
                            "throughput_vs_bare": round(figures["rps"] / base["rps"], 3),
                            "cpu_per_request_vs_bare": round(
                                figures["server_cpu_us_per_request"] / base["server_cpu_us_per_request"], 3
                            ),
                        }
                    )
    noop_ratio = next(r["throughput_vs_bare"] for r in rows if r["scenario"] == "noop" and r["server"] == runtime.name)
    depends_ratio = next(
        r["throughput_vs_bare"] for r in rows if r["scenario"] == "depends" and r["server"] == runtime.name
    )
    report = {
        "benchmark": "runtime_overhead",
        "target": "runtime throughput >= 80% of the bare FastAPI app (no-op cord)",
        "met": noop_ratio >= 0.8,
        "noop_throughput_ratio": noop_ratio,
        "depends_throughput_ratio": depends_ratio,
        "requests_per_round": args.requests,
        "clients": args.clients,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": rows,
    }
    lines = [
        "# Runtime overhead: no-op cord vs bare FastAPI",
        "",
        f"Target: {report['target']} — {'met' if report['met'] else 'NOT met'} (ratio {noop_ratio}); "
        f"a cord with one Depends: {depends_ratio} of the same route in bare FastAPI. "
        f"{args.requests} requests per round, {args.clients} concurrent clients, median of {args.rounds} rounds; "
        f"Python {report['python']}, {report['cpus']} CPUs, loopback, load generator on the same machine.",
        "",
    ]
    columns = ("scenario", "server", "rps", "p50_ms", "p99_ms", "server_cpu_us_per_request", "throughput_vs_bare",
               "cpu_per_request_vs_bare")  # fmt: skip
    lines += table(
        ("scenario", "server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "throughput vs bare",
         "CPU/req vs bare", "non-200"),
        ([*(r[c] for c in columns), r["failures"] or "-"] for r in rows),
        "llrrrrrrl",
    )  # fmt: skip
    write_results("runtime_overhead", report, lines)
    return report


if __name__ == "__main__":
    main()
