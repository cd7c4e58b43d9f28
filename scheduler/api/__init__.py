"""The scheduler's HTTP API: one router per module, included from one place (``routers()``).

A module listed in ``ROUTER_MODULES`` exposes ``router`` (a FastAPI ``APIRouter``); a listed module that does
not exist, or has no router, stops the scheduler at start (``chutes.core.registry``): it can only be a typo.
"""

from __future__ import annotations

from fastapi import APIRouter

from chutes.core.registry import import_all

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
    names = (f"{__name__}.{name}" for name in ROUTER_MODULES)
    for module in import_all(names, f"{__name__}.ROUTER_MODULES", require="router"):
        if not isinstance(module.router, APIRouter):
            raise TypeError(f"{module.__name__}.router is not an APIRouter")
        found.append(module.router)
    return found
