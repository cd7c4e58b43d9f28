"""The gateway's own work per proxied call, in process: no sockets, no other process, no scheduler noise.

    python -m benchmarks.gateway_percall [--calls 20000] [--rounds 5] [--top 25]

A real ``Gateway`` (caches, discovery, proxy, metering, metrics) with its own HTTP protocol is driven through
in-memory transports: each call is a client's request fed to the server protocol's ``data_received`` and the
instance's answer fed to the upstream connection's, exactly as uvloop would deliver them, on the path a warm
call takes (``Gateway.serve_now``: cached key and route, an idle kept-alive connection). What it reports:

- CPU time per call (``time.process_time``, median of the rounds): the gateway's hot-cache cost; end to end
  (``gateway_overhead``) a call costs two to three times this, with caches cold after the other processes ran;
- Python bytecodes and Python-level calls per call (an opcode trace over a few hundred calls), and the
  functions that execute the most of them.

Deterministic counts make a change's effect visible without the run-to-run spread of the end-to-end figures;
``valgrind --tool=callgrind`` on this module gives instructions (see docs/architecture.md). Every call is
checked: the instance got a signed request and the client a 200 with the instance's body.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from types import FrameType
from typing import Any

from benchmarks.gateway_overhead import ROUTE, USER_KEY
from benchmarks.report import write_results
from chutes.core.edge.limits import EdgeLimits
from chutes.gateway.app import Gateway
from chutes.gateway.config import GatewaySettings
from chutes.gateway.routes import Identity, RouteInfo
from chutes.gateway.server import HttpProtocol, HttpServer
from chutes.gateway.upstream import Connection

INSTANCE = ("127.0.0.1", 9)
# What the runtime answers for a no-op cord (captured from ``python -m chutes.runtime``).
ANSWER = (
    b"HTTP/1.1 200 OK\r\ndate: Fri, 04 Dec 2026 22:15:13 GMT\r\ncontent-type: application/json\r\n"
    b"content-length: 11\r\nx-chutes-conn-used: 1\r\nx-chutes-conn-available: 1023\r\n\r\n"
    b'{"ok":true}'
)


class _Scheduler:
    async def authenticate(self, api_key: str) -> Identity | None:
        return Identity(user_id="u-bench", username="bench") if api_key == USER_KEY else None

    async def route(self, username: str, slug: str) -> RouteInfo | None:
        return RouteInfo.model_validate(ROUTE) if (username, slug) == ("bench", "noop") else None

    async def wake(self, chute_id: str) -> None:
        pass

    async def report_invocations(self, records: bytes, utilisation: dict[str, Any] | None = None) -> None:
        pass


class _Health:
    async def service(self, service: str, **kwargs: Any) -> tuple[str | None, list[dict[str, Any]]]:
        if kwargs.get("index"):  # the blocking query: nothing changes in this benchmark
            await asyncio.sleep(3600)
        entry = {"Service": {"ID": "i1", "Address": INSTANCE[0], "Port": INSTANCE[1]}, "Checks": []}
        return "1", [entry]


class _Transport:
    """An in-memory transport: what is written is kept until the benchmark looks at it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    abort = close


def _request(n: int) -> bytes:
    body = b'{"n": %d}' % n
    return (
        b"POST /bench/noop/noop HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %b\r\nContent-Length: %d\r\n\r\n%b" % (USER_KEY.encode(), len(body), body)
    )


