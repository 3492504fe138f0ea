"""The OpenAPI schema: complete and warning-free, served, and true to the API.

schemathesis generates requests for every operation from the live schema (served by
the Django app in-process, through its WSGI integration) and checks that no answer
is a 5xx and that every answer matches the schema: status codes, content types and
bodies.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core import signals
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi import checks as openapi_checks

from core import tokens
from core.middleware import CONTENT_SECURITY_POLICY

from .api_helpers import make_world


def test_schema_is_valid_and_has_no_warnings() -> None:
    out = io.StringIO()
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--format",
        "openapi-json",
        stdout=out,
    )
    assert '"openapi": "3' in out.getvalue()


@pytest.mark.django_db
def test_docs_page_passes_the_csp_with_vendored_assets(victor: User) -> None:
    client = Client()
    assert client.get("/api/docs/").status_code == 302
    client.force_login(victor)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert page["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    html = page.content.decode()
    assert "cdn." not in html and "/static/drf_spectacular_sidecar/" in html
    assert "<script>" not in html
    script = client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        path = f"/static/drf_spectacular_sidecar/swagger-ui-dist/{asset}"
        assert client.get(path).status_code == 200, path


@pytest.fixture
def api_schema(alice: User) -> Iterator[Any]:
    # Like Django's test client: a request must not close the test's connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    make_world()
    secret = tokens.create_token(alice, name="schemathesis", scope="write").secret
    headers = {"Authorization": f"Bearer {secret}"}
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/", get_wsgi_application(), headers=headers
    )
    schema.config.headers = headers  # type: ignore[attr-defined]
    yield schema
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _quiet(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@pytest.mark.django_db
def test_api_matches_its_schema(api_schema: Any) -> None:
    # schemathesis' pytest plugin does not run under this pytest: drive hypothesis
    # directly, one bounded property per operation.
    headers = api_schema.config.headers
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                case.method,
                case.formatted_path,
                response.status_code,
                response.text[:300],
            )
            case.validate_response(response, checks=CHECKS)

        check()
