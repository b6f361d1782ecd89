"""Property-based conformance of every API operation to /openapi.json (schemathesis).

Each operation gets a few generated requests with an admin API key: the responses must not be 5xx,
and their status, content type, headers and body must match the schema. The example count is kept
small so the whole module runs in well under two minutes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aim.api import create_app
from test_api_support import bearer, make_key

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(runtime):
    app = create_app(runtime, background_jobs=False, rate_limit_per_minute=0)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def admin_headers(runtime):
    from aim.services import organizations

    organization = organizations.get_or_create(runtime.db, "schemathesis")
    return bearer(make_key(runtime.db, organization["id"], "admin"))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_operation_conforms(case, admin_headers):
    case.call_and_validate(headers=admin_headers, checks=CHECKS)
