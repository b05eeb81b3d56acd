"""Admin endpoints; each needs ``Authorization: Bearer <admin key>``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header

from service.api.bodies import ErrorBody, ReloadResult
from service.api.deps import runtime
from service.ranker.keys import check_admin
from service.ranker.runtime import Runtime

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def require_admin(
    rt: Annotated[Runtime, Depends(runtime)],
    authorization: Annotated[str | None, Header(max_length=1024)] = None,
) -> None:
    check_admin(authorization, rt.settings.admin_key)


ADMIN = [Depends(require_admin)]
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
}


@router.post("/reload", response_model=ReloadResult, dependencies=ADMIN, responses=ADMIN_ERRORS)
def reload(rt: Annotated[Runtime, Depends(runtime)]) -> ReloadResult:
    """Re-read the latest announced bandit snapshot and drop the loaded generator (in this
    worker), e.g. after a snapshot file was restored by hand."""
    return ReloadResult(**rt.reload())
