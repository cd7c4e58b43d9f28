"""Nomad's event stream (``GET /v1/event/stream``): what changed in the state, as newline-delimited JSON.

Every write to a job, allocation, evaluation, deployment or node publishes an event into a bounded buffer; a
stream sends ``{"Index": N, "Events": [...]}`` lines for the events after ``?index=`` that match its
``?topic=Topic:Key`` filters (the key matches the event's ``Key`` or one of its ``FilterKeys``; ``*`` any), and
``{}`` as a heartbeat every 10 s.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

from chutes.core.waiting import wait_event

BUFFER = 2048
HEARTBEAT_S = 10.0
TOPICS = ("Job", "Allocation", "Evaluation", "Deployment", "Node")


@dataclass
class Event:
    index: int
    topic: str
    type: str
    key: str
    filter_keys: list[str]
    payload: dict[str, Any]  # the object as it was written
    namespace: str = "default"

    def to_json(self) -> dict[str, Any]:
        return {"Topic": self.topic, "Type": self.type, "Key": self.key, "Namespace": self.namespace,
                "FilterKeys": self.filter_keys or None, "Index": self.index, "Payload": self.payload}  # fmt: skip


@dataclass
class EventBroker:
    events: collections.deque[Event] = field(default_factory=lambda: collections.deque(maxlen=BUFFER))
    _waiters: set[asyncio.Event] = field(default_factory=set)

    def publish(self, event: Event) -> None:
        self.events.append(event)
        for waiter in self._waiters:
            waiter.set()

    def after(self, index: int, topics: dict[str, set[str]]) -> list[Event]:
        return [e for e in self.events if e.index > index and matches(e, topics)]

    async def wait(self, timeout_s: float) -> None:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            await wait_event(waiter, timeout_s)
        finally:
            self._waiters.discard(waiter)


def parse_topics(values: list[str]) -> dict[str, set[str]]:
    """``["Allocation:job-1", "Node"]`` → ``{"Allocation": {"job-1"}, "Node": {"*"}}``; none means every topic."""
    out: dict[str, set[str]] = {}
    for value in values or ["*"]:
        topic, _, key = value.partition(":")
        if topic != "*" and topic not in TOPICS:
            raise ValueError(f"invalid topic {topic!r} (known: {', '.join(TOPICS)}, *)")
        out.setdefault(topic, set()).add(key or "*")
    return out


def matches(event: Event, topics: dict[str, set[str]]) -> bool:
    for topic in (event.topic, "*"):
        keys = topics.get(topic)
        if keys and ("*" in keys or event.key in keys or keys & set(event.filter_keys)):
            return True
    return False
