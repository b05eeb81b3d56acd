"""Products: ``PUT /v1/products/{id}`` registers the product and starts a generation job
(202 ``{job_id}``), ``GET /v1/products/{id}/variants`` shows the pool with per-variant counts,
and ``GET /v1/jobs/{job_id}`` reports a job's state.

The PUT needs the write key (or the admin key) and is rate-limited per key
(``service.api.auth``): the registered record decides what prices and brand the guardrails let
copy state, and each job costs seconds of CPU."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from service.api.auth import AUTH_ERRORS, keys_of, require_write_key
from service.api.bodies import ErrorBody, JobAccepted, JobView, PoolView, VariantView
from service.api.deps import runtime
from service.errors import BadRequest
from service.ranker.runtime import Runtime
from streams.schemas import (
    CHANNELS,
    IDENTIFIER_MAX_LENGTH,
    IDENTIFIER_PATTERN,
    Channel,
    Product,
)

router = APIRouter(prefix="/v1", tags=["products"])

ProductId = Annotated[
    str, Path(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)
]
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}}


@router.put(
    "/products/{product_id}",
    status_code=202,
    response_model=JobAccepted,
    responses={
        **_ERRORS,
        **AUTH_ERRORS,
        429: {"model": ErrorBody, "description": "too many jobs: see `Retry-After`"},
    },
)
async def put_product(
    request: Request,
    product_id: ProductId,
    product: Product,
    rt: Annotated[Runtime, Depends(runtime)],
    caller: Annotated[str, Depends(require_write_key)],
    channel: Annotated[
        list[Channel] | None, Query(max_length=len(CHANNELS), description="default: all")
    ] = None,
    n: Annotated[int, Query(ge=1, le=32, description="variants per channel")] = 8,
    seed: Annotated[int | None, Query(ge=0, lt=2**32)] = None,
) -> JobAccepted:
    if product.product_id != product_id:
        raise BadRequest(
            "product_id",
            f"in the body ({product.product_id!r}) must match the path ({product_id!r})",
        )
    channels = list(dict.fromkeys(channel)) if channel else list(CHANNELS)
    keys_of(request.app.state, rt.settings).take_job(caller)
    job = rt.jobs.submit(product, channels, n, seed)
    return JobAccepted(
        job_id=job.job_id, product_id=product_id, status_url=f"/v1/jobs/{job.job_id}"
    )


@router.get("/products/{product_id}/variants", response_model=PoolView, responses=_ERRORS)
async def variants(product_id: ProductId, rt: Annotated[Runtime, Depends(runtime)]) -> PoolView:
    pool = rt.pools.get(product_id).pool
    counts = rt.stats.product(product_id)
    views = []
    for v in pool.variants:
        c = counts.get(v.variant_id)
        views.append(
            VariantView(
                variant_id=v.variant_id,
                text=v.text,
                language=v.language,
                channel=v.channel,
                traits=list(v.traits),
                ai_generated=v.ai_generated,
                decisions=c.decisions if c else 0,
                impressions=c.impressions if c else 0,
                clicks=c.clicks if c else 0,
                ctr=c.ctr if c else 0.0,
                ci95=c.ci95 if c else (0.0, 1.0),
            )
        )
    return PoolView(
        product_id=pool.product_id,
        pool_version=pool.pool_version,
        generator_version=pool.generator_version,
        created_at=pool.created_at,
        variants=views,
    )


@router.get("/jobs/{job_id}", response_model=JobView, responses=_ERRORS)
async def job(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    rt: Annotated[Runtime, Depends(runtime)],
) -> JobView:
    return JobView(**rt.jobs.store.get(job_id).to_dict())
