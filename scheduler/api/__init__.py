"""The scheduler's HTTP API: one router per module, included from one place (``routers()``).

A module listed in ``ROUTER_MODULES`` exposes ``router`` (a FastAPI ``APIRouter``); a listed module that is
not installed is skipped, so that parts of the scheduler (e.g. ``usage``, written with metering) can land
on their own.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

ROUTER_MODULES = (
    "users",
    "observe",
    "chutes",
    "nodes",
    "instances",
    "internal",
    "jobs",
    "usage",
    "telemetry",
    "secrets",
    "images",
)
# Order matters: "observe" declares /v1/chutes/{ref}/instances|events|logs before "chutes" declares /v1/chutes/{ref}.


def routers() -> list[APIRouter]:
    found: list[APIRouter] = []
    for name in ROUTER_MODULES:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            found.append(router)
    return found
