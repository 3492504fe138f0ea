"""The webhook endpoint end to end: real git pushes, the forges' own payloads and headers.

Every test pushes real commits to a bare "origin" repository, builds the request the
forge would send for that push (``webhooks.testing.signed_request``, from the forges'
documented payloads, with the real shas) and posts it to ``/hooks/<forge>/<name>/``.

The endpoint records the delivery and queues its run on the real broker; no worker
runs here, so ``start_queued_runs`` takes those messages from the broker and runs
them as a worker would (test_webhook_endpoint_live runs real workers).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client, TestCase
from django.utils import timezone

from config.celery import app as celery_app
from core.models import AuditEvent
from core.testing.processes import workers_paused
from pipelines import hook_tasks, hooks, services
from pipelines.models import Repository, Run, WebhookDelivery
from pipelines.webhooks import ZERO_SHA
from pipelines.webhooks.testing import signed_request

from .gitrepo import GIT_ENV, GitRepo

SECRET = "s3cret-for-the-hook"
PIPELINE = "build:\n  script: [echo built]\n"


@pytest.fixture(autouse=True)
def _no_hook_rate_limit(settings) -> None:
    # These tests post hundreds of deliveries from 127.0.0.1 within a minute.
    settings.SLIPWAY = {**settings.SLIPWAY, "RATELIMIT_HOOKS": "0"}


class Origin:
    """A bare repository (what the forge hosts) and a clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        subprocess.run(
            ["git", "init", "-q", "--bare", "-b", "main", str(self.bare)],
            check=True,
            env=GIT_ENV,
        )
        self.work = GitRepo(root / "work")
        self.work.git("remote", "add", "origin", str(self.bare))

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        return self.work.commit(files, message)

    def push(self, *refs: str) -> None:
        self.work.git("push", "-q", "--force", "origin", *refs)

    def sha(self, ref: str) -> str:
        return self.work.git("rev-parse", ref)


@pytest.fixture
def origin(tmp_path: Path, settings) -> Origin:
    settings.SLIPWAY = {**settings.SLIPWAY, "MIRROR_DIR": tmp_path / "mirrors"}
    origin = Origin(tmp_path)
    origin.commit({".slipway.yml": PIPELINE, "README.md": "one"}, "first")
    origin.push("main")
    return origin


@pytest.fixture
def purge_queue() -> Iterator[None]:
    """Play the worker: take this test's messages, then drop what it left behind."""
    # Live workers of earlier tests would race the test for its messages; a later
    # test's workers would pick up leftovers for rows long gone.
    with workers_paused():
        yield
        celery_app.control.purge()


def make_repository(origin: Origin, forge: str, **fields: object) -> Repository:
    repository = Repository.objects.create(
        name=f"app-{forge}",
        clone_url=str(origin.bare),
        forge=forge,
        webhook_secret=SECRET,
        **fields,
    )
    return repository


def post(
    client: Client, forge: str, name: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, object]]:
    extra = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    # The run is queued after the delivery's commit; inside a test's transaction,
    # run those callbacks as the commit would.
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            f"/hooks/{forge}/{name}/",
            data=body,
            content_type=headers.get("Content-Type", "application/json"),
            headers=extra,
        )
    try:
        answer = json.loads(response.content)
    except ValueError:
        answer = {"raw": response.content.decode(errors="replace")}
    return response.status_code, answer


def start_queued_runs() -> int:
    """Run the queued create_webhook_runs messages as a worker would."""
    return hook_tasks.run_queued()


def send(
    client: Client, repository: Repository, forge: str | None = None, **kwargs: object
) -> tuple[int, dict[str, object]]:
    forge = forge or repository.forge
    headers, body = signed_request(
        forge, SECRET, repo_url=repository.clone_url, **kwargs
    )
    return post(client, forge, repository.name, headers, body)


# --- one run per delivery, on the right commit and branch --------------------------


