"""Access-change notices from the scheduler to the gateways: the wire format and its pure rules.

One Consul KV key (``chutes/gateway/invalidations`` by default) holds a bounded log of numbered notices.
Each names what a gateway may have cached that is no longer true: routes by (username, slug), API keys by
their sha256 (revoked keys), users by name (every key of theirs). The scheduler appends with check-and-set;
gateways follow the key with blocking queries and drop exactly the named entries.

A gateway that cannot tell what it missed (the log moved past the last notice it applied, or the key was
recreated with a new ``epoch``) must drop everything: :func:`pending` returns None then.
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_KEY = "chutes/gateway/invalidations"
KEEP_NOTICES = 256  # a gateway more than this many notices behind drops its whole cache
KEEP_SECONDS = 900.0


class Notice(BaseModel):
    """One change: the cache entries it makes wrong."""

    model_config = ConfigDict(extra="ignore")

    seq: int = 0
    at: float = 0.0  # UNIX time of publication (for latency figures and trimming)
    routes: list[tuple[str, str]] = Field(default_factory=list)  # (username, slug)
    keys: list[str] = Field(default_factory=list)  # sha256 hex of revoked API keys
    users: list[str] = Field(default_factory=list)  # usernames whose keys' identities changed

    def empty(self) -> bool:
        return not (self.routes or self.keys or self.users)


class NoticeLog(BaseModel):
    """The value of the KV key."""

    model_config = ConfigDict(extra="ignore")

    epoch: str = Field(default_factory=lambda: secrets.token_hex(8))
    seq: int = 0  # the last notice's number
    notices: list[Notice] = Field(default_factory=list)


def append(log: NoticeLog | None, notice: Notice, now: float) -> NoticeLog:
    """``log`` with ``notice`` added as the next number, trimmed to the last KEEP_NOTICES / KEEP_SECONDS."""
    base = log or NoticeLog()
    seq = base.seq + 1
    added = notice.model_copy(update={"seq": seq, "at": now})
    kept = [n for n in base.notices if now - n.at <= KEEP_SECONDS][-(KEEP_NOTICES - 1) :]
    return NoticeLog(epoch=base.epoch, seq=seq, notices=[*kept, added])


def pending(log: NoticeLog, epoch: str | None, applied: int) -> list[Notice] | None:
    """The notices after ``applied`` in ``log``; None when some are missing (another epoch, or trimmed)."""
    if epoch != log.epoch or applied > log.seq:
        return None
    fresh = [n for n in log.notices if n.seq > applied]
    if log.seq > applied and (not fresh or fresh[0].seq != applied + 1):
        return None
    return fresh
