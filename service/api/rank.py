"""``POST /v1/rank``: choose a variant for one shopper, answer at once, log the decision."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from service.api.auth import AUTH_ERRORS, require_api_key
from service.api.bodies import (
    ErrorBody,
    RankExplanation,
    RankRequest,
    RankResponse,
    ScoreContribution,
    VariantProbability,
)
from service.api.deps import runtime
from service.errors import ServiceError
from service.ranker.runtime import Runtime
from streams.schemas import Decision

router = APIRouter(prefix="/v1", tags=["rank"])
#: features reported per explained answer
EXPLAIN_TOP = 5


def explanation(rt: Runtime, decision: Decision) -> RankExplanation:
    """Why ``decision`` chose its variant, by the policy the runtime serves: the features that
    moved the chosen variant's score most and every variant's probability. Only bucketed
    features and variant ids appear: the shopper's hashed id is never a feature."""
    policy = rt.policy_for(decision.product_id).policy  # the shard that owns the product
    found = policy.explain(decision, EXPLAIN_TOP)
    return RankExplanation(
        supported=found is not None,
        model=policy.config.name,
        policy_version=policy.version,
        contributions=[ScoreContribution(**c.to_dict()) for c in found or []],
        probabilities=[
            VariantProbability(variant_id=v, probability=p)
            for v, p in zip(decision.actions, decision.action_dist, strict=True)
        ],
        note=None
        if found is not None
        else "this model keeps hashed weights, not named ones: probabilities only",
    )


def answer_json(answer: RankResponse) -> str:
    """The answer as JSON; ``explain`` only when it was asked for."""
    return answer.model_dump_json(exclude={"explain"} if answer.explain is None else None)


@router.post(
    "/rank",
    response_model=RankResponse,
    responses={
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},
        422: {"model": ErrorBody},
        **AUTH_ERRORS,
    },
    dependencies=[Depends(require_api_key)],
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
    try:
        await rt.durable(ranked.durable)  # with COPYLOOP_DURABLE_ACK: on Kafka or on disk
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
        pool_version=d.pool_version,
        explain=explanation(rt, d) if body.explain else None,
    )
    # serialised here, once: returning the model would have FastAPI validate it again
    return Response(answer_json(answer), media_type="application/json")
