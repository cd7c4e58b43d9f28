"""Leader election against a devcluster: one leader, hand-over on stop, take-over after a crash within the
session TTL, and stepping down (work stopped) when the session or Consul is lost."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import consul.aio
import pytest

from chutes.scheduler.leader import LEADER_KEY, LeaderElector, _within, current_leader
from tests.support.devcluster import DevclusterHandle, devcluster

pytestmark = pytest.mark.timeout(60)

TTL_S = 2.0
LOCK_DELAY_S = 0.5


@pytest.fixture
def dc() -> Iterator[DevclusterHandle]:
    # Consul's minimum session TTL is 10 s; the devcluster allows shorter ones so that these tests are quick.
    with devcluster(nodes=["gpu-a=l4:1"], local_node=False, extra_args=["--session-min-ttl", "1s"]) as handle:
        yield handle


def aio_consul(dc: DevclusterHandle) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # py-consul's aiohttp connector arguments
        return consul.aio.Consul(host="127.0.0.1", port=dc.consul_port)


class Worker:
    """The leader's work: ticks while leading, started by on_gain and stopped by on_loss."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task: asyncio.Task[None] | None = None
        self.gains = 0
        self.losses = 0

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.02)

    def on_gain(self) -> None:
        self.gains += 1
        self.task = asyncio.create_task(self._tick())

    async def on_loss(self) -> None:
        self.losses += 1
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    @property
    def working(self) -> bool:
        return self.task is not None and not self.task.done()


class Running:
    def __init__(self, elector: LeaderElector, worker: Worker, task: asyncio.Task[None], client: Any) -> None:
        self.elector, self.worker, self.task, self.client = elector, worker, task, client

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def electors(dc: DevclusterHandle) -> AsyncIterator[Any]:
    started: list[Running] = []

    def start(name: str, **kwargs: Any) -> Running:
        client = aio_consul(dc)
        worker = Worker()
        options: dict[str, Any] = {"ttl_s": TTL_S, "lock_delay_s": LOCK_DELAY_S, "wait_s": 5, "retry_s": 0.1}
        options.update(kwargs)
        elector = LeaderElector(
            client, identity=name, on_gain=worker.on_gain, on_loss=worker.on_loss, max_backoff_s=0.5, **options
        )
        running = Running(elector, worker, asyncio.create_task(elector.run()), client)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()
        await running.client.close()


async def test_exactly_one_of_two_leads_and_the_other_takes_over_on_stop(electors: Any, dc: DevclusterHandle) -> None:
    a, b = electors("sched-a"), electors("sched-b")
    await asyncio.wait_for(
        asyncio.wait([asyncio.create_task(a.elector.wait_leading()), asyncio.create_task(b.elector.wait_leading())],
                     return_when=asyncio.FIRST_COMPLETED),
        10,
    )  # fmt: skip
    # For a while (longer than a TTL, so renewals happen): exactly one leads and only its work runs.
    deadline = time.monotonic() + TTL_S * 1.5
    while time.monotonic() < deadline:
        assert a.elector.is_leader != b.elector.is_leader
        assert a.worker.working == a.elector.is_leader and b.worker.working == b.elector.is_leader
        await asyncio.sleep(0.05)
    leader, follower = (a, b) if a.elector.is_leader else (b, a)
    assert await current_leader(leader.client) == leader.elector.identity
    assert await follower.elector.current_leader() == leader.elector.identity

    # A graceful stop releases the key: the other leads at once, well within a TTL, no lock-delay.
    started = time.monotonic()
    await leader.stop()
    assert leader.worker.losses == 1 and not leader.worker.working
    await asyncio.wait_for(follower.elector.wait_leading(), TTL_S)
    assert time.monotonic() - started < TTL_S / 2
    assert follower.worker.working
    assert await current_leader(follower.client) == follower.elector.identity


_CRASHER = textwrap.dedent(
    """
    import asyncio, sys, warnings
    import consul.aio
    from chutes.scheduler.leader import LeaderElector

    async def main() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.aio.Consul(host="127.0.0.1", port=int(sys.argv[1]))
        elector = LeaderElector(client, identity="crasher", ttl_s=float(sys.argv[2]), lock_delay_s=float(sys.argv[3]),
                                on_gain=lambda: print("LEADING", flush=True))
        await elector.run()

    asyncio.run(main())
    """
)


