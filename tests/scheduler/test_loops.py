"""Leader loops never die: a failing tick is logged and retried with growing, jittered delays."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from chutes.scheduler import loops
from chutes.scheduler.loops import LeaderLoop, LoopRunner, backoff_delay, run_forever

pytestmark = pytest.mark.timeout(30)


def test_backoff_doubles_with_jitter_and_caps() -> None:
    assert backoff_delay(1.0, 0, 60) == 1.0
    for failures, base in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0), (100, 60.0)):
        delays = [backoff_delay(1.0, failures, 60) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays), (failures, min(delays), max(delays))
        assert len(set(delays)) > 1  # jitter


async def test_a_failing_tick_is_retried_and_the_loop_keeps_its_pace_after(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        calls.append(loop.time())
        if len(calls) <= 3:
            raise RuntimeError(f"boom {len(calls)}")

    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="chutes.scheduler.loops")
    task = asyncio.create_task(run_forever(LeaderLoop("flaky", 0.01, tick, max_backoff=0.2), stop))
    while len(calls) < 8:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 2)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.01 and gaps[2] >= 0.04  # backing off while failing...
    assert max(gaps[4:]) < 0.1  # ...and back to the interval once it recovers
    assert [r.message for r in caplog.records][:3] == [
        f"leader loop flaky: tick failed ({n} in a row)" for n in (1, 2, 3)
    ]


async def test_runner_starts_and_stops_every_loop() -> None:
    ticks: dict[str, int] = {"a": 0, "b": 0}

    def counter(name: str) -> LeaderLoop:
        async def tick() -> None:
            ticks[name] += 1

        return LeaderLoop(name, 0.01, tick)

    runner = LoopRunner([counter("a"), counter("b")])
    runner.start()
    runner.start()  # idempotent
    await asyncio.sleep(0.1)
    assert runner.running and ticks["a"] > 1 and ticks["b"] > 1
    await runner.stop()
    assert not runner.running
    frozen = dict(ticks)
    await asyncio.sleep(0.05)
    assert ticks == frozen


async def test_a_hanging_tick_is_cancelled_on_stop() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    runner = LoopRunner([LeaderLoop("hang", 1, hang)])
    runner.start()
    await started.wait()
    await asyncio.wait_for(runner.stop(grace=0.1), 2)
    assert not runner.running


def test_collect_takes_the_loops_of_the_listed_modules_and_refuses_a_typo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loops, "LOOP_MODULES", ("chutes.scheduler.not_there", "chutes.scheduler.reconciler"))
    with pytest.raises(ImportError, match=r"LOOP_MODULES lists chutes\.scheduler\.not_there"):
        loops.collect(object())  # type: ignore[arg-type]
    monkeypatch.setattr(loops, "LOOP_MODULES", ("chutes.scheduler.reconciler",))

    class FakeConfig:
        reconcile_interval_s = 5.0
        loop_max_backoff_s = 30.0

    class FakeServices:
        config = FakeConfig()

    found = loops.collect(FakeServices())  # type: ignore[arg-type]
    assert [lp.name for lp in found] == ["reconciler"] and found[0].interval == 5.0