@pytest.mark.django_db
def test_github_push_starts_one_run_on_the_pushed_commit(client, origin) -> None:
    repository = make_repository(origin, "github")
    before = origin.sha("main")
    after = origin.commit({"app.py": "print(1)"}, "Add the app")
    origin.push("main")
    status, answer = send(
        client,
        repository,
        ref="refs/heads/main",
        before=before,
        after=after,
        commits=[{"sha": after, "message": "Add the app", "author": "Ada"}],
        delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
    )
    assert status == 201, answer
    assert answer == {
        "status": "created",
        "reason": "run queued",
        "delivery": WebhookDelivery.objects.get().pk,
    }
    # The request only queued the run: nothing exists until a worker starts it.
    assert not Run.objects.exists()
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert (run.trigger, run.ref, run.branch, run.tag) == (
        "push",
        "refs/heads/main",
        "main",
        "",
    )
    assert (run.commit_sha, run.before_sha) == (after, before)
    assert run.commit_message == "Add the app"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.status_code, delivery.run) == (
        "created",
        201,
        run,
    )
    assert delivery.reason == f"run #{run.number} created"
    # The run was audited with its source, as every run is.
    assert AuditEvent.objects.get(action="run.trigger").source == "webhook"
    assert delivery.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert delivery.event == "push" and delivery.forge == "github"
    # The stored headers never keep the signature.
    assert delivery.headers["X-Hub-Signature-256"] == "[redacted]"
    assert SECRET not in json.dumps(delivery.headers)
    # The commit is really there: starting the run resolves it and creates the job.
    services.start_run(run.pk)
    run.refresh_from_db()
    assert run.commit_sha == after and run.error == ""
    assert list(run.jobs.values_list("name", flat=True)) == ["build"]


@pytest.mark.django_db
def test_github_tag_push_starts_a_tag_run(client, origin) -> None:
    repository = make_repository(origin, "github")
    sha = origin.sha("main")
    origin.work.git("tag", "v1.0.0")
    origin.push("v1.0.0")
    status, answer = send(
        client, repository, event="tag", ref="refs/tags/v1.0.0", after=sha
    )
    assert status == 201, answer
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert (run.trigger, run.ref, run.branch, run.tag, run.commit_sha) == (
        "tag",
        "refs/tags/v1.0.0",
        "",
        "v1.0.0",
        sha,
    )


@pytest.mark.django_db
def test_github_annotated_tag_runs_on_the_tagged_commit(client, origin) -> None:
    repository = make_repository(origin, "github")
    commit = origin.sha("main")
    origin.work.git("tag", "-a", "v2.0.0", "-m", "Release 2")
    origin.push("v2.0.0")
    tag_object = origin.sha("v2.0.0")
    assert tag_object != commit
    # GitHub's "after" for an annotated tag is the tag object.
    status, answer = send(
        client, repository, event="tag", ref="refs/tags/v2.0.0", after=tag_object
    )
    assert status == 201, answer
    assert start_queued_runs() == 1
    run = Run.objects.get()
    services.start_run(run.pk)
    run.refresh_from_db()
    assert run.commit_sha == commit and run.tag == "v2.0.0", run.error


@pytest.mark.django_db
def test_github_pull_request_runs_the_head_of_the_source_branch(client, origin) -> None:
    repository = make_repository(origin, "github")
    origin.work.git("checkout", "-q", "-b", "feature/login")
    head = origin.commit({"login.py": "ok"}, "Add login")
    origin.push("feature/login")
    status, answer = send(
        client,
        repository,
        event="merge_request",
        ref="refs/heads/feature/login",
        after=head,
        mr_number=7,
        target_branch="main",
    )
    assert status == 201, answer
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert (run.trigger, run.branch, run.commit_sha) == (
        "merge_request",
        "feature/login",
        head,
    )
    assert WebhookDelivery.objects.get().event == "merge_request"
    services.start_run(run.pk)
    run.refresh_from_db()
    assert run.commit_sha == head and run.jobs.count() == 1


