"""Tests for pipelines.webhooks: verification and normalisation per forge."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.webhooks import (
    FORGES,
    ZERO_SHA,
    BadPayload,
    BadSignature,
    Forbidden,
    MissingSignature,
    UnknownForge,
    WebhookError,
    generic,
    get_forge,
    gitea,
    github,
    gitlab,
    normalise_repo_url,
    verify_and_parse,
)
from pipelines.webhooks.testing import signed_request

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "It's a Secret to Everybody"
SHA_A = "a" * 40
SHA_B = "b" * 40
REPO = "https://git.example.com/team/app.git"


def fixture(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- registry ----------------------------------------------------------------------


def test_get_forge_returns_each_module_and_forgejo_shares_gitea() -> None:
    assert get_forge("github") is github
    assert get_forge("GitLab") is gitlab
    assert get_forge("forgejo") is gitea
    assert get_forge("generic") is generic
    assert set(FORGES) == {"github", "gitlab", "gitea", "forgejo", "generic"}


def test_get_forge_rejects_unknown_name_with_404() -> None:
    with pytest.raises(UnknownForge) as info:
        get_forge("bitbucket")
    assert info.value.status == 404


def test_error_statuses() -> None:
    assert BadSignature().status == 401
    assert MissingSignature().status == 401
    assert Forbidden().status == 403
    assert BadPayload("x").status == 400
    assert isinstance(MissingSignature(), WebhookError)


# --- GitHub ------------------------------------------------------------------------


def github_headers(body: bytes, event: str = "push", **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": "sha256=" + sign(body),
        **extra,
    }


def test_github_verifies_documented_signature_example() -> None:
    # The example from GitHub's "Validating webhook deliveries" page.
    body = b"Hello, World!"
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    github.verify({"X-Hub-Signature-256": f"sha256={expected}"}, body, SECRET)


def test_github_verify_accepts_any_header_case_and_django_meta_names() -> None:
    body = fixture("github/push.json")
    github.verify({"x-hub-signature-256": "sha256=" + sign(body)}, body, SECRET)
    github.verify({"HTTP_X_HUB_SIGNATURE_256": "sha256=" + sign(body)}, body, SECRET)


@pytest.mark.parametrize(
    "value",
    [
        "sha256=" + "0" * 64,
        "sha1=" + "0" * 40,
        "0" * 64,
        "sha256=",
        "sha256=zz\u00e9",
    ],
)
def test_github_rejects_wrong_signature(value: str) -> None:
    with pytest.raises(BadSignature) as info:
        github.verify({"X-Hub-Signature-256": value}, b"{}", SECRET)
    assert info.value.status == 401


def test_github_rejects_signature_made_with_another_secret() -> None:
    body = fixture("github/push.json")
    with pytest.raises(BadSignature):
        github.verify(
            {"X-Hub-Signature-256": "sha256=" + sign(body, "other")}, body, SECRET
        )


def test_github_rejects_tampered_body() -> None:
    body = fixture("github/push.json")
    headers = github_headers(body)
    with pytest.raises(BadSignature):
        github.verify(headers, body + b" ", SECRET)


def test_github_rejects_missing_signature() -> None:
    with pytest.raises(MissingSignature):
        github.verify({"X-GitHub-Event": "push"}, b"{}", SECRET)


def test_github_legacy_sha1_header_alone_is_not_enough() -> None:
    body = b"{}"
    sha1 = hmac.new(SECRET.encode(), body, "sha1").hexdigest()
    with pytest.raises(MissingSignature):
        github.verify({"X-Hub-Signature": f"sha1={sha1}"}, body, SECRET)


def test_every_forge_refuses_when_no_secret_is_configured() -> None:
    for module in (github, gitlab, gitea, generic):
        with pytest.raises(Forbidden) as info:
            module.verify({}, b"{}", "")
        assert info.value.status == 403


def test_conflicting_duplicate_signature_headers_are_rejected() -> None:
    body = b"{}"
    headers = {
        "X-Hub-Signature-256": "sha256=" + sign(body),
        "x-hub-signature-256": "sha256=" + "0" * 64,
    }
    with pytest.raises(BadPayload):
        github.verify(headers, body, SECRET)


def test_github_parses_documented_branch_push() -> None:
    body = fixture("github/push.json")
    event = github.parse(github_headers(body), body)
    assert event.forge == "github"
    assert event.event == "push"
    assert event.ref == "refs/heads/master"
    assert event.branch == "master" and event.tag is None
    assert event.before == ZERO_SHA
    assert event.after == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert not event.deleted
    assert event.author == "Codertocat"
    assert event.message == "Initial commit"
    assert event.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert "https://github.com/Codertocat/Hello-World.git" in event.repository_urls
    assert "git@github.com:Codertocat/Hello-World.git" in event.repository_urls
    assert "Codertocat/Hello-World" in event.repository_urls
    [commit] = event.commits
    assert commit.sha == event.after
    assert commit.added == ("README.md",)
    assert commit.author == "Codertocat"
    assert commit.url is not None and commit.url.endswith(commit.sha)


def test_github_parses_documented_tag_deletion() -> None:
    body = fixture("github/push_tag_deleted.json")
    event = github.parse(github_headers(body), body)
    assert event.event == "tag"
    assert event.tag == "simple-tag" and event.branch is None
    assert event.deleted
    assert event.after == ZERO_SHA
    assert event.commits == ()


def test_github_parses_ping() -> None:
    body = fixture("github/ping.json")
    event = github.parse(github_headers(body, "ping"), body)
    assert event.event == "ping"
    assert event.message == "Anything added dilutes everything else."
    assert "https://github.com/Octocoders/Hello-World.git" in event.repository_urls
    assert not event.ignored


def test_github_parses_pull_request_synchronize() -> None:
    body = fixture("github/pull_request_synchronize.json")
    event = github.parse(github_headers(body, "pull_request"), body)
    assert event.event == "merge_request"
    assert event.mr_number == 2
    assert event.mr_source_branch == "changes" and event.branch == "changes"
    assert event.ref == "refs/heads/changes"
    assert event.mr_target_branch == "master"
    assert event.after == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert event.before == "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    assert event.mr_head_ref == "refs/pull/2/head"
    assert event.mr_action == "synchronize"
    assert event.message == "Update the README with new information."
    assert (
        "https://github.com/Codertocat/Hello-World.git"
        in event.mr_source_repository_urls
    )


def test_github_closed_pull_request_is_ignored_not_an_error() -> None:
    data = json.loads(fixture("github/pull_request_synchronize.json"))
    data["action"] = "closed"
    body = json.dumps(data).encode()
    event = github.parse(github_headers(body, "pull_request"), body)
    assert event.ignored and event.forge_event == "pull_request.closed"


def test_github_unhandled_event_is_ignored() -> None:
    body = b'{"action": "created"}'
    event = github.parse(github_headers(body, "issue_comment"), body)
    assert event.event == "unsupported" and event.forge_event == "issue_comment"
    assert event.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_github_accepts_form_encoded_payload() -> None:
    headers, body = signed_request(
        "github", SECRET, after=SHA_A, repo_url=REPO, form_encoded=True
    )
    assert body.startswith(b"payload=")
    github.verify(headers, body, SECRET)
    event = github.parse(headers, body)
    assert event.after == SHA_A and event.branch == "main"


def test_github_form_body_without_payload_field_is_bad_payload() -> None:
    headers = {
        "X-GitHub-Event": "push",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    with pytest.raises(BadPayload, match="payload"):
        github.parse(headers, b"other=1")


def test_github_missing_event_header_is_bad_payload() -> None:
    with pytest.raises(BadPayload, match="X-GitHub-Event"):
        github.parse({}, b"{}")


def test_malformed_json_is_bad_payload_for_every_forge() -> None:
    cases = [
        (github, {"X-GitHub-Event": "push"}),
        (gitlab, {"X-Gitlab-Event": "Push Hook"}),
        (gitea, {"X-Gitea-Event": "push"}),
        (generic, {}),
    ]
    for module, headers in cases:
        for body in (b"{not json", b"", b"[1, 2]", b"\xff\xfe\x00", b"[" * 100_000):
            with pytest.raises(BadPayload):
                module.parse(headers, body)


def test_missing_field_names_the_field() -> None:
    data = json.loads(fixture("github/push.json"))
    del data["after"]
    with pytest.raises(BadPayload, match="after"):
        github.parse({"X-GitHub-Event": "push"}, json.dumps(data).encode())
    data = json.loads(fixture("github/push.json"))
    data["commits"][0]["id"] = "not-a-sha"
    with pytest.raises(BadPayload, match=r"commits\[0\]\.id"):
        github.parse({"X-GitHub-Event": "push"}, json.dumps(data).encode())


def test_option_like_ref_is_rejected() -> None:
    data = json.loads(fixture("github/push.json"))
    data["ref"] = "--upload-pack=evil"
    with pytest.raises(BadPayload, match="ref"):
        github.parse({"X-GitHub-Event": "push"}, json.dumps(data).encode())


def test_github_redacts_signature_headers() -> None:
    body = b"{}"
    headers = github_headers(body, Authorization="token abc", Cookie="s=1")
    redacted = github.redact_headers(headers)
    assert redacted["X-Hub-Signature-256"] == "[redacted]"
    assert redacted["Authorization"] == "[redacted]"
    assert redacted["Cookie"] == "[redacted]"
    assert redacted["X-GitHub-Event"] == "push"
    assert headers["X-Hub-Signature-256"].startswith("sha256=")  # Not mutated.


# --- GitLab ------------------------------------------------------------------------


def gitlab_headers(event: str = "Push Hook", **extra: str) -> dict[str, str]:
    return {"X-Gitlab-Event": event, "X-Gitlab-Token": SECRET, **extra}


def test_gitlab_verifies_token() -> None:
    gitlab.verify({"x-gitlab-token": SECRET}, b"{}", SECRET)


def test_gitlab_rejects_wrong_and_missing_token() -> None:
    with pytest.raises(BadSignature):
        gitlab.verify({"X-Gitlab-Token": SECRET + "x"}, b"{}", SECRET)
    with pytest.raises(BadSignature):
        gitlab.verify({"X-Gitlab-Token": ""}, b"{}", SECRET)
    with pytest.raises(MissingSignature):
        gitlab.verify({"X-Gitlab-Event": "Push Hook"}, b"{}", SECRET)


def test_gitlab_parses_documented_push_hook() -> None:
    body = fixture("gitlab/push_hook.json")
    event = gitlab.parse(gitlab_headers(), body)
    assert event.event == "push" and event.branch == "master"
    assert event.before == "95790bf891e76fee5e1747ab589903a6a1f80f22"
    assert event.after == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert event.author == "jsmith"
    assert event.message == "fixed readme"
    assert len(event.commits) == 2
    assert event.commits[0].author == "Jordi Mallach"
    assert event.commits[0].modified == ("app/controller/application.rb",)
    assert "http://example.com/mike/diaspora.git" in event.repository_urls
    assert "git@example.com:mike/diaspora.git" in event.repository_urls


def test_gitlab_parses_documented_tag_push_hook() -> None:
    body = fixture("gitlab/tag_push_hook.json")
    event = gitlab.parse(gitlab_headers("Tag Push Hook"), body)
    assert event.event == "tag" and event.tag == "v1.0.0"
    assert event.after == "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"
    assert not event.deleted


def test_gitlab_parses_documented_merge_request_hook() -> None:
    body = fixture("gitlab/merge_request_hook.json")
    event = gitlab.parse(gitlab_headers("Merge Request Hook"), body)
    assert event.event == "merge_request"
    assert event.mr_number == 1
    assert event.mr_source_branch == "ms-viewport"
    assert event.mr_target_branch == "master"
    assert event.after == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert event.before == ZERO_SHA
    assert event.mr_head_ref == "refs/merge-requests/1/head"
    assert event.author == "root"
    assert (
        "http://example.com/awesome_space/awesome_project.git" in event.repository_urls
    )


def test_gitlab_merge_request_update_without_new_commits_is_ignored() -> None:
    data = json.loads(fixture("gitlab/merge_request_hook.json"))
    data["object_attributes"]["action"] = "update"
    body = json.dumps(data).encode()
    event = gitlab.parse(gitlab_headers("Merge Request Hook"), body)
    assert event.ignored and event.forge_event == "Merge Request Hook.update"
    data["object_attributes"]["oldrev"] = SHA_B
    event = gitlab.parse(
        gitlab_headers("Merge Request Hook"), json.dumps(data).encode()
    )
    assert event.event == "merge_request" and event.before == SHA_B


def test_gitlab_branch_deletion() -> None:
    data = json.loads(fixture("gitlab/push_hook.json"))
    data.update(after=ZERO_SHA, checkout_sha=None, commits=[], total_commits_count=0)
    event = gitlab.parse(gitlab_headers(), json.dumps(data).encode())
    assert event.deleted and event.event == "push" and event.message == ""


def test_gitlab_system_hook_is_ignored() -> None:
    body = fixture("gitlab/push_hook.json")
    event = gitlab.parse(gitlab_headers("System Hook"), body)
    assert event.ignored and event.forge_event == "System Hook"


def test_gitlab_delivery_id_prefers_idempotency_key() -> None:
    body = fixture("gitlab/push_hook.json")
    headers = gitlab_headers(
        **{
            "Idempotency-Key": "908a6d9e-45fd-46c8-97e6-c4f350f219dd",
            "X-Gitlab-Event-UUID": "11111111-1111-1111-1111-111111111111",
            "X-Gitlab-Webhook-UUID": "22222222-2222-2222-2222-222222222222",
        }
    )
    assert gitlab.delivery_id(headers, body) == "908a6d9e-45fd-46c8-97e6-c4f350f219dd"


def test_gitlab_event_uuid_alone_still_tells_two_branches_apart() -> None:
    # One push moving two branches shares X-Gitlab-Event-UUID across both hooks.
    shared = {"X-Gitlab-Event-UUID": "11111111-1111-1111-1111-111111111111"}
    one = fixture("gitlab/push_hook.json")
    data = json.loads(one)
    data["ref"] = "refs/heads/other"
    two = json.dumps(data).encode()
    first, second = gitlab.delivery_id(shared, one), gitlab.delivery_id(shared, two)
    assert first and second and first != second
    assert first.startswith("11111111-1111-1111-1111-111111111111:")
    assert gitlab.delivery_id(shared, one) == first  # A retry gets the same id.
    only_webhook_uuid = {"X-Gitlab-Webhook-UUID": "2222"}
    assert gitlab.delivery_id(only_webhook_uuid, one) is None


def test_gitlab_redacts_token() -> None:
    assert gitlab.redact_headers(gitlab_headers())["X-Gitlab-Token"] == "[redacted]"


# --- Gitea / Forgejo -----------------------------------------------------------------


def test_gitea_verifies_each_documented_signature_header() -> None:
    body = fixture("gitea/push.json")
    gitea.verify({"X-Gitea-Signature": sign(body)}, body, SECRET)
    gitea.verify({"X-Forgejo-Signature": sign(body)}, body, SECRET)
    gitea.verify({"X-Hub-Signature-256": "sha256=" + sign(body)}, body, SECRET)


def test_gitea_rejects_wrong_and_missing_signature() -> None:
    body = fixture("gitea/push.json")
    with pytest.raises(BadSignature):
        gitea.verify({"X-Gitea-Signature": sign(body, "nope")}, body, SECRET)
    with pytest.raises(BadSignature):
        gitea.verify({"X-Forgejo-Signature": "sha256=" + sign(body)}, body, SECRET)
    with pytest.raises(MissingSignature):
        gitea.verify({"X-Gitea-Event": "push"}, body, SECRET)


def test_gitea_rejects_when_any_present_signature_is_wrong() -> None:
    body = fixture("gitea/push.json")
    headers = {
        "X-Gitea-Signature": sign(body),
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    with pytest.raises(BadSignature):
        gitea.verify(headers, body, SECRET)


def test_gitea_parses_documented_push() -> None:
    body = fixture("gitea/push.json")
    headers = {
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
    }
    event = gitea.parse(headers, body)
    assert event.event == "push" and event.branch == "develop"
    assert event.before == "28e1879d029cb852e4844d9c718537df08844e03"
    assert event.after == "bffeb74224043ba2feb48d137756c8a9331c449a"
    assert event.author == "gitea"
    assert event.message == "Webhooks Yay!"
    assert event.delivery_id == "f6266f16-1bf3-46a5-9ea4-602e06ead473"
    assert "http://localhost:3000/gitea/webhooks.git" in event.repository_urls
    assert "ssh://gitea@localhost:2222/gitea/webhooks.git" in event.repository_urls


def test_forgejo_headers_are_understood() -> None:
    body = fixture("gitea/push.json")
    headers = {
        "X-Forgejo-Event": "push",
        "X-Forgejo-Delivery": "d-1",
        "X-Forgejo-Signature": sign(body),
    }
    event = verify_and_parse("forgejo", headers, body, SECRET)
    assert event.forge == "forgejo" and event.delivery_id == "d-1"


def test_gitea_delete_event_is_a_deletion() -> None:
    data = {"ref": "feature/x", "ref_type": "branch", "pusher_type": "user"}
    data["repository"] = json.loads(fixture("gitea/push.json"))["repository"]
    event = gitea.parse({"X-Gitea-Event": "delete"}, json.dumps(data).encode())
    assert event.deleted and event.ref == "refs/heads/feature/x"
    assert event.branch == "feature/x" and event.after == ZERO_SHA


def test_gitea_create_event_is_ignored() -> None:
    event = gitea.parse({"X-Gitea-Event": "create"}, b"{}")
    assert event.ignored and event.forge_event == "create"


# --- generic -------------------------------------------------------------------------


def test_generic_verifies_bearer_token() -> None:
    generic.verify({"Authorization": f"Bearer {SECRET}"}, b"{}", SECRET)
    generic.verify({"authorization": f"bearer {SECRET}"}, b"{}", SECRET)


def test_generic_rejects_wrong_scheme_token_and_missing_header() -> None:
    with pytest.raises(BadSignature):
        generic.verify({"Authorization": f"Basic {SECRET}"}, b"{}", SECRET)
    with pytest.raises(BadSignature):
        generic.verify({"Authorization": "Bearer nope"}, b"{}", SECRET)
    with pytest.raises(BadSignature):
        generic.verify({"Authorization": "Bearer"}, b"{}", SECRET)
    with pytest.raises(MissingSignature):
        generic.verify({}, b"{}", SECRET)


def test_generic_parses_documented_body() -> None:
    body = fixture("generic/push.json")
    event = generic.parse({}, body)
    assert event.event == "push" and event.branch == "main"
    assert event.after == "bffeb74224043ba2feb48d137756c8a9331c449a"
    assert event.variables == {"DEPLOY_ENV": "staging"}
    assert event.delivery_id == "b6f1c7f4-5b8e-4a8e-9d2a-1f0e6c3d2a10"
    assert event.repository_urls == ("https://git.example.com/team/app.git",)


def test_generic_bare_ref_is_a_branch_and_commit_is_optional() -> None:
    event = generic.parse({"X-Slipway-Delivery": "hdr"}, b'{"ref": "main"}')
    assert event.ref == "refs/heads/main" and event.after == "" and not event.deleted
    assert event.delivery_id == "hdr"
    event = generic.parse(
        {}, json.dumps({"ref": "refs/tags/v1", "commit": SHA_A}).encode()
    )
    assert event.event == "tag" and event.tag == "v1" and event.after == SHA_A


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "ref"),
        ({"ref": 3}, "ref"),
        ({"ref": "main", "after": "xyz"}, "after"),
        ({"ref": "main", "variables": {"BAD-NAME": "x"}}, "variables"),
        ({"ref": "main", "variables": {"OK": {"nested": 1}}}, "variables.OK"),
        ({"ref": "refs/notes/x"}, "ref"),
    ],
)
def test_generic_bad_body_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(BadPayload, match=field):
        generic.parse({}, json.dumps(body).encode())


# --- signed_request round trips ------------------------------------------------------

ALL = ["github", "gitlab", "gitea", "forgejo", "generic"]


@pytest.mark.parametrize("forge", ALL)
def test_signed_request_push_round_trips(forge: str) -> None:
    headers, body = signed_request(
        forge,
        SECRET,
        before=SHA_A,
        after=SHA_B,
        repo_url=REPO,
        commits=[SHA_B],
        delivery_id="delivery-1",
    )
    event = verify_and_parse(forge, headers, body, SECRET)
    assert event.event == "push"
    assert (event.ref, event.branch, event.before, event.after) == (
        "refs/heads/main",
        "main",
        SHA_A,
        SHA_B,
    )
    assert event.delivery_id == "delivery-1"
    assert event.matches_repository(REPO)
    assert event.matches_repository("git.example.com/team/app")
    if forge != "generic":
        assert [c.sha for c in event.commits] == [SHA_B]
    with pytest.raises(BadSignature):
        get_forge(forge).verify(headers, body, "wrong secret")


@pytest.mark.parametrize("forge", ALL)
def test_signed_request_tag_round_trips(forge: str) -> None:
    headers, body = signed_request(
        forge, SECRET, event="tag", ref="v1.2.0", after=SHA_A, repo_url=REPO
    )
    event = verify_and_parse(forge, headers, body, SECRET)
    assert (event.event, event.tag, event.ref) == ("tag", "v1.2.0", "refs/tags/v1.2.0")
    assert event.branch is None and not event.deleted


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea", "forgejo"])
def test_signed_request_branch_deletion_round_trips(forge: str) -> None:
    headers, body = signed_request(
        forge,
        SECRET,
        ref="refs/heads/gone",
        before=SHA_A,
        after=ZERO_SHA,
        repo_url=REPO,
    )
    event = verify_and_parse(forge, headers, body, SECRET)
    assert event.deleted and event.branch == "gone" and event.after == ZERO_SHA


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea", "forgejo"])
@pytest.mark.parametrize("before", [ZERO_SHA, SHA_A])
def test_signed_request_merge_request_round_trips(forge: str, before: str) -> None:
    headers, body = signed_request(
        forge,
        SECRET,
        event="merge_request",
        ref="feature",
        before=before,
        after=SHA_B,
        repo_url=REPO,
        mr_number=7,
        target_branch="main",
    )
    event = verify_and_parse(forge, headers, body, SECRET)
    assert event.event == "merge_request"
    assert (event.mr_number, event.mr_source_branch, event.mr_target_branch) == (
        7,
        "feature",
        "main",
    )
    assert event.after == SHA_B and event.before == before
    assert event.matches_repository(REPO)


def test_signed_request_github_ping_round_trips() -> None:
    headers, body = signed_request(
        "github", SECRET, event="ping", after="", repo_url=REPO
    )
    event = verify_and_parse("github", headers, body, SECRET)
    assert event.event == "ping" and event.matches_repository(REPO)


@pytest.mark.parametrize("forge", ["gitlab", "gitea"])
def test_forges_without_ping_say_so(forge: str) -> None:
    with pytest.raises(ValueError, match="no ping"):
        signed_request(forge, SECRET, event="ping", after="", repo_url=REPO)


def test_signed_request_carries_generic_variables() -> None:
    headers, body = signed_request(
        "generic", SECRET, after=SHA_A, repo_url=REPO, variables={"A": "1"}
    )
    assert verify_and_parse("generic", headers, body, SECRET).variables == {"A": "1"}


# --- repository URL matching ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://github.com/Codertocat/Hello-World.git",
            "github.com/codertocat/hello-world",
        ),
        (
            "git@github.com:Codertocat/Hello-World.git",
            "github.com/codertocat/hello-world",
        ),
        (
            "ssh://git@github.com:22/Codertocat/Hello-World",
            "github.com/codertocat/hello-world",
        ),
        (
            "https://user@github.com/Codertocat/Hello-World/",
            "github.com/codertocat/hello-world",
        ),
        ("/srv/git/App.git", "/srv/git/App"),
        ("file:///srv/git/App.git", "/srv/git/App"),
        ("Codertocat/Hello-World", "codertocat/hello-world"),
    ],
)
def test_normalise_repo_url(url: str, expected: str) -> None:
    assert normalise_repo_url(url) == expected


# --- robustness: nothing but WebhookError escapes ------------------------------------

header_names = st.sampled_from(
    [
        "X-GitHub-Event",
        "x-github-event",
        "X-Hub-Signature-256",
        "X-Gitlab-Event",
        "X-Gitlab-Token",
        "X-Gitea-Event",
        "X-Forgejo-Event",
        "X-Gitea-Signature",
        "X-Forgejo-Signature",
        "Authorization",
        "Content-Type",
        "Idempotency-Key",
        "X-Gitlab-Event-UUID",
        "X-Slipway-Delivery",
        "HTTP_X_GITHUB_EVENT",
    ]
)
event_values = st.sampled_from(
    [
        "push",
        "ping",
        "pull_request",
        "delete",
        "Push Hook",
        "Tag Push Hook",
        "Merge Request Hook",
        "application/x-www-form-urlencoded",
        "Bearer x",
        "sha256=00",
    ]
)
header_dicts = st.dictionaries(
    st.one_of(header_names, st.text(max_size=20)),
    st.one_of(event_values, st.text(max_size=40)),
    max_size=6,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "ref",
                    "after",
                    "before",
                    "commits",
                    "repository",
                    "pull_request",
                    "object_attributes",
                    "action",
                    "id",
                    "head",
                    "sha",
                    "number",
                    "iid",
                    "ref_type",
                    "variables",
                    "last_commit",
                    "source_branch",
                    "target_branch",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
)
FIXTURE_BODIES = [
    fixture(name)
    for name in (
        "github/push.json",
        "github/ping.json",
        "github/pull_request_synchronize.json",
        "gitlab/push_hook.json",
        "gitlab/merge_request_hook.json",
        "gitea/push.json",
        "generic/push.json",
    )
]


def _exercise(headers: dict[str, str], body: bytes, secret: str) -> None:
    for module in (github, gitlab, gitea, generic):
        try:
            module.verify(headers, body, secret)
        except WebhookError as exc:
            assert 400 <= exc.status < 500
        try:
            module.parse(headers, body)
        except WebhookError as exc:
            assert 400 <= exc.status < 500
        assert isinstance(module.delivery_id(headers, body), str | None)
        assert isinstance(module.redact_headers(headers), dict)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(headers=header_dicts, body=bodies, secret=st.text(max_size=10))
def test_arbitrary_requests_raise_only_webhook_errors(
    headers: dict[str, str], body: bytes, secret: str
) -> None:
    _exercise(headers, body, secret)


def _mutations(data: object) -> st.SearchStrategy[object]:
    """Replace one nested value of a real payload with an arbitrary JSON value."""
    paths: list[tuple[object, ...]] = []

    def walk(node: object, path: tuple[object, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))

    walk(data, ())

    def apply(path: tuple[object, ...], value: object) -> object:
        copy = json.loads(json.dumps(data))
        if not path:
            return value
        node = copy
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return copy

    return st.builds(apply, st.sampled_from(paths), json_values)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_mutated_real_payloads_raise_only_webhook_errors(data: st.DataObject) -> None:
    original = json.loads(data.draw(st.sampled_from(FIXTURE_BODIES)))
    mutated = data.draw(_mutations(original))
    body = json.dumps(mutated).encode()
    event_header = data.draw(event_values)
    headers = {
        "X-GitHub-Event": event_header,
        "X-Gitlab-Event": event_header,
        "X-Gitea-Event": event_header,
    }
    _exercise(headers, body, SECRET)
