"""``POST /v1/rank``: choose a variant for one shopper, answer at once, log the decision."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from service.api.bodies import ErrorBody, RankRequest, RankResponse
from service.api.deps import runtime
from service.errors import ServiceError
from service.ranker.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["rank"])


@router.post(
    "/rank",
    response_model=RankResponse,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def rank(body: RankRequest, rt: Annotated[Runtime, Depends(runtime)]) -> Response:
    # async and CPU-only: no Kafka call or disk I/O here (the publisher delivers off the
    # request path), so it runs on the event loop without a thread hop
    started = time.perf_counter()
    try:
        ranked = rt.rank(body.product_id, body.channel, body.user, body.context, body.language)
    except ServiceError:
        rt.metrics.rank_rejected.inc()
        raise
    rt.metrics.rank_latency.observe(time.perf_counter() - started)
    rt.metrics.rank_ok.inc()
    d = ranked.decision
    answer = RankResponse(
        event_id=d.event_id,
        product_id=d.product_id,
        variant_id=ranked.variant_id,
        text=ranked.text,
        pscore=d.pscore,
        policy_version=d.policy_version,
    )
    # serialised here, once: returning the model would have FastAPI validate it again
    return Response(answer.model_dump_json(), media_type="application/json")
