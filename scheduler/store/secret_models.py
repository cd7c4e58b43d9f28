"""Tables of chute secrets: the sealed values (``chute_secrets``) and what Nomad has seen of them (``secret_syncs``).

A secret belongs to its owner and to a chute id (``uuid5`` of the owner's username and the chute's name, so it can
be created before the chute's first deploy); no foreign key to ``chutes`` for that reason. Values are sealed
with ``chutes.scheduler.secret_box`` (AES-GCM); ``key_id`` names the key without revealing it.

``secret_syncs`` counts changes per chute (``generation``) and the last one written to the chute's Nomad
Variables (``synced_generation``): the leader's loop finishes what an API call could not (Nomad down).
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chutes.scheduler.store.base import Base, new_id, now


class ChuteSecret(Base):
    __tablename__ = "chute_secrets"
    __table_args__ = (UniqueConstraint("chute_id", "name", name="uq_chute_secrets_chute_id_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    chute_id: Mapped[str] = mapped_column(String(36), index=True)
    chute_name: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class SecretSync(Base):
    __tablename__ = "secret_syncs"

    chute_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    synced_generation: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
