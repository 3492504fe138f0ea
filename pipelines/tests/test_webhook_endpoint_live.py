"""The webhook endpoint through the real ASGI server (uvicorn) with httpx.

Covers what the Django test client cannot: the ASGI route that serves webhooks in
front of Django (``hook_views.HookApp``), real HTTP framing (Content-Length, chunked
bodies), and a delivery running end to end on real Celery workers with the commit
status reported back to a (local) forge.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from pipelines.models import Run, WebhookDelivery
from pipelines.webhooks.base import hmac_sha256_hex
from pipelines.webhooks.testing import signed_request

from .test_forge_status import FakeForge
from .test_webhook_endpoint import (  # noqa: F401 - purge_queue is a fixture.
    SECRET,
    Origin,
    make_repository,
    purge_queue,
    start_queued_runs,
)
from .waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_hook_rate_limit(settings) -> None:
    # These tests post hundreds of deliveries from 127.0.0.1 within a minute.
    settings.SLIPWAY = {**settings.SLIPWAY, "RATELIMIT_HOOKS": "0"}


@pytest.fixture
def origin(tmp_path) -> Origin:
    # The workers use their own mirror directory: no settings override here.
    origin = Origin(tmp_path)
    origin.commit(
        {".slipway.yml": "build:\n  script: [echo built from $SLIPWAY_COMMIT_SHA]\n"},
        "first",
    )
    origin.push("main")
    return origin


@pytest.mark.usefixtures("purge_queue")
def test_github_push_through_uvicorn_starts_one_run(asgi_server, origin) -> None:
    repository = make_repository(origin, "github")
    before = origin.sha("main")
    after = origin.commit({"x": "1"}, "via uvicorn")
    origin.push("main")
    headers, body = signed_request(
        "github",
        SECRET,
        before=before,
        after=after,
        repo_url=repository.clone_url,
        commits=[after],
        delivery_id="live-1",
    )
    url = f"{asgi_server.url}/hooks/github/{repository.name}/"
    with httpx.Client(timeout=10) as http:
        first = http.post(url, content=body, headers=headers)
        again = http.post(url, content=body, headers=headers)
    assert first.status_code == 201, first.text
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    # Answered like Django's pages: JSON, with the security headers.
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert (run.branch, run.commit_sha, run.before_sha) == ("main", after, before)
    delivery = WebhookDelivery.objects.get(outcome="created")
    assert delivery.pk == first.json()["delivery"]
    assert (delivery.run, delivery.reason) == (run, f"run #{run.number} created")
    assert delivery.headers["X-Hub-Signature-256"] == "[redacted]"
    assert delivery.duration_ms > 0


@pytest.mark.usefixtures("purge_queue")
def test_thirty_megabytes_with_content_length_or_chunked_get_413(
    asgi_server, origin
) -> None:
    repository = make_repository(origin, "github")
    headers, body = signed_request(
        "github", SECRET, after=origin.sha("main"), repo_url=repository.clone_url
    )
    big = body[:-1] + b', "pad": "' + b"x" * (30 * 1024 * 1024) + b'"}'
    headers["X-Hub-Signature-256"] = "sha256=" + hmac_sha256_hex(SECRET, big)
    url = f"{asgi_server.url}/hooks/github/{repository.name}/"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]

    with httpx.Client(timeout=60) as http:
        sized = http.post(url, content=big, headers=headers)
        chunked = http.post(url, content=chunks(), headers=headers)
    assert sized.status_code == 413, sized.text
    assert chunked.status_code == 413, chunked.text
    assert not Run.objects.exists()
    assert not WebhookDelivery.objects.exists()


@pytest.mark.usefixtures("purge_queue")
def test_ten_concurrent_redeliveries_through_uvicorn_start_one_run(
    asgi_server, origin
) -> None:
    repository = make_repository(origin, "gitea")
    headers, body = signed_request(
        "gitea",
        SECRET,
        after=origin.sha("main"),
        repo_url=repository.clone_url,
        delivery_id="uvicorn-race",
    )
    url = f"{asgi_server.url}/hooks/gitea/{repository.name}/"
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def post() -> None:
        with httpx.Client(timeout=30) as http:
            barrier.wait(10)
            statuses.append(http.post(url, content=body, headers=headers).status_code)

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] * 9 + [201]
    assert start_queued_runs() == 1
    assert Run.objects.count() == 1


@pytest.mark.usefixtures("purge_queue")
def test_rotated_secret_refuses_the_old_signature_at_once(asgi_server, origin) -> None:
    # The route caches repositories; a save must reach it before the next delivery.
    repository = make_repository(origin, "github")
    url = f"{asgi_server.url}/hooks/github/{repository.name}/"

    def deliver(delivery_id: str) -> httpx.Response:
        headers, body = signed_request(
            "github",
            SECRET,
            after=origin.sha("main"),
            repo_url=repository.clone_url,
            delivery_id=delivery_id,
        )
        return httpx.post(url, content=body, headers=headers, timeout=10)

    assert deliver("before-rotation").status_code == 201
    repository.webhook_secret = "a-new-secret"
    repository.save()
    refused = deliver("after-rotation")
    assert refused.status_code == 401, refused.text
    rejected = WebhookDelivery.objects.get(outcome="rejected")
    assert (rejected.status_code, rejected.delivery_id) == (401, None)


@pytest.mark.usefixtures("purge_queue")
def test_unknown_repository_bad_host_and_get_through_uvicorn(
    asgi_server, origin
) -> None:
    repository = make_repository(origin, "github")
    headers, body = signed_request(
        "github", SECRET, after=origin.sha("main"), repo_url=repository.clone_url
    )
    with httpx.Client(timeout=10) as http:
        missing = http.post(
            f"{asgi_server.url}/hooks/github/nothing/", content=body, headers=headers
        )
        bad_host = http.post(
            f"{asgi_server.url}/hooks/github/{repository.name}/",
            content=body,
            headers={**headers, "Host": "evil.example"},
        )
        # Everything but a POST is Django's: the view allows only POST.
        got = http.get(f"{asgi_server.url}/hooks/github/{repository.name}/")
    assert missing.status_code == 404
    assert bad_host.status_code == 400
    assert got.status_code == 405
    assert not WebhookDelivery.objects.exists()


@pytest.mark.usefixtures("purge_queue")
def test_hooks_are_rate_limited_per_address_through_uvicorn(
    asgi_server, origin, settings
) -> None:
    settings.SLIPWAY = {**settings.SLIPWAY, "RATELIMIT_HOOKS": "3/min"}
    repository = make_repository(origin, "github")
    url = f"{asgi_server.url}/hooks/github/{repository.name}/"
    with httpx.Client(timeout=10) as http:
        statuses = [http.post(url, content=b"{}").status_code for _ in range(3)]
        refused = http.post(url, content=b"{}")
    assert 429 not in statuses
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert refused.json()["error"]["code"] == "throttled"


@pytest.mark.slow
def test_delivery_runs_on_workers_and_reports_the_commit_status(
    asgi_server, origin, workers
) -> None:
    forge = FakeForge().start()
    try:
        repository = make_repository(
            origin,
            "github",
            https_token="ghp-test-token",
            forge_api_url=forge.url,
            forge_project="acme/app",
        )
        before = origin.sha("main")
        after = origin.commit({"y": "1"}, "end to end")
        origin.push("main")
        headers, body = signed_request(
            "github",
            SECRET,
            before=before,
            after=after,
            repo_url=repository.clone_url,
            commits=[after],
        )
        response = httpx.post(
            f"{asgi_server.url}/hooks/github/{repository.name}/",
            content=body,
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        run = wait_for(
            lambda: Run.objects.filter(status__in=Run.FINISHED).first(),
            timeout=60,
            message="the run to finish",
        )
        assert (run.status, run.commit_sha, run.error) == ("success", after, "")
        wait_for(
            lambda: any(r.body["state"] == "success" for r in forge.requests),
            timeout=30,
            message="the success status",
        )
        final = forge.requests[-1]
        assert final.path == f"/repos/acme/app/statuses/{after}"
        assert final.headers["authorization"] == "Bearer ghp-test-token"
        assert final.body["target_url"].endswith(f"/runs/{run.pk}/")
        assert {r.body["state"] for r in forge.requests} <= {"pending", "success"}
    finally:
        forge.stop()
