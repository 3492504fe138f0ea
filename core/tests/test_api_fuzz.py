"""Arbitrary bodies on write endpoints: always a 4xx with the error body, never a
5xx, and nothing created."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.models import Repository, Run, Schedule, Variable

from .api_helpers import make_world, token_client

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies that look like the real thing, with wrong values in the right places.
FIELDS = st.sampled_from(
    ["repository", "ref", "variables", "name", "cron", "branch", "value", "is_secret"]
)
NEAR = st.dictionaries(FIELDS, JSON, max_size=5)

ENDPOINTS = {
    "/api/v1/runs/": Run,
    "/api/v1/schedules/": Schedule,
    "/api/v1/variables/": Variable,
    "/api/v1/repositories/": Repository,
}


def _counts() -> dict[str, int]:
    return {url: model.objects.count() for url, model in ENDPOINTS.items()}


def _check(client: Any, url: str, body: Any) -> None:
    before = _counts()
    response = client.post(url, json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (url, body, response.content[:300])
    if response.status_code == 201:
        # Hypothesis found a valid body: exactly one row more, nothing else.
        after = _counts()
        assert after[url] == before[url] + 1
        ENDPOINTS[url].objects.filter(pk=response.json()["id"]).delete()
        return
    assert 400 <= response.status_code < 500, (url, body, response.status_code)
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert _counts() == before


@pytest.mark.django_db
def test_write_endpoints_refuse_arbitrary_json(alice: User) -> None:
    make_world()
    client = token_client(alice)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(url=st.sampled_from(sorted(ENDPOINTS)), body=JSON | NEAR)
    def check(url: str, body: Any) -> None:
        _check(client, url, body)

    check()


@pytest.mark.django_db
def test_write_endpoints_refuse_bytes_that_are_not_json(alice: User) -> None:
    make_world()
    client = token_client(alice)

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(url=st.sampled_from(sorted(ENDPOINTS)), raw=st.binary(max_size=64))
    def check(url: str, raw: bytes) -> None:
        before = _counts()
        response = client.post(url, raw, content_type="application/json")
        assert 400 <= response.status_code < 500, (raw, response.status_code)
        assert "error" in response.json()
        assert _counts() == before

    check()
