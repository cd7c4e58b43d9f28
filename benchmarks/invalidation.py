"""Access changes: from the API call that makes them to their effect on calls through the gateway.

    python -m benchmarks.invalidation [--rounds 30] [--ttl-rounds 2]

On the embedded stack (``chutes dev``'s parts, defaults), a copy of examples/hello.py runs one instance and a
second user, bob, calls it through the gateway back to back. Each round makes three changes through the API
(as ``chutes chutes share``, ``chutes chutes share --remove`` and ``chutes keys delete`` do) and times, on
one clock, from the moment the API call returns to the first call that shows the change:

- share → bob's call answered 200 (it was 404);
- unshare → bob's call refused with 404;
- key deleted → a call with that key refused with 401 (it was 200).

The scheduler publishes each change in Consul KV and the gateway follows it with a blocking query
(docs/architecture.md, "Access changes"); side by side, a second gateway started with
``--invalidation-key ''`` shows what the TTL caches alone give (route TTL 10 s, key TTL 30 s).
Target from the issue: effective within 1 s (p99 reported, not asserted). Loopback only. Writes JSON and
markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks._devstack import REPO, Embedded, chute_copy, distribution, embedded_stack
from benchmarks.report import machine, write_results
from chutes.dev.process import read_port_file
from tests.support.polling import poll_until

TARGET_S = 1.0
KINDS = ("share", "unshare", "key_deleted")


def effect_after(probe: Callable[[], int], expected: int, timeout: float) -> tuple[float, int]:
    """Seconds from now until ``probe()`` answers ``expected``, and how many calls that took."""
    start = time.monotonic()
    calls = 0
    while True:
        calls += 1
        if probe() == expected:
            return time.monotonic() - start, calls
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no {expected} after {timeout} s")


def ttl_only_gateway(es: Embedded, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A second gateway that does not follow the notices (TTL caches only), for the side-by-side figure."""
    port_file = tmp / "ttl-gateway.port"
    argv = [
        str(Path(sys.executable).parent / "chutes-gateway"), "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(port_file), "--scheduler-url", es.info.api_url, "--consul-addr", es.info.consul_addr,
        "--invalidation-key", "", "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "CHUTES_GATEWAY_KEY": es.admin_key}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = poll_until(lambda: read_port_file(port_file), "the TTL-only gateway listening", 30)
    url = f"http://127.0.0.1:{port}"
    poll_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, "the TTL-only gateway", 30)
    return proc, url


def one_round(es: Embedded, gateway_url: str, bob: str, timeout: float) -> dict[str, float]:
    chute_url = f"{gateway_url}/{es.info.username}/hello-inv/hello"
    with httpx.Client(timeout=30) as http, es.client() as owner:

        def status(key: str) -> int:
            return http.post(chute_url, json={"name": "b"}, headers={"Authorization": f"Bearer {key}"}).status_code

        assert status(bob) == 404, "bob must start without access"
        owner.share_chute("hello-inv", "bob")
        share, _ = effect_after(lambda: status(bob), 200, timeout)
        owner.unshare_chute("hello-inv", "bob")
        unshare, _ = effect_after(lambda: status(bob), 404, timeout)
        spare = owner.create_key("bench")
        assert status(str(spare["api_key"])) == 200
        owner.delete_key(str(spare["key_id"]))
        revoked, _ = effect_after(lambda: status(str(spare["api_key"])), 401, timeout)
    return {"share": share, "unshare": unshare, "key_deleted": revoked}


def run(rounds: int, ttl_rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="invalidation-") as tmp, embedded_stack() as es:
        ref = chute_copy(Path(tmp), REPO / "examples" / "hello.py", "hello", "hello-inv")
        with es.client(timeout=120) as client:
            chute_id = str(client.deploy(ref)["chute_id"])
        poll_until(lambda: es.consul_passing(chute_id), "the instance passing", 120, 0.05)
        with es.client(es.admin_key) as admin:
            bob = str(admin.create_user("bob")["api_key"])
        pushed = [one_round(es, es.info.gateway_url, bob, timeout=30) for _ in range(rounds)]
        ttl_proc, ttl_url = ttl_only_gateway(es, Path(tmp))
        try:
            ttl = [one_round(es, ttl_url, bob, timeout=60) for _ in range(ttl_rounds)]
        finally:
            ttl_proc.terminate()
            ttl_proc.wait(20)
    return {
        "benchmark": "invalidation",
        "machine": machine(),
        "target": f"an access change takes effect at the gateway within {TARGET_S:g} s",
        "rounds": rounds,
        "pushed": {kind: distribution([r[kind] for r in pushed]) for kind in KINDS},
        "ttl_only": {kind: distribution([r[kind] for r in ttl]) for kind in KINDS} if ttl else {},
        "met": all(distribution([r[k] for r in pushed])["p99"] < TARGET_S for k in KINDS),
    }


def markdown(report: dict[str, Any]) -> list[str]:
    labels = {"share": "share → call allowed", "unshare": "unshare → 404", "key_deleted": "key deleted → 401"}
    lines = [
        "# Access changes: API call → effect at the gateway",
        "",
        f"Target: {report['target']}. {report['rounds']} rounds of each change through the API, timed from the "
        "API call's return to the first call through the gateway showing it (calls back to back, a few ms each).",
        "",
        "| change | pushed p50 | pushed p99 | pushed max | TTL caches only p50 (max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, label in labels.items():
        pushed = report["pushed"][kind]
        ttl = report["ttl_only"].get(kind)
        shown = f"{ttl['p50']} ({ttl['max']})" if ttl else "—"
        lines.append(f"| {label} | {pushed['p50']} | {pushed['p99']} | {pushed['max']} | {shown} |")
    lines += [
        "",
        "Seconds. Pushed: the scheduler appends the change to a notice log in Consul KV before answering, and "
        "the gateway's blocking query on it returns at once and drops exactly the named cache entries. TTL "
        "caches only: a second gateway started with `--invalidation-key ''` (route TTL 10 s, API key TTL 30 s; "
        "the changes here wait for the route TTL or the key TTL).",
    ]
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--ttl-rounds", type=int, default=2, help="rounds on the TTL-only gateway (slow: ~45 s each)")
    args = parser.parse_args(argv)
    report = run(args.rounds, args.ttl_rounds)
    write_results("invalidation", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
