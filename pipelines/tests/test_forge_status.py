"""Commit statuses reported to a forge: exact requests to a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines import forge_status, tasks
from pipelines.models import Repository, Run

from .factories import make_repository, make_run

SHA = "9f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"


@dataclass
class Received:
    """One request the fake forge received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, object]


class FakeForge:
    """An HTTP server on 127.0.0.1 that records requests and answers from a script.

    ``answers`` is a list of status codes used in turn; after it runs out, 201.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming.
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with forge.lock:
                    forge.requests.append(
                        Received(
                            "POST",
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw or b"{}"),
                        )
                    )
                    status = forge.answers.pop(0) if forge.answers else 201
                payload = json.dumps({"state": "ok"}).encode()
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeForge:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    server = FakeForge().start()
    yield server
    server.stop()


def run_for(forge_url: str, forge: str, **repo_fields: object) -> Run:
    fields: dict[str, object] = {
        "forge": forge,
        "https_token": "tok-123",
        "forge_api_url": forge_url,
        "forge_project": "acme/app",
    }
    fields.update(repo_fields)
    repository = make_repository(**fields)
    return make_run(
        repository=repository, status=Run.Status.SUCCESS, commit_sha=SHA, number=12
    )


# --- the exact requests ------------------------------------------------------------


@pytest.mark.django_db
def test_github_status_request(forge, settings) -> None:
    settings.SITE_URL = "https://ci.example.com"
    run = run_for(forge.url + "/", "github")
    forge_status.report(run.pk)
    [request] = forge.requests
    assert request.path == f"/repos/acme/app/statuses/{SHA}"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "state": "success",
        "target_url": f"https://ci.example.com/runs/{run.pk}/",
        "description": "Run #12 passed",
        "context": "slipway",
    }


@pytest.mark.django_db
def test_gitlab_status_request_with_numeric_and_path_project_ids(
    forge, settings
) -> None:
    settings.SITE_URL = "https://ci.example.com"
    run = run_for(forge.url + "/api/v4", "gitlab", forge_project="42")
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    forge_status.report(run.pk)
    run_path = run_for(forge.url + "/api/v4", "gitlab", forge_project="group/sub/app")
    Run.objects.filter(pk=run_path.pk).update(status=Run.Status.FAILED)
    forge_status.report(run_path.pk)
    first, second = forge.requests
    assert first.path == f"/api/v4/projects/42/statuses/{SHA}"
    assert first.headers["private-token"] == "tok-123"
    assert "authorization" not in first.headers
    assert first.body == {
        "state": "running",
        "name": "slipway",
        "target_url": f"https://ci.example.com/runs/{run.pk}/",
        "description": "Run #12 is running",
        "ref": "main",
    }
    assert second.path == f"/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}"
    assert second.body["state"] == "failed"


@pytest.mark.django_db
@pytest.mark.parametrize("forge_name", ["gitea", "forgejo"])
def test_gitea_and_forgejo_status_request(forge, forge_name) -> None:
    run = run_for(forge.url + "/api/v1", forge_name)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.FAILED, status_reason="job test failed"
    )
    forge_status.report(run.pk)
    [request] = forge.requests
    assert request.path == f"/api/v1/repos/acme/app/statuses/{SHA}"
    assert request.headers["authorization"] == "token tok-123"
    assert request.body["state"] == "failure"
    assert request.body["context"] == "slipway"
    assert request.body["description"] == "Run #12 failed: job test failed"


@pytest.mark.parametrize(
    "status,github,gitlab",
    [
        ("created", "pending", "pending"),
        ("pending", "pending", "pending"),
        ("running", "pending", "running"),
        ("success", "success", "success"),
        ("failed", "failure", "failed"),
        ("canceled", "error", "canceled"),
        ("skipped", "success", "skipped"),
    ],
)
def test_every_run_status_maps_to_a_forge_state(status, github, gitlab) -> None:
    assert forge_status.GITHUB_STATES[status] == github
    assert forge_status.GITEA_STATES[status] == github
    assert forge_status.GITLAB_STATES[status] == gitlab


@pytest.mark.django_db
def test_description_is_cut_to_githubs_limit(forge) -> None:
    run = run_for(forge.url, "github")
    Run.objects.filter(pk=run.pk).update(status="failed", status_reason="x" * 300)
    forge_status.report(run.pk)
    assert len(forge.requests[0].body["description"]) == 140


# --- nothing to report -------------------------------------------------------------


@pytest.mark.django_db
def test_tokenless_repository_reports_nothing(forge) -> None:
    run = run_for(forge.url, "github", https_token="")
    forge_status.report(run.pk)
    assert forge.requests == []


@pytest.mark.django_db
def test_generic_forge_and_missing_sha_report_nothing(forge) -> None:
    generic = run_for(forge.url, "generic")
    forge_status.report(generic.pk)
    no_sha = run_for(forge.url, "github")
    Run.objects.filter(pk=no_sha.pk).update(commit_sha="")
    forge_status.report(no_sha.pk)
    forge_status.report(999_999)  # A deleted run.
    assert forge.requests == []


def test_api_base_and_project_default_from_the_clone_url() -> None:
    def repo(forge: str, url: str) -> Repository:
        return Repository(forge=forge, clone_url=url)

    github = repo("github", "https://github.com/acme/app.git")
    assert forge_status.api_base(github) == "https://api.github.com"
    assert forge_status.project(github) == "acme/app"
    enterprise = repo("github", "git@ghe.example.com:acme/app.git")
    assert forge_status.api_base(enterprise) == "https://ghe.example.com/api/v3"
    assert forge_status.project(enterprise) == "acme/app"
    gitlab = repo("gitlab", "https://gitlab.example.com/group/sub/app.git")
    assert forge_status.api_base(gitlab) == "https://gitlab.example.com/api/v4"
    assert forge_status.project(gitlab) == "group/sub/app"
    gitea = repo("forgejo", "https://code.example.org/team/site")
    assert forge_status.api_base(gitea) == "https://code.example.org/api/v1"
    assert forge_status.api_base(repo("github", "/srv/git/app")) == ""


# --- failures: retried, logged, never raised into the run --------------------------


@pytest.mark.django_db
def test_server_error_raises_an_oserror_for_celery_to_retry(forge) -> None:
    run = run_for(forge.url, "github")
    forge.answers = [500]
    with pytest.raises(OSError):
        forge_status.report(run.pk)
    assert len(forge.requests) == 1


@pytest.mark.django_db
def test_the_task_retries_a_500_and_then_reports(forge) -> None:
    run = run_for(forge.url, "github")
    forge.answers = [500, 502]
    result = tasks.report_commit_status.apply(args=(run.pk,))
    assert result.successful(), result.traceback
    assert [r.body["state"] for r in forge.requests] == ["success"] * 3


@pytest.mark.django_db
def test_refusal_is_logged_and_not_retried(forge, caplog) -> None:
    run = run_for(forge.url, "github")
    forge.answers = [422]
    forge_status.report(run.pk)  # No exception: retrying cannot help.
    assert len(forge.requests) == 1
    assert "refused" in caplog.text and "422" in caplog.text
    assert "tok-123" not in caplog.text


@pytest.mark.django_db
def test_redirect_is_not_followed_with_the_token(forge) -> None:
    run = run_for(forge.url, "github")
    forge.answers = [307]
    forge_status.report(run.pk)
    assert len(forge.requests) == 1


@pytest.mark.django_db
def test_unreachable_forge_raises_an_oserror() -> None:
    run = run_for("http://127.0.0.1:9", "gitea")  # Port 9 (discard): refused.
    with pytest.raises(OSError):
        forge_status.report(run.pk)
