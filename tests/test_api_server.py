"""The server's app factory: what `aim api` workers build, beyond the app the tests use."""

from __future__ import annotations

import gc

import pytest
from fastapi.testclient import TestClient

from aim.api import create_app, server

pytestmark = pytest.mark.integration


def test_server_factory_freezes_heap():
    app = server.create_server_app()

    assert app.state.freeze_heap is True
    assert server.APP_FACTORY == "aim.api.server:create_server_app"


def test_startup_freezes_heap_when_asked(runtime):
    plain = create_app(runtime, background_jobs=False, rate_limit_per_minute=0)
    frozen_app = create_app(runtime, background_jobs=False, rate_limit_per_minute=0, freeze_heap=True)
    try:
        with TestClient(plain):
            after_plain = gc.get_freeze_count()
        with TestClient(frozen_app):
            after_frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()

    assert after_plain == 0
    assert after_frozen > 0