@pytest.mark.django_db
def test_github_pull_request_synchronize_and_form_encoded_push(client, origin) -> None:
    repository = make_repository(origin, "github")
    origin.work.git("checkout", "-q", "-b", "fix")
    first = origin.commit({"a": "1"}, "one")
    second = origin.commit({"a": "2"}, "two")
    origin.push("fix")
    status, _ = send(
        client,
        repository,
        event="merge_request",
        ref="fix",
        before=first,
        after=second,
    )
    assert status == 201
    status, _ = send(
        client,
        repository,
        ref="refs/heads/fix",
        before=first,
        after=second,
        commits=[second],
        form_encoded=True,
    )
    assert status == 201
    assert start_queued_runs() == 2
    runs = list(Run.objects.order_by("pk"))
    assert [(r.trigger, r.branch, r.commit_sha, r.before_sha) for r in runs] == [
        ("merge_request", "fix", second, first),
        ("push", "fix", second, first),
    ]


@pytest.mark.django_db
def test_gitlab_push_tag_and_merge_request_hooks(client, origin) -> None:
    repository = make_repository(origin, "gitlab")
    before = origin.sha("main")
    after = origin.commit({"b": "1"}, "GitLab push")
    origin.work.git("tag", "v3")
    origin.work.git("checkout", "-q", "-b", "mr-branch")
    mr_head = origin.commit({"c": "1"}, "MR work")
    origin.push("main", "v3", "mr-branch")

    assert send(
        client, repository, ref="refs/heads/main", before=before, after=after,
        commits=[{"sha": after, "message": "GitLab push"}],
    )[0] == 201  # fmt: skip
    assert send(client, repository, event="tag", ref="v3", after=after)[0] == 201
    assert (
        send(
            client,
            repository,
            event="merge_request",
            ref="mr-branch",
            after=mr_head,
            mr_number=3,
        )[0]
        == 201
    )
    assert start_queued_runs() == 3
    runs = [
        (r.trigger, r.ref, r.branch, r.tag, r.commit_sha)
        for r in Run.objects.order_by("pk")
    ]
    assert runs == [
        ("push", "refs/heads/main", "main", "", after),
        ("tag", "refs/tags/v3", "", "v3", after),
        ("merge_request", "refs/heads/mr-branch", "mr-branch", "", mr_head),
    ]
    events = list(
        WebhookDelivery.objects.order_by("pk").values_list("event", "outcome")
    )
    assert events == [
        ("push", "created"),
        ("tag", "created"),
        ("merge_request", "created"),
    ]
    # The Idempotency-Key is the delivery id; the token is not stored.
    delivery = WebhookDelivery.objects.order_by("pk").first()
    assert delivery.delivery_id == delivery.headers["Idempotency-Key"]
    assert delivery.headers["X-Gitlab-Token"] == "[redacted]"


@pytest.mark.django_db
@pytest.mark.parametrize("forge", ["gitea", "forgejo"])
def test_gitea_and_forgejo_push(client, origin, forge) -> None:
    repository = make_repository(origin, forge)
    before = origin.sha("main")
    after = origin.commit({"d": "1"}, f"{forge} push")
    origin.push("main")
    status, answer = send(
        client,
        repository,
        ref="refs/heads/main",
        before=before,
        after=after,
        commits=[after],
        delivery_id=f"{forge}-delivery-1",
    )
    assert status == 201, answer
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert (run.trigger, run.branch, run.commit_sha) == ("push", "main", after)
    delivery = WebhookDelivery.objects.get()
    assert delivery.forge == forge and delivery.delivery_id == f"{forge}-delivery-1"
    assert delivery.headers[f"X-{forge.title()}-Signature"] == "[redacted]"


@pytest.mark.django_db
def test_generic_trigger_with_variables(client, origin) -> None:
    repository = make_repository(origin, "generic")
    sha = origin.sha("main")
    status, answer = send(
        client,
        repository,
        ref="main",
        after=sha,
        variables={"DEPLOY": "yes"},
        delivery_id="gen-1",
    )
    assert status == 201, answer
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert (run.trigger, run.branch, run.commit_sha, run.variables) == (
        "webhook",
        "main",
        sha,
        {"DEPLOY": "yes"},
    )
    assert WebhookDelivery.objects.get().headers["Authorization"] == "[redacted]"


