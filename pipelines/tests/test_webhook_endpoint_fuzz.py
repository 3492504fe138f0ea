"""Arbitrary requests to the webhook endpoint: a 4xx or a 2xx, never a 500.

Three shapes, each with a bounded number of examples: anything at all (unsigned),
arbitrary bytes correctly signed (they reach the parsers), and the forges' real
payloads, signed, with fields replaced by arbitrary JSON (they reach the database).
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.models import Repository
from pipelines.webhooks.base import hmac_sha256_hex
from pipelines.webhooks.testing import signed_request

SECRET = "fuzz-secret"
ALLOWED = {200, 201, 400, 401, 403, 404, 405, 413}
FORGES = ["github", "gitlab", "gitea", "forgejo", "generic"]
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HEADER_NAMES = st.sampled_from(
    [
        "X-GitHub-Event",
        "X-GitHub-Delivery",
        "X-Hub-Signature-256",
        "X-Gitlab-Event",
        "X-Gitlab-Token",
        "Idempotency-Key",
        "X-Gitlab-Event-UUID",
        "X-Gitea-Event",
        "X-Gitea-Signature",
        "X-Forgejo-Signature",
        "X-Gitea-Delivery",
        "Authorization",
        "X-Slipway-Delivery",
        "Content-Type",
        "X-Anything",
    ]
) | st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z")
# Header values as a WSGI server hands them over: latin-1 text without CR/LF.
HEADER_VALUES = st.text(
    st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"),
    max_size=80,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(autouse=True)
def _no_hook_rate_limit(settings) -> None:
    # These tests post hundreds of deliveries from 127.0.0.1 within a minute.
    settings.SLIPWAY = {**settings.SLIPWAY, "RATELIMIT_HOOKS": "0"}


@pytest.fixture
def repository(db: None) -> Repository:
    return Repository.objects.create(
        name="fuzz", clone_url="/srv/git/fuzz", forge="github", webhook_secret=SECRET
    )


def _post(forge: str, name: str, headers: dict[str, str], body: bytes) -> int:
    content_type = headers.pop("Content-Type", "application/json")
    response = Client().post(
        f"/hooks/{forge}/{name}/",
        data=body,
        content_type=content_type,
        headers=headers,
    )
    return response.status_code


@FUZZ
@given(
    forge=st.sampled_from([*FORGES, "GitHub", "nope"]),
    name=st.sampled_from(["fuzz", "missing", "x" * 300, "a\x00b"]),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6),
    body=st.binary(max_size=2048),
)
def test_arbitrary_requests_never_500(repository, forge, name, headers, body) -> None:
    assert _post(forge, name, headers, body) in ALLOWED


@FUZZ
@given(
    forge=st.sampled_from(FORGES),
    event=st.sampled_from(
        ["push", "pull_request", "ping", "Push Hook", "Merge Request Hook", "delete"]
    ),
    body=st.binary(max_size=2048) | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    delivery=HEADER_VALUES,
)
def test_signed_arbitrary_bodies_never_500(
    repository, forge, event, body, delivery
) -> None:
    signature = hmac_sha256_hex(SECRET, body)
    headers = {
        "X-GitHub-Event": event,
        "X-Gitlab-Event": event,
        "X-Gitea-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Gitea-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + signature,
        "X-Gitea-Signature": signature,
        "X-Gitlab-Token": SECRET,
        "Authorization": f"Bearer {SECRET}",
    }
    assert _post(forge, "fuzz", headers, body) in ALLOWED


def _replace(data: object, path: list[str], value: object) -> object:
    if not path or not isinstance(data, dict):
        return value
    key, rest = path[0], path[1:]
    out = dict(data)
    out[key] = _replace(data.get(key), rest, value)
    return out


PATHS = [
    ["ref"],
    ["before"],
    ["after"],
    ["commits"],
    ["head_commit", "message"],
    ["pusher", "name"],
    ["repository"],
    ["pull_request", "head", "ref"],
    ["pull_request", "number"],
    ["object_attributes", "source_branch"],
    ["object_attributes", "last_commit", "id"],
    ["user_username"],
    ["variables"],
    ["message"],
]


@FUZZ
@given(
    forge=st.sampled_from(FORGES),
    event=st.sampled_from(["push", "tag", "merge_request"]),
    path=st.sampled_from(PATHS),
    value=JSON_VALUES,
    delivery=st.uuids().map(str),
)
def test_real_payloads_with_arbitrary_fields_never_500(
    repository, forge, event, path, value, delivery
) -> None:
    if forge == "generic" and event == "merge_request":
        event = "push"
    headers, body = signed_request(
        forge,
        SECRET,
        event=event,
        ref="main",
        after="c" * 40,
        repo_url="/srv/git/fuzz",
        commits=["c" * 40],
        delivery_id=delivery,
    )
    body = json.dumps(_replace(json.loads(body), path, value)).encode()
    signature = hmac_sha256_hex(SECRET, body)
    for name in list(headers):
        if name.lower() == "x-hub-signature-256":
            headers[name] = "sha256=" + signature
        elif name.lower().endswith("-signature") and name.lower() != "x-hub-signature":
            headers[name] = signature
    headers.pop("X-Hub-Signature", None)
    assert _post(forge, "fuzz", headers, body) in ALLOWED
