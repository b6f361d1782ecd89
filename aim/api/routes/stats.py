"""The overview figures of the dashboard."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from aim.api import fastpath, schemas
from aim.api.fastjson import model_json
from aim.api.security import Principal, get_runtime, read
from aim.services import stats
from aim.services.cache_hooks import DASHBOARD_STATS

router = APIRouter(tags=["dashboard"])


@router.get("/dashboard/stats", response_model=schemas.DashboardStats, summary="Overview statistics")
async def dashboard_stats(request: Request, principal: Principal = Depends(read("read the overview"))) -> Response:
    """Return agent counts, average trust, verification rate and denial rate over the last hour, open alerts and MCP
    server figures. Cached for up to 5 minutes; `computed_at` is when the figures were measured."""
    figures = stats.dashboard_stats_from_memory(principal.organization_id)
    if figures is None:
        figures = await run_in_threadpool(stats.dashboard_stats, get_runtime(request).db, principal.organization_id)
    fastpath.remember(request, DASHBOARD_STATS, str(principal.organization_id), render=_render)
    return _render(figures)


def _render(figures: dict) -> Response:
    return model_json(figures, schemas.DashboardStats)