@pytest.mark.django_db
def test_a_run_message_delivered_twice_starts_one_run(client, origin) -> None:
    repository = make_repository(origin, "github")
    status, answer = send(
        client, repository, ref="refs/heads/main", after=origin.sha("main")
    )
    assert status == 201, answer
    delivery = WebhookDelivery.objects.get()
    arguments = hooks.trigger_arguments_of(delivery)
    # The broker may deliver a message again (acks_late): the second does nothing.
    assert hook_tasks.create_webhook_runs([[delivery.pk, arguments]]) == 1
    assert hook_tasks.create_webhook_runs([[delivery.pk, arguments]]) == 0
    assert start_queued_runs() == 0
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_deliveries_whose_message_was_lost_are_started_from_the_record(
    client, origin
) -> None:
    repository = make_repository(origin, "gitlab")
    sha = origin.sha("main")
    assert send(client, repository, ref="refs/heads/main", after=sha)[0] == 201
    # Redis lost the queue (a restart): the recorded delivery still starts its run.
    celery_app.control.purge()
    assert start_queued_runs() == 0
    assert hooks.create_queued_runs() == 1
    run = Run.objects.get()
    assert (run.branch, run.commit_sha) == ("main", sha)
    assert WebhookDelivery.objects.get().run == run
    assert hooks.create_queued_runs() == 0


@pytest.mark.django_db
def test_the_reaper_starts_lost_deliveries_after_the_grace_only(
    client, origin, purge_queue
) -> None:
    repository = make_repository(origin, "github")
    first = origin.sha("main")
    assert send(client, repository, ref="refs/heads/main", after=first)[0] == 201
    origin.commit({"README.md": "two"}, "second")
    origin.push("main")
    second = origin.sha("main")
    assert send(client, repository, ref="refs/heads/main", after=second)[0] == 201
    old, fresh = WebhookDelivery.objects.order_by("pk")
    # Redis lost both messages; the first delivery was answered long enough ago.
    celery_app.control.purge()
    WebhookDelivery.objects.filter(pk=old.pk).update(
        received_at=timezone.now() - timedelta(seconds=services.STALL_SECONDS + 30)
    )
    assert services.redispatch_stalled() == 1
    run = Run.objects.get()
    assert (run.trigger, run.branch, run.commit_sha) == ("push", "main", first)
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.run, old.reason) == (run, f"run #{run.number} created")
    # The fresh one's message may merely be in flight: left for it.
    assert (fresh.run, fresh.reason) == (None, hooks.QUEUED)
    # The lost message arrives after all, and the reaper runs again: no second run.
    arguments = hooks.trigger_arguments_of(old)
    assert hook_tasks.create_webhook_runs([[old.pk, arguments]]) == 0
    assert services.redispatch_stalled() == 0
    assert Run.objects.count() == 1
    # A delivery older than the window is left to a person's redeliver.
    WebhookDelivery.objects.filter(pk=fresh.pk).update(
        received_at=timezone.now() - services.LOST_DELIVERY_WINDOW - timedelta(hours=1)
    )
    assert services.redispatch_stalled() == 0
    assert Run.objects.count() == 1


# --- refusals: nothing created -----------------------------------------------------


def _github_push(origin: Origin, repository: Repository, **kwargs: object):
    return signed_request(
        "github",
        SECRET,
        ref="refs/heads/main",
        after=origin.sha("main"),
        repo_url=repository.clone_url,
        **kwargs,
    )


