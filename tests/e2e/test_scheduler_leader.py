"""Two schedulers on one store and one Consul: exactly one leads; when it dies the other takes over."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.polling import poll_until
from tests.support.stack import scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TTL_S = 3.0


def test_one_leader_and_takeover_within_the_session_ttl(tmp_path: Path) -> None:
    with scheduler_stack(tmp_path, nodes=("gpu-b=a100:4",)) as st:
        a = st.scheduler("sched-a", CHUTES_LEADER_TTL=f"{TTL_S:g}")
        b = st.scheduler("sched-b", CHUTES_LEADER_TTL=f"{TTL_S:g}")
        a.start()
        b.start()
        a.wait_healthy()
        b.wait_healthy()
        poll_until(lambda: a.leads() or b.leads(), "a leader", 30)
        # Exactly one leads, and it stays that way.
        for _ in range(10):
            assert [a.leads(), b.leads()].count(True) == 1
            time.sleep(0.2)
        leader, follower = (a, b) if a.leads() else (b, a)
        _, item = st.dc.consul().kv.get("chutes/scheduler/leader")
        assert item["Value"].decode() == leader.url and item["Session"]

        leader.kill()
        killed_at = time.monotonic()
        poll_until(follower.leads, "the follower to take over", TTL_S * 4, interval=0.05)
        takeover = time.monotonic() - killed_at
        print(f"takeover after SIGKILL of the leader: {takeover:.2f}s (session TTL {TTL_S:g}s)")
        assert takeover <= TTL_S + 1.0, takeover
        _, item = st.dc.consul().kv.get("chutes/scheduler/leader")
        assert item["Value"].decode() == follower.url

        # The old leader comes back as a follower.
        leader.start()
        leader.wait_healthy()
        time.sleep(1.0)
        assert follower.leads() and not leader.leads()
