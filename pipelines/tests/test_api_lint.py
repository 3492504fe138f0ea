"""Linting a pipeline file without running it: POST /api/v1/lint/ and lint_pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from core.models import ApiToken, AuditEvent
from core.testing.processes import subprocess_env
from core.tests.api_helpers import assert_error, token_client
from pipelines import api
from pipelines.engine import spec
from pipelines.models import Run

pytestmark = pytest.mark.django_db

URL = "/api/v1/lint/"

VALID = """\
stages: [build, test, deploy]
build:
  stage: build
  script: [make]
unit:
  stage: test
  needs: [build]
  tags: [linux]
  script: [make test]
ship:
  stage: deploy
  when: manual
  script: [./ship.sh]
"""

# Three mistakes whose positions are known: a misspelled key (line 3, column 3), a
# need on a job that does not exist (line 6, column 11) and a needs cycle.
INVALID = """\
build:
  stage: build
  scrpt: [make]
unit:
  script: [make test]
  needs: [biuld]
a:
  script: [x]
  needs: [b]
b:
  script: [y]
  needs: [a]
"""


def lint_text(client, text: str, content_type: str = "text/plain"):
    return client.post(URL, data=text.encode(), content_type=content_type)


def test_a_valid_file_answers_its_stages_and_jobs(victor: User) -> None:
    # A read-scope token may lint: nothing is written.
    client = token_client(victor, scope=ApiToken.Scope.READ)
    audited = AuditEvent.objects.count()
    response = lint_text(client, VALID)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is True and body["errors"] == []
    assert body["stages"] == ["build", "test", "deploy"]
    assert body["jobs"] == [
        {
            "name": "build",
            "stage": "build",
            "when": "on_success",
            "needs": None,
            "allow_failure": False,
            "tags": [],
            "line": 2,
        },
        {
            "name": "unit",
            "stage": "test",
            "when": "on_success",
            "needs": ["build"],
            "allow_failure": False,
            "tags": ["linux"],
            "line": 5,
        },
        {
            "name": "ship",
            "stage": "deploy",
            "when": "manual",
            "needs": None,
            "allow_failure": True,  # A manual job may fail by default (GitLab's).
            "tags": [],
            "line": 10,
        },
    ]
    assert not Run.objects.exists()
    assert AuditEvent.objects.count() == audited


def test_an_invalid_file_names_each_problems_line_column_and_key(bob: User) -> None:
    client = token_client(bob)
    response = client.post(URL, {"content": INVALID}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is False
    assert body["stages"] is None and body["jobs"] is None
    errors = body["errors"]
    typo = next(e for e in errors if "scrpt" in e["message"])
    assert (typo["line"], typo["column"], typo["key"]) == (3, 3, "jobs.build.scrpt")
    assert "did you mean 'script'?" in typo["message"]
    assert typo["text"].startswith(".slipway.yml:3:3: jobs.build.scrpt: ")
    unknown = next(e for e in errors if "biuld" in e["message"])
    assert (unknown["line"], unknown["column"]) == (6, 11)
    assert unknown["key"] == "jobs.unit.needs"
    cycle = next(e for e in errors if "cycle" in e["message"])
    assert "a -> b -> a" in cycle["message"] or "b -> a -> b" in cycle["message"]
    # The same messages a failed run shows.
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(INVALID)
    assert [e["text"] for e in errors] == str(caught.value).splitlines()
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "content_type", ["text/yaml", "application/yaml", "application/x-yaml"]
)
def test_the_file_may_be_sent_as_yaml(victor: User, content_type: str) -> None:
    response = lint_text(token_client(victor), VALID, content_type)
    assert response.status_code == 200, response.content
    assert response.json()["valid"] is True


def test_empty_and_oversized_files_are_lint_errors(victor: User) -> None:
    client = token_client(victor)
    empty = lint_text(client, "").json()
    assert empty["valid"] is False
    assert "empty" in empty["errors"][0]["message"]
    big = "build:\n  script:\n" + "    - echo aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" * 10_000
    assert spec.MAX_SPEC_BYTES < len(big) < api.LINT_MAX_BODY
    answer = lint_text(client, big).json()
    assert answer["valid"] is False
    assert answer["errors"][0]["message"].endswith(
        f"the limit is {spec.MAX_SPEC_BYTES} bytes"
    )


def test_bad_requests_are_refused_with_the_error_body(victor: User) -> None:
    client = token_client(victor)
    missing = assert_error(client.post(URL, {}, format="json"), 400, "invalid")
    assert "content" in missing["details"]
    wrong = client.post(URL, {"content": ["build"]}, format="json")
    assert "content" in assert_error(wrong, 400, "invalid")["details"]
    assert_error(client.post(URL, data=b"\xff\xfe bad", content_type="text/plain"), 400)
    assert_error(client.post(URL, data=b"{", content_type="application/json"), 400)
    huge = json.dumps({"content": "x" * (api.LINT_MAX_BODY + 10)})
    refused = assert_error(
        client.post(URL, data=huge, content_type="application/json"), 400
    )
    assert "larger than" in refused["message"]
    assert_error(
        client.post(URL, data=b"<a/>", content_type="application/xml"),
        415,
        "unsupported_media_type",
    )
    assert_error(client.get(URL), 405, "method_not_allowed")


def test_lint_needs_a_signed_in_user_with_a_role(client, charlie: User) -> None:
    anonymous = client.post(URL, {"content": VALID}, content_type="application/json")
    assert_error(anonymous, 401)
    assert_error(
        token_client(charlie).post(URL, {"content": VALID}, format="json"), 403
    )


def test_the_schema_documents_the_lint_operation(victor: User) -> None:
    client = token_client(victor)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"][URL]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "application/json",
        "text/plain",
        "text/yaml",
    }
    assert "200" in operation["responses"]


# --- manage.py lint_pipeline ---------------------------------------------------------


def lint_command(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "lint_pipeline", str(path)],
        cwd=settings.BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lint_pipeline_command_exits_0_for_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / ".slipway.yml"
    path.write_text(VALID)
    done = lint_command(path)
    assert done.returncode == 0, done.stderr
    assert "valid — 3 stages, 3 jobs" in done.stdout


def test_lint_pipeline_command_exits_1_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / ".slipway.yml"
    path.write_text(INVALID)
    done = lint_command(path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert any(
        line.startswith(".slipway.yml:3:3: jobs.build.scrpt: unknown key")
        for line in lines
    ), lines
    assert any(line.startswith(".slipway.yml:6:11: jobs.unit.needs:") for line in lines)
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(INVALID)
    assert f"{path}: {len(caught.value.issues)} problem(s)" in done.stderr


def test_lint_pipeline_command_reports_a_missing_file(tmp_path: Path) -> None:
    done = lint_command(tmp_path / "nope.yml")
    assert done.returncode == 1
    assert "cannot read" in done.stderr