async def test_a_crashed_leader_is_replaced_within_the_session_ttl(
    electors: Any, dc: DevclusterHandle, tmp_path: Path
) -> None:
    log = (tmp_path / "crasher.log").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(dc.consul_port), str(TTL_S), str(LOCK_DELAY_S)],
        stdout=subprocess.PIPE,
        stderr=log,
    )  # no children of its own: no process group to stop
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        assert line.strip() == b"LEADING", log.read()
        follower = electors("survivor")
        await asyncio.sleep(TTL_S)  # several renewals: the crasher keeps the lock while alive
        assert not follower.elector.is_leader
        assert await current_leader(follower.client) == "crasher"
        proc.kill()  # SIGKILL: no release, no destroy: only the TTL can free the lock
        proc.wait()
        killed = time.monotonic()
        await asyncio.wait_for(follower.elector.wait_leading(), TTL_S + LOCK_DELAY_S + 3)
        took = time.monotonic() - killed
        # The session outlives its last renewal by the TTL, then the lock-delay holds the key a little longer.
        assert took <= TTL_S + LOCK_DELAY_S + 1.5, took
        assert follower.worker.working
        assert await current_leader(follower.client) == "survivor"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def test_a_destroyed_session_stops_the_work_then_the_elector_campaigns_again(
    electors: Any, dc: DevclusterHandle
) -> None:
    one = electors("only")
    await asyncio.wait_for(one.elector.wait_leading(), 10)
    session = one.elector.session_id
    assert session and one.worker.working
    dc.consul().session.destroy(session)  # an operator, or Consul invalidating it
    await asyncio.wait_for(one.elector.wait_following(), TTL_S)
    assert one.worker.losses == 1 and not one.worker.working
    ticks = one.worker.ticks
    await asyncio.wait_for(one.elector.wait_leading(), TTL_S + LOCK_DELAY_S + 3)  # a new session, a new term
    assert one.elector.terms == 2 and one.elector.session_id != session
    assert one.worker.ticks >= ticks and one.worker.working


async def test_a_deleted_key_means_the_lock_is_lost(electors: Any, dc: DevclusterHandle) -> None:
    one = electors("only")
    await asyncio.wait_for(one.elector.wait_leading(), 10)
    dc.consul().kv.delete(LEADER_KEY)
    await asyncio.wait_for(one.elector.wait_following(), 5)
    assert one.worker.losses == 1
    await asyncio.wait_for(one.elector.wait_leading(), 5)
    assert one.elector.terms == 2


async def test_losing_consul_steps_down_before_the_session_could_expire(electors: Any, dc: DevclusterHandle) -> None:
    one = electors("only")
    await asyncio.wait_for(one.elector.wait_leading(), 10)
    dc.kill()  # Consul (and Nomad) vanish: renewals fail
    lost = time.monotonic()
    await asyncio.wait_for(one.elector.wait_following(), TTL_S * 2)
    # It stops no later than 80% of a TTL after its last good renewal, which was at most TTL/2 before.
    assert time.monotonic() - lost <= TTL_S * 0.8 + 0.5
    assert not one.worker.working
    dc.start()  # same ports: the elector comes back and leads again
    await asyncio.wait_for(one.elector.wait_leading(), 15)
    assert one.worker.working and one.elector.terms == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LeaderElector(object(), ttl_s=0)


async def test_a_cancel_that_lands_as_a_call_completes_still_stops_the_caller() -> None:
    # The race behind a CI hang: on 3.11, asyncio.wait_for returned the result and dropped such a cancel, so a
    # stopping elector's renewal loop ran on and stop() waited forever.
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    caller = asyncio.create_task(_within(5, reply))
    await asyncio.sleep(0)  # the caller now waits on the reply
    reply.set_result("renewed")
    caller.cancel()  # in the same loop pass as the reply
    with pytest.raises(asyncio.CancelledError):
        await caller
