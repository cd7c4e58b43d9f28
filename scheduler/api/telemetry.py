"""``GET /metrics``: the scheduler's Prometheus metrics, for operators only.

The API port faces users, so the metrics are not public: an admin key, a gateway key, or the dedicated
``CHUTES_METRICS_TOKEN`` (what a Prometheus scrape job carries as its bearer token) may read them. A user
key is refused with 403. The token is compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from chutes.scheduler.api.deps import ServicesDep, any_principal, bearer_token
from chutes.scheduler.api.errors import APIError, ErrorOut

router = APIRouter(tags=["operations"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus text (admin or gateway key, or ``CHUTES_METRICS_TOKEN``)."""
    token = bearer_token(request)
    expected = services.config.metrics_token
    if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        principal = await any_principal(request, services)
        if not principal.is_gateway:
            raise APIError(
                403, "metrics need an admin or gateway key, or the metrics token",
                "give Prometheus CHUTES_METRICS_TOKEN as its bearer token",
            )  # fmt: skip
    services.metrics.leader.set(1 if services.is_leader else 0)
    return Response(services.metrics.render(), media_type=services.metrics.content_type)
