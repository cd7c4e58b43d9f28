"""``benchmarks/gateway_percall.py`` drives a real gateway through in-memory transports: it must keep measuring
the warm path as the gateway changes (it checks every call it makes; a harness that fell back to the task path
would measure something else)."""

from __future__ import annotations

import argparse

from benchmarks.gateway_percall import measure


async def test_the_in_process_benchmark_proxies_every_call_on_the_warm_path() -> None:
    args = argparse.Namespace(calls=300, rounds=2, traced=20, top=60)
    result = await measure(args)  # raises if a call did not reach the instance signed or the client as a 200
    calls = {t["function"]: t["calls"] for t in result["top"]}
    assert calls["app.py:Gateway.serve_now"] == 1.0  # every call served from the read callbacks...
    assert calls["proxy.py:Proxy.start"] == 1.0
    assert "proxy.py:Proxy.forward" not in calls  # ...none handed to a task
    assert result["cpu_us_per_call"] > 0 and result["bytecodes_per_call"] > 500