@pytest.mark.django_db
def test_wrong_signature_is_rejected_with_401(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = signed_request(
        "github",
        "not-the-secret",
        after=origin.sha("main"),
        repo_url=repository.clone_url,
    )
    status, answer = post(client, "github", repository.name, headers, body)
    assert status == 401, answer
    assert not Run.objects.exists()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.status_code) == ("rejected", 401)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "forge,header",
    [
        ("github", "X-Hub-Signature-256"),
        ("gitlab", "X-Gitlab-Token"),
        ("gitea", None),
        ("generic", "Authorization"),
    ],
)
def test_missing_signature_is_rejected_with_401(client, origin, forge, header) -> None:
    repository = make_repository(origin, forge)
    headers, body = signed_request(
        forge, SECRET, after=origin.sha("main"), repo_url=repository.clone_url
    )
    drop = (
        {header.lower()}
        if header
        else {
            h.lower()
            for h in headers
            if "signature" in h.lower() or h.lower() == "x-hub-signature-256"
        }
    )
    headers = {k: v for k, v in headers.items() if k.lower() not in drop}
    status, answer = post(client, forge, repository.name, headers, body)
    assert status == 401, answer
    assert not Run.objects.exists()
    assert WebhookDelivery.objects.get().outcome == "rejected"


@pytest.mark.django_db
def test_tampered_body_is_rejected(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository)
    tampered = body.replace(b'"refs/heads/main"', b'"refs/heads/evil"')
    assert tampered != body
    assert post(client, "github", repository.name, headers, tampered)[0] == 401
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_replayed_delivery_answers_duplicate_and_starts_nothing(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository, delivery_id="same-delivery")
    first = post(client, "github", repository.name, headers, body)
    second = post(client, "github", repository.name, headers, body)
    assert first[0] == 201
    assert second == (
        200,
        {
            "status": "duplicate",
            "reason": "delivery seen before",
            "delivery": second[1]["delivery"],
        },
    )
    assert start_queued_runs() == 1
    assert Run.objects.count() == 1
    assert list(
        WebhookDelivery.objects.order_by("pk").values_list("outcome", flat=True)
    ) == ["created", "duplicate"]


@pytest.mark.django_db
def test_gitlab_retry_with_the_same_idempotency_key_is_a_duplicate(
    client, origin
) -> None:
    repository = make_repository(origin, "gitlab")
    headers, body = signed_request(
        "gitlab",
        SECRET,
        after=origin.sha("main"),
        repo_url=repository.clone_url,
        delivery_id="idem-1",
    )
    assert post(client, "gitlab", repository.name, headers, body)[0] == 201
    # GitLab's retry: a new X-Gitlab-Webhook-UUID, the same Idempotency-Key.
    retry = {**headers, "X-Gitlab-Webhook-UUID": "another-attempt"}
    status, answer = post(client, "gitlab", repository.name, retry, body)
    assert (status, answer["status"]) == (200, "duplicate")
    assert start_queued_runs() == 1
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_malformed_json_is_rejected_with_400(client, origin) -> None:
    repository = make_repository(origin, "github")
    body = b'{"ref": "refs/heads/main", "after": '
    headers, _ = _github_push(origin, repository)
    headers["X-Hub-Signature-256"] = "sha256=" + hooks_hmac(body)
    status, answer = post(client, "github", repository.name, headers, body)
    assert status == 400, answer
    assert "JSON" in answer["reason"]
    assert not Run.objects.exists()
    assert WebhookDelivery.objects.get().outcome == "rejected"


def hooks_hmac(body: bytes) -> str:
    from pipelines.webhooks.base import hmac_sha256_hex

    return hmac_sha256_hex(SECRET, body)


