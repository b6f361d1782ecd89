"""The overview figures of the dashboard."""

from __future__ import annotations

import functools
import uuid

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from aim.api import fastpath, schemas
from aim.api.fastjson import model_json
from aim.api.security import Principal, get_runtime, read
from aim.db.pool import Database
from aim.services import stats
from aim.services.cache_hooks import DASHBOARD_STATS

router = APIRouter(tags=["dashboard"])


@router.get("/dashboard/stats", response_model=schemas.DashboardStats, summary="Overview statistics")
async def dashboard_stats(request: Request, principal: Principal = Depends(read("read the overview"))) -> Response:
    """Return agent counts, average trust, verification rate and denial rate over the last hour, open alerts and MCP
    server figures. Cached for up to 5 minutes; `computed_at` is when the figures were measured."""
    load = functools.partial(_load, get_runtime(request).db, principal.organization_id)
    figures = stats.dashboard_stats_from_memory(principal.organization_id)
    response = _render(figures) if figures is not None else await run_in_threadpool(load)
    fastpath.remember(request, DASHBOARD_STATS, str(principal.organization_id), render=_render, load=load)
    return response


def _render(figures: dict) -> Response:
    return model_json(figures, schemas.DashboardStats)


def _load(db: Database, organization_id: uuid.UUID) -> Response:
    return _render(stats.dashboard_stats(db, organization_id))
