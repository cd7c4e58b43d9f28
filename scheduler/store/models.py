"""The scheduler's core tables: users and keys, chutes and their versions, shares, events, instances, job runs.

Times are UNIX seconds (float) so that they read the same on SQLite and PostgreSQL. Ids are hex uuid4
strings, except a chute's id, which is its deterministic chute_id (DESIGN.md, "Chute identity").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from chutes.scheduler.store.base import Base, new_id, now

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

ROLES = ("user", "admin", "gateway")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(63), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Chute(Base):
    __tablename__ = "chutes"
    __table_args__ = (UniqueConstraint("username", "slug", name="uq_chutes_username_slug"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(128))
    slug: Mapped[str] = mapped_column(String(128))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[str] = mapped_column(String(64))  # sha256 of the current bundle
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    desired_instances: Mapped[int] = mapped_column(Integer, default=1)
    # deploying | registered | running | ready | unschedulable | failed | deleting
    status: Mapped[str] = mapped_column(String(32), default="deploying")
    status_detail: Mapped[str] = mapped_column(Text, default="")
    invoke_secret: Mapped[str] = mapped_column(String(128))
    # The ``<username>-<slug>`` label of its wildcard host address, unique: one label, one chute (None: no
    # host address, e.g. a label another chute already had when this one was created).
    host_label: Mapped[str | None] = mapped_column(String(192), nullable=True, unique=True)
    # The image its instances run (``images.ref``, pinned by digest), when it was deployed with a built one.
    image_ref: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now, onupdate=now)


class ChuteVersion(Base):
    """One uploaded bundle of a chute; the instance token of that version is stored hashed."""

    __tablename__ = "chute_versions"

    chute_id: Mapped[str] = mapped_column(ForeignKey("chutes.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    bundle: Mapped[bytes] = mapped_column(LargeBinary)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Share(Base):
    __tablename__ = "shares"

    chute_id: Mapped[str] = mapped_column(ForeignKey("chutes.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    # Dev stacks only (``dev_adopt_users``): the user deployed this chute for its adopted owner, and manages it
    # as the owner would (events, logs, instances, scale, delete). A plain share grants calling only.
    adopted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Event(Base):
    """A deployment event; kept while the chute exists (no foreign key: a delete records its own events)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    chute_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Instance(Base):
    """The last observed state of one Nomad allocation of a chute (recorded by the reconciler and deploy watch)."""

    __tablename__ = "instances"

    alloc_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chute_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    nomad_node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_model: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    # pending | running | ready | failing | stopped | failed | lost
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When it last stopped being ready while its allocation lived on (GPU time is billed only while ready).
    unready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stopped_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    chute_id: Mapped[str] = mapped_column(ForeignKey("chutes.id", ondelete="CASCADE"), index=True)
    job_name: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    nomad_job_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # pending | running | succeeded | failed | lost
    status: Mapped[str] = mapped_column(String(16), default="pending")
    input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now, onupdate=now)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobOutput(Base):
    """One output file of a job run, uploaded by the instance that ran it."""

    __tablename__ = "job_outputs"

    run_id: Mapped[str] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Setting(Base):
    """Process-wide values shared by every scheduler of one store (e.g. the instance-token secret)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