class Bench:
    """One client connection and one kept-alive instance connection through a real gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        server = HttpServer(gateway.handle, EdgeLimits(), gateway.settings.max_body_bytes, fast=gateway.serve_now)
        self.client = _Transport()
        self.proto = HttpProtocol(server)
        self.proto.connection_made(self.client)  # type: ignore[arg-type]
        self.instance = _Transport()
        pool = gateway.proxy.pool
        self.conn = Connection(INSTANCE, 60.0, pool._active)
        self.conn.connection_made(self.instance)  # type: ignore[arg-type]
        self.conn._complete = True  # as after an earlier exchange
        pool.release(self.conn)

    async def warm(self) -> None:
        """One call through the task path: fills the key and route caches and starts the Consul watch."""
        self.proto.data_received(_request(0))
        for _ in range(500):
            await asyncio.sleep(0.002)
            if self.instance.written:
                break
        self.conn.data_received(ANSWER)
        await asyncio.sleep(0.01)
        self._check()

    def call(self, request: bytes) -> None:
        self.client.written.clear()
        self.instance.written.clear()
        self.proto.data_received(request)
        self.conn.data_received(ANSWER)

    def _check(self) -> None:
        sent, answered = b"".join(self.instance.written), b"".join(self.client.written)
        if b"x-chutes-signature: t=" not in sent or not answered.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"the call did not go through: sent {sent[:120]!r}, answered {answered[:120]!r}")
        if not answered.endswith(b'{"ok":true}'):
            raise RuntimeError(f"the instance's body did not reach the client: {answered[-120:]!r}")

    def run(self, requests: list[bytes]) -> float:
        """CPU seconds for ``requests``, each checked."""
        started = time.process_time()
        for request in requests:
            self.call(request)
        spent = time.process_time() - started
        self._check()
        return spent

    def bytecodes(self, requests: list[bytes]) -> tuple[collections.Counter[str], collections.Counter[str]]:
        """Opcodes executed and calls made per Python function over ``requests``."""
        ops: collections.Counter[str] = collections.Counter()
        calls: collections.Counter[str] = collections.Counter()

        def trace(frame: FrameType, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            code = frame.f_code
            name = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}"
            if event == "call":
                calls[name] += 1
            elif event == "opcode":
                ops[name] += 1
            return trace

        sys.settrace(trace)
        try:
            for request in requests:
                self.call(request)
        finally:
            sys.settrace(None)
        self._check()
        return ops, calls


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = GatewaySettings(scheduler_url="http://scheduler.invalid", scheduler_key="cnk_benchmark")
    gateway = Gateway(settings, _Scheduler(), _Health())
    try:
        bench = Bench(gateway)
        await bench.warm()
        requests = [_request(n) for n in range(1, args.calls + 1)]
        bench.run(requests[:1000])  # warm-up
        per_call = [bench.run(requests) / len(requests) * 1e6 for _ in range(args.rounds)]
        traced = requests[: args.traced]
        ops, calls = bench.bytecodes(traced)
    finally:
        await gateway.close()
    n = len(traced)
    ops = collections.Counter({k: v for k, v in ops.items() if not k.startswith("gateway_percall.py:")})
    return {
        "cpu_us_per_call": round(statistics.median(per_call), 2),
        "rounds_cpu_us_per_call": [round(x, 2) for x in per_call],
        "bytecodes_per_call": round(sum(ops.values()) / n, 1),
        "python_calls_per_call": round(sum(calls.values()) / n, 1),
        "top": [
            {"function": name, "bytecodes": round(count / n, 1), "calls": round(calls[name] / n, 2)}
            for name, count in ops.most_common(args.top)
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--traced", type=int, default=300, help="calls under the opcode trace")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    report = {
        "benchmark": "gateway_percall",
        "target": "none (diagnostic): the gateway's own work per warm call, in process",
        "calls": args.calls,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
        **result,
    }
    lines = [
        "# Gateway work per call, in process (no sockets): a warm call through serve_now",
        "",
        f"CPU per call {result['cpu_us_per_call']} µs (median of {args.rounds} rounds of {args.calls} calls, "
        f"hot caches; rounds {result['rounds_cpu_us_per_call']}); {result['bytecodes_per_call']} Python "
        f"bytecodes and {result['python_calls_per_call']} Python calls a call (opcode trace over {args.traced}).",
        "",
        "| function | bytecodes a call | calls a call |",
        "|---|---:|---:|",
        *(f"| {t['function']} | {t['bytecodes']} | {t['calls']} |" for t in result["top"]),
    ]
    write_results("gateway_percall", report, lines)
    return report


if __name__ == "__main__":
    main()