@pytest.mark.django_db
def test_thirty_megabyte_body_is_refused_with_413(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository)
    big = body[:-1] + b', "padding": "' + b"x" * (30 * 1024 * 1024) + b'"}'
    headers["X-Hub-Signature-256"] = "sha256=" + hooks_hmac(big)
    status, answer = post(client, "github", repository.name, headers, big)
    assert status == 413, answer
    assert not Run.objects.exists()
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_oversized_body_is_refused_also_without_the_view(origin, settings) -> None:
    # A chunked body has no Content-Length: hooks.receive checks the size itself.
    settings.SLIPWAY = {**settings.SLIPWAY, "WEBHOOK_MAX_BYTES": 1000}
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository)
    assert len(body) > 1000
    result = hooks.receive("github", repository.name, headers, body)
    assert result.status == 413
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_bad_content_length_is_refused(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository)
    response = client.post(
        f"/hooks/github/{repository.name}/",
        data=body,
        content_type="application/json",
        headers=headers,
        CONTENT_LENGTH="12abc",
    )
    assert response.status_code == 400
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_unknown_repository_and_forge_answer_404(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository)
    assert post(client, "github", "no-such-repo", headers, body)[0] == 404
    assert post(client, "bitbucket", repository.name, headers, body)[0] == 404
    assert post(client, "github", "bad%00name", headers, body)[0] == 404
    assert not Run.objects.exists()
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_get_is_not_allowed(client, origin) -> None:
    repository = make_repository(origin, "github")
    assert client.get(f"/hooks/github/{repository.name}/").status_code == 405


# --- recorded, nothing started -----------------------------------------------------


@pytest.mark.django_db
def test_branch_deletion_starts_nothing_and_is_recorded_ignored(client, origin) -> None:
    repository = make_repository(origin, "github")
    origin.work.git("branch", "old")
    origin.push("old")
    sha = origin.sha("old")
    origin.push(":old")
    status, answer = send(
        client, repository, ref="refs/heads/old", before=sha, after=ZERO_SHA
    )
    assert (status, answer["status"]) == (200, "ignored")
    assert not Run.objects.exists()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.reason) == (
        "ignored",
        "refs/heads/old was deleted",
    )


@pytest.mark.django_db
def test_gitea_branch_deletion_is_recorded_ignored(client, origin) -> None:
    repository = make_repository(origin, "gitea")
    status, answer = send(
        client, repository, ref="refs/heads/gone", before="1" * 40, after=ZERO_SHA
    )
    assert (status, answer["status"]) == (200, "ignored")
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_push_to_a_filtered_branch_is_recorded_ignored_with_the_reason(
    client, origin
) -> None:
    repository = make_repository(origin, "github", branch_filter="main, release/*")
    origin.work.git("checkout", "-q", "-b", "experiment")
    sha = origin.commit({"x": "1"})
    origin.push("experiment")
    status, answer = send(client, repository, ref="refs/heads/experiment", after=sha)
    assert (status, answer["status"]) == (200, "ignored")
    assert not Run.objects.exists()
    assert WebhookDelivery.objects.get().reason == (
        "branch experiment does not match the branch filter 'main, release/*'"
    )
    # A matching branch still runs.
    origin.work.git("checkout", "-q", "-b", "release/1.2")
    origin.push("release/1.2")
    assert send(client, repository, ref="refs/heads/release/1.2", after=sha)[0] == 201
    assert start_queued_runs() == 1


@pytest.mark.django_db
def test_tag_filter_ignores_other_tags(client, origin) -> None:
    repository = make_repository(origin, "gitlab", tag_filter="v*")
    sha = origin.sha("main")
    status, answer = send(client, repository, event="tag", ref="nightly", after=sha)
    assert (status, answer["status"]) == (200, "ignored")
    assert "tag filter" in answer["reason"]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_ping_answers_200_and_is_recorded(client, origin) -> None:
    repository = make_repository(origin, "github")
    status, answer = send(client, repository, event="ping", after="")
    assert (status, answer["status"]) == (200, "ignored")
    assert not Run.objects.exists()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.outcome, delivery.status_code) == (
        "ping",
        "ignored",
        200,
    )


