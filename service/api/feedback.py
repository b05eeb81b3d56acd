"""``POST /v1/feedback``: one ``Feedback`` or a list of them, published to the feedback topic."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import Field

from service.api.auth import AUTH_ERRORS, require_api_key
from service.api.bodies import ErrorBody, FeedbackAccepted
from service.api.deps import runtime
from service.ranker.runtime import Runtime
from streams.schemas import Feedback

router = APIRouter(prefix="/v1", tags=["feedback"])

#: a batch larger than this is split by the client; it keeps one request's work bounded
MAX_BATCH = 1000

FeedbackBody = Annotated[
    Feedback | Annotated[list[Feedback], Field(min_length=1, max_length=MAX_BATCH)],
    Body(description=f"one Feedback, or a list of 1 to {MAX_BATCH}"),
]


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    responses={
        422: {"model": ErrorBody},
        413: {"model": ErrorBody},
        **AUTH_ERRORS,
    },
    dependencies=[Depends(require_api_key)],
)
async def feedback(
    body: FeedbackBody, rt: Annotated[Runtime, Depends(runtime)]
) -> FeedbackAccepted:
    items = body if isinstance(body, list) else [body]
    # idempotency is downstream's: the learner and the counts drop a repeated feedback_id
    accepted, ticket = rt.submit_feedback(items)
    await rt.durable(ticket)  # with COPYLOOP_DURABLE_ACK: on Kafka or on disk before the 202
    return FeedbackAccepted(accepted=accepted)
