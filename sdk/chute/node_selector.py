"""NodeSelector: which GPUs a chute needs, resolved against the catalog into the eligible models and a price."""

from __future__ import annotations

import difflib
import sys
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, computed_field, field_validator, model_validator

from chutes import gpus
from chutes.chute.errors import CompatibilityWarning

_COMPUTED = ("eligible_gpus", "hourly_price_usd")
# Models Chutes once offered (or its docs still name) that are not in the catalog: accepted in ``exclude``.
RETIRED_GPUS = frozenset({"k80", "m60", "p4", "p40", "p100", "t4", "v100"})


def _user_frame() -> int:
    """The stack level of the code that built the selector (past this module and pydantic's frames)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith((__name__, "pydantic")):
        level, frame = level + 1, frame.f_back  # type: ignore[assignment]
    return level


def _unknown_field(key: str) -> str:
    known = sorted(NodeSelector.model_fields)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    guess = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
    return f"NodeSelector ignores the unknown field {key!r} (the real Chutes SDK ignores it too){guess}"


class NodeSelector(BaseModel):
    """Hardware requirements of one instance of a chute.

    ``eligible_gpus`` starts from every schedulable catalog model, is replaced by ``include`` when given,
    loses ``exclude``, then keeps the models with enough VRAM and at or below the price cap.
    ``hourly_price_usd`` is ``gpu_count`` times the cheapest eligible model's hourly price.

    Unknown fields are ignored with a ``CompatibilityWarning`` naming the closest known field, as the real Chutes
    SDK and server ignore them (``min_vram_gpu_per_gpu`` → "did you mean 'min_vram_gb_per_gpu'?").
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    gpu_count: int = Field(1, ge=1, le=8)
    min_vram_gb_per_gpu: int = Field(16, ge=16, le=140)
    include: list[str] | None = None
    exclude: list[str] | None = None
    max_hourly_price_per_gpu: float | None = Field(None, gt=0, lt=10)

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: Any) -> Any:
        # A serialized selector carries its computed fields; they are always recomputed, never trusted.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in _COMPUTED}
            for key in data:
                if key not in cls.model_fields:
                    warnings.warn(_unknown_field(str(key)), CompatibilityWarning, stacklevel=_user_frame())
        return data

    @field_validator("include", "exclude")
    @classmethod
    def _known_ids(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        ids: list[str] = []
        for raw in value:
            key = raw.strip().lower()
            if key in RETIRED_GPUS:
                # Excluding a model the platform no longer offers changes nothing (Chutes' docs do it); asking
                # for one can never be satisfied.
                if info.field_name == "include":
                    raise ValueError(
                        f"GPU model {raw!r} is retired and never scheduled; valid ids are: {', '.join(gpus.all_ids())}"
                    )
                gpu_id = key
            else:
                gpu_id = gpus.get(raw).id  # raises with the list of valid ids
            if gpu_id not in ids:
                ids.append(gpu_id)
        return ids

    @model_validator(mode="after")
    def _not_empty(self) -> NodeSelector:
        self._resolve()
        return self

    def _resolve(self) -> list[str]:
        if self.include is not None:
            blocked = [g for g in self.include if not gpus.CATALOG[g].schedulable]
            if blocked:
                raise ValueError(f"GPU model(s) {', '.join(blocked)} cannot be scheduled on this platform")
            candidates = set(self.include)
            where = f"include={sorted(candidates)}"
        else:
            candidates = {g.id for g in gpus.CATALOG.values() if g.schedulable}
            where = "the catalog"
        if not candidates:
            raise ValueError("include is empty: list at least one GPU id, or leave include unset")
        candidates -= set(self.exclude or ())
        if not candidates:
            raise ValueError(f"exclude={self.exclude} removes every GPU model of {where}")
        fits = {g for g in candidates if gpus.CATALOG[g].vram_gb >= self.min_vram_gb_per_gpu}
        if not fits:
            raise ValueError(
                f"no GPU model with at least {self.min_vram_gb_per_gpu} GB VRAM among {sorted(candidates)}; "
                "lower min_vram_gb_per_gpu or include larger models"
            )
        cap = self.max_hourly_price_per_gpu
        if cap is not None:
            affordable = {g for g in fits if gpus.CATALOG[g].hourly_usd <= cap}
            if not affordable:
                cheapest = min(fits, key=lambda g: gpus.CATALOG[g].hourly_usd)
                raise ValueError(
                    f"max_hourly_price_per_gpu={cap} is below every eligible model "
                    f"(cheapest is {cheapest} at ${gpus.CATALOG[cheapest].hourly_usd:.2f}/h)"
                )
            fits = affordable
        return sorted(fits)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eligible_gpus(self) -> list[str]:
        """Catalog ids of the GPU models this selector accepts, sorted."""
        return self._resolve()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hourly_price_usd(self) -> float:
        """Price of one instance per hour: gpu_count × the cheapest eligible model's hourly price."""
        cheapest = min(gpus.CATALOG[g].hourly_usd for g in self._resolve())
        return round(self.gpu_count * cheapest, 6)
