"""The ``images`` table: one row per build context (its id is the context's sha256), owned by one user.

``status`` goes queued → building → ready | failed. ``ref`` is the pushed reference pinned by digest.
``context`` keeps the uploaded archive (a rebuild, e.g. for a newer runtime, needs it). ``log_location`` says
where the build's output is: ``nomad:<alloc id>`` while the build runs (Nomad's logs API), ``store`` once it has
finished (``log`` then holds its last lines).
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chutes.scheduler.store.base import Base, now


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(128))
    tag: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8), default="image")
    base: Mapped[str | None] = mapped_column(String(512), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    ref: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    runtime_version: Mapped[str] = mapped_column(String(64), default="")
    dockerfile: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[bytes] = mapped_column(LargeBinary)
    context_bytes: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    build_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    alloc_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_location: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    queued_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