@pytest.mark.django_db
def test_unhandled_event_is_recorded_ignored(client, origin) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository)
    headers["X-GitHub-Event"] = "issues"
    status, answer = post(client, "github", repository.name, headers, body)
    assert (status, answer["reason"]) == (200, "event issues not handled")
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_hostile_but_signed_fields_never_fail_the_request(client, origin) -> None:
    # NUL bytes and overlong values in signed payloads: PostgreSQL refuses NUL in
    # text and long values in bounded columns; the endpoint must still answer.
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository, commits=[origin.sha("main")])
    data = json.loads(body)
    data["pusher"]["name"] = "A" * 1000 + "\x00"
    data["head_commit"]["message"] = "nul \x00 inside"
    body = json.dumps(data).encode()
    headers["X-Hub-Signature-256"] = "sha256=" + hooks_hmac(body)
    headers["X-Extra"] = "value"
    status, answer = post(client, "github", repository.name, headers, body)
    assert status == 201, answer
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert "\x00" not in run.commit_message and len(run.commit_author) == 200

    data["ref"] = "refs/heads/" + "b" * 400
    body = json.dumps(data).encode()
    headers["X-Hub-Signature-256"] = "sha256=" + hooks_hmac(body)
    headers["X-GitHub-Delivery"] = "long-ref"
    status, answer = post(client, "github", repository.name, headers, body)
    assert (status, answer["status"]) == (200, "ignored"), answer
    assert start_queued_runs() == 0
    assert Run.objects.count() == 1


# --- concurrency -------------------------------------------------------------------


def _post_concurrently(
    repository: Repository, headers: dict[str, str], body: bytes, count: int
) -> list[int]:
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            client = Client()
            barrier.wait(10)
            statuses.append(post(client, "github", repository.name, headers, body)[0])
        except BaseException as exc:  # noqa: BLE001 - reported by the test below.
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return statuses


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_redeliveries_start_exactly_one_run(origin, purge_queue) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository, delivery_id="raced")
    statuses = _post_concurrently(repository, headers, body, 10)
    assert sorted(statuses) == [200] * 9 + [201]
    assert start_queued_runs() == 1
    assert Run.objects.count() == 1
    outcomes = sorted(WebhookDelivery.objects.values_list("outcome", flat=True))
    assert outcomes == ["created"] + ["duplicate"] * 9


@pytest.mark.django_db(transaction=True)
def test_unique_constraint_wins_when_every_request_passes_the_check(
    origin, monkeypatch, purge_queue
) -> None:
    # Make the race certain: every request believes the delivery is new (as when
    # Redis lost its keys), so only the database's unique (repository, delivery_id)
    # row can stop the others.
    monkeypatch.setattr(hooks, "gate", lambda pending, version: hooks.NEW)
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository, delivery_id="raced-2")
    statuses = _post_concurrently(repository, headers, body, 10)
    assert sorted(statuses) == [200] * 9 + [201]
    assert start_queued_runs() == 1
    run = Run.objects.get()
    assert run.number == 1  # Only the winner's run was ever queued.
    assert (
        WebhookDelivery.objects.filter(outcome="duplicate", run__isnull=True).count()
        == 9
    )


@pytest.mark.django_db(transaction=True)
def test_the_reaper_racing_the_late_message_starts_one_run(origin, purge_queue) -> None:
    repository = make_repository(origin, "github")
    headers, body = _github_push(origin, repository, delivery_id="late")
    assert post(Client(), "github", repository.name, headers, body)[0] == 201
    delivery = WebhookDelivery.objects.get()
    arguments = hooks.trigger_arguments_of(delivery)
    celery_app.control.purge()  # The workers' copies of the message: none here.
    soon = timezone.now() + timedelta(minutes=1)
    barrier = threading.Barrier(6)
    started: list[int] = []
    errors: list[BaseException] = []

    def reaper() -> None:
        started.append(hooks.create_queued_runs(received_before=soon))

    def late_message() -> None:
        started.append(hook_tasks.create_webhook_runs([[delivery.pk, arguments]]))

    def race(work) -> None:
        try:
            barrier.wait(10)
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below.
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=race, args=(work,))
        for work in [reaper, late_message] * 3
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(started) == [0] * 5 + [1]
    assert Run.objects.count() == 1
    assert WebhookDelivery.objects.get().run == Run.objects.get()
