"""schemathesis against the live OpenAPI schema of a real ``dealcast serve`` process.

Every operation gets generated requests (valid and invalid) as a leader and as a rep: no 5xx,
every status documented, every body matching its schema (schemathesis' default checks). The
server runs with MLflow pointed at a closed port: serving does not need it.

(schemathesis' own pytest integration fails on pytest 9, so each operation is a parametrized
test that draws cases from ``operation.as_strategy()`` with hypothesis.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serving.app import create_app
from serving.settings import ServeSettings
from tests.serving.conftest import Keys

CROSS_CHECKED = {"/v1/forecasts", "/v1/accuracy", "/v1/kpis"}
"""Operations with constraints OpenAPI cannot state: ``to`` not before ``from``, ``months`` at
most what the live publication holds. A schema-valid request breaking them gets a 422 naming
the parameter, so schemathesis' "schema-valid request accepted" check is off for them only;
no-5xx, status and body conformance still apply."""

OPERATIONS = sorted(
    (method.upper(), path)
    for path, methods in create_app(ServeSettings(data=Path("."))).openapi()["paths"].items()
    for method in methods
)


@pytest.fixture(scope="session")
def api_schema(live_server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


def test_the_schema_lists_every_endpoint_of_the_issue() -> None:
    paths = {path for _, path in OPERATIONS}
    assert {
        "/v1/forecasts",
        "/v1/pipeline/weighted",
        "/v1/deals/priorities",
        "/v1/deals/{deal_id}",
        "/v1/accuracy",
        "/v1/anomalies",
        "/v1/kpis",
        "/v1/jobs/refresh",
        "/v1/jobs/{job_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_keeps_its_contract(
    api_schema: schemathesis.BaseSchema, live_server: str, keys: Keys, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    roles = ("leader",) if method == "POST" else ("leader", "rep")  # POST as leader: 403, no job
    excluded = [positive_data_acceptance] if path in CROSS_CHECKED else []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: schemathesis.Case) -> None:
        for role in roles:
            case.call_and_validate(
                base_url=live_server, headers=keys.headers(role), excluded_checks=excluded
            )

    check()
