"""Who may reach what: every URL pattern, API endpoint and WebSocket route.

The tables below name the rule of every route. The tests walk the URL resolver and the
socket routing and fail on any route without a rule, so a new route cannot ship
without someone deciding who may use it. Each route is then requested as anonymous,
a user without a role, viewer, developer, operator and admin, and the outcome must
match the rule exactly: allowed below the rule's role is a leak, denied above it is a
bug. Every allowed HTML page must also pass the content security policy (no inline
script, no inline event handler). Every method a rule does not declare (of GET, POST,
PUT, PATCH, DELETE) is asked too and must be refused with 405 (anonymous may meet the
login gate first), so a new verb on an existing route fails until a rule names it.

Roles also come as grants on one repository or cluster (``core.models.RoleGrant``).
``SCOPES`` says what each route is about, and a second matrix walks every route as
users holding grants, on the granted objects and on others: allowed where the grant
(or their global role) reaches, 403 where they see the object but their role is too
weak, 404 where they may not even see it. A route missing from ``SCOPES`` fails too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.routing import URLRouter
from django.contrib.auth.models import AnonymousUser, Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from clusters.routing import websocket_urlpatterns as cluster_sockets
from core import roles
from core.models import RoleGrant
from pipelines.models import Job
from pipelines.routing import websocket_urlpatterns as pipeline_sockets

from .api_helpers import World, make_world

ANON, NONE = "anonymous", "none"
AS = (ANON, NONE, roles.VIEWER, roles.DEVELOPER, roles.OPERATOR, roles.ADMIN)
RANK = {name: rank for rank, name in enumerate(AS)}

# Rules (besides a role name: the least role allowed).
PUBLIC = "public"  # Anyone, logged in or not (health, login, webhooks, badge).
LOGIN = "login"  # Any signed-in user, even without a role (own API tokens).
TOKEN = "token"  # Neither session nor role: a bearer token only (/metrics).

Kwargs = Callable[[World], dict[str, Any]]


@dataclass
class Rule:
    methods: dict[str, str]
    kwargs: Kwargs = field(default=lambda w: {})
    body: Callable[[World], dict[str, Any]] | None = None


def R(kw: Kwargs | None = None, body: Any = None, **methods: str) -> Rule:  # noqa: N802
    return Rule(methods, kw or (lambda w: {}), body)


def repo(w: World) -> dict[str, Any]:
    return {"name": w.repository.name}


def run(w: World) -> dict[str, Any]:
    return {"pk": w.run.pk}


def job(w: World) -> dict[str, Any]:
    return {"pk": w.job.pk}


def env(w: World) -> dict[str, Any]:
    return {"name": w.repository.name, "env": w.environment.name}


def cluster(w: World) -> dict[str, Any]:
    return {"pk": w.cluster.pk}


def pod(w: World) -> dict[str, Any]:
    return {"pk": w.cluster.pk, "namespace": "default", "name": "web-1"}


V, D, O, A = roles.VIEWER, roles.DEVELOPER, roles.OPERATOR, roles.ADMIN  # noqa: E741

PAGES: dict[str, Rule] = {
    # Public by design.
    "healthz": R(GET=PUBLIC),
    "readyz": R(GET=PUBLIC),
    "metrics": R(GET=TOKEN),
    "login/": R(GET=PUBLIC, POST=PUBLIC),
    "logout/": R(POST=PUBLIC),
    "hooks/<str:forge>/<str:name>/": R(
        lambda w: {"forge": "github", "name": w.repository.name}, POST=PUBLIC
    ),
    "badge/<str:name>.svg": R(repo, GET=PUBLIC),
    # Core pages.
    "settings/tokens/": R(GET=LOGIN, POST=LOGIN),
    "settings/tokens/<int:pk>/revoke/": R(lambda w: {"pk": 1}, POST=LOGIN),
    "audit/": R(GET=A),
    # Pipelines.
    "": R(GET=V),
    "repos/": R(GET=V),
    "workers/": R(GET=V),
    "repos/new/": R(GET=A, POST=A),
    "repos/<str:name>/": R(repo, GET=V),
    "repos/<str:name>/branches/": R(repo, GET=V),
    "repos/<str:name>/webhooks/": R(repo, GET=V),
    "repos/<str:name>/webhooks/rotate/": R(repo, POST=A),
    "repos/<str:name>/deliveries/": R(repo, GET=V),
    "repos/<str:name>/deliveries/<int:pk>/redeliver/": R(
        lambda w: {"name": w.repository.name, "pk": w.delivery.pk}, POST=D
    ),
    "repos/<str:name>/schedules/": R(repo, GET=V, POST=A),
    "repos/<str:name>/schedules/<int:pk>/delete/": R(
        lambda w: {"name": w.repository.name, "pk": w.schedule.pk}, POST=A
    ),
    "repos/<str:name>/schedules/<int:pk>/toggle/": R(
        lambda w: {"name": w.repository.name, "pk": w.schedule.pk}, POST=A
    ),
    "repos/<str:name>/variables/": R(repo, GET=V, POST=A),
    "repos/<str:name>/variables/<int:pk>/delete/": R(
        lambda w: {"name": w.repository.name, "pk": w.variable.pk}, POST=A
    ),
    "repos/<str:name>/settings/": R(repo, GET=A, POST=A),
    "repos/<str:name>/delete/": R(repo, POST=A),
    "repos/<str:name>/run/": R(repo, GET=D, POST=D),
    "runs/": R(GET=V),
    "runs/<int:pk>/": R(run, GET=V),
    "runs/<int:pk>/cancel/": R(run, POST=D),
    "runs/<int:pk>/retry/": R(run, POST=D),
    "jobs/<int:pk>/": R(job, GET=V),
    "jobs/<int:pk>/log.txt": R(job, GET=V),
    "jobs/<int:pk>/retry/": R(lambda w: {"pk": w.failed_job.pk}, POST=D),
    "jobs/<int:pk>/play/": R(lambda w: {"pk": w.manual_job.pk}, POST=D),
    "jobs/<int:pk>/cancel/": R(job, POST=D),
    "artifacts/<int:pk>/download/": R(lambda w: {"pk": w.artifact.pk}, GET=V),
    # Environments (the deploy role is the environment's own; operator here).
    "environments/": R(GET=V),
    "environments/<str:name>/": R(repo, GET=V, POST=A),
    "environments/<str:name>/<str:env>/": R(env, GET=V),
    "environments/<str:name>/<str:env>/edit/": R(env, GET=A, POST=A),
    "environments/<str:name>/<str:env>/deployments/<int:pk>/": R(
        lambda w: {**env(w), "pk": w.deployment.pk}, GET=V
    ),
    "environments/<str:name>/<str:env>/deployments/<int:pk>/rollback/": R(
        lambda w: {**env(w), "pk": w.deployment.pk}, POST=O
    ),
    "environments/<str:name>/<str:env>/promote/": R(env, POST=O),
    # Clusters.
    "clusters/": R(GET=V),
    "clusters/add/": R(GET=A, POST=A),
    "clusters/<int:pk>/": R(cluster, GET=V),
    "clusters/<int:pk>/edit/": R(cluster, GET=A, POST=A),
    "clusters/<int:pk>/delete/": R(cluster, POST=A),
    "clusters/<int:pk>/test/": R(cluster, POST=O),
    "clusters/<int:pk>/nodes/": R(cluster, GET=V),
    "clusters/<int:pk>/pods/": R(cluster, GET=V),
    "clusters/<int:pk>/workloads/": R(cluster, GET=V),
    "clusters/<int:pk>/services/": R(cluster, GET=V),
    "clusters/<int:pk>/storage/": R(cluster, GET=V),
    "clusters/<int:pk>/autoscaling/": R(cluster, GET=V),
    "clusters/<int:pk>/events/": R(cluster, GET=V),
    "clusters/<int:pk>/apply/": R(cluster, GET=O, POST=O),
    "clusters/<int:pk>/pods/<str:namespace>/<str:name>/logs/": R(pod, GET=V),
    "clusters/<int:pk>/pods/<str:namespace>/<str:name>/logs.txt": R(pod, GET=V),
    "clusters/<int:pk>/yaml/<str:kind>/<str:namespace>/<str:name>/": R(
        lambda w: {**pod(w), "kind": "pods"}, GET=V
    ),
    "clusters/<int:pk>/actions/<slug:action>/": R(
        lambda w: {"pk": w.cluster.pk, "action": "cordon"}, POST=O
    ),
    # The API (JSON: 401 for anonymous, 403 below the role).
    "api/schema/": R(GET=V),
    "api/docs/": R(GET=V),
    # The catch-all answers every method with the JSON 404.
    "api/^.*$": R(
        lambda w: {"": "v1/no-such-thing/"},
        **dict.fromkeys(("GET", "POST", "PUT", "PATCH", "DELETE"), PUBLIC),
    ),
    "api/v1/lint/": R(POST=V, body=lambda w: {"content": "a:\n  script: [x]\n"}),
    "api/v1/^repositories/$": R(GET=V, POST=A),
    "api/v1/^repositories/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.repository.pk}, GET=V, PATCH=A, PUT=A, DELETE=A
    ),
    "api/v1/^runs/$": R(
        GET=V, POST=D, body=lambda w: {"repository": w.repository.pk, "ref": "main"}
    ),
    "api/v1/^runs/(?P<pk>[0-9]{1,18})/$": R(run, GET=V),
    "api/v1/^runs/(?P<pk>[0-9]{1,18})/cancel/$": R(run, POST=D),
    "api/v1/^runs/(?P<pk>[0-9]{1,18})/retry-failed/$": R(run, POST=D),
    "api/v1/^jobs/$": R(GET=V),
    "api/v1/^jobs/(?P<pk>[0-9]{1,18})/$": R(job, GET=V),
    "api/v1/^jobs/(?P<pk>[0-9]{1,18})/log/$": R(job, GET=V),
    "api/v1/^jobs/(?P<pk>[0-9]{1,18})/artifacts/$": R(job, GET=V),
    "api/v1/^jobs/(?P<pk>[0-9]{1,18})/cancel/$": R(job, POST=D),
    "api/v1/^jobs/(?P<pk>[0-9]{1,18})/retry/$": R(
        lambda w: {"pk": w.failed_job.pk}, POST=D
    ),
    "api/v1/^jobs/(?P<pk>[0-9]{1,18})/play/$": R(
        lambda w: {"pk": w.manual_job.pk}, POST=D
    ),
    "api/v1/^artifacts/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.artifact.pk}, GET=V
    ),
    "api/v1/^artifacts/(?P<pk>[0-9]{1,18})/download/$": R(
        lambda w: {"pk": w.artifact.pk}, GET=V
    ),
    "api/v1/^deliveries/$": R(GET=V),
    "api/v1/^deliveries/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.delivery.pk}, GET=V
    ),
    "api/v1/^deliveries/(?P<pk>[0-9]{1,18})/redeliver/$": R(
        lambda w: {"pk": w.delivery.pk}, POST=D
    ),
    "api/v1/^schedules/$": R(GET=V, POST=A),
    "api/v1/^schedules/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.schedule.pk}, GET=V, PATCH=A, PUT=A, DELETE=A
    ),
    "api/v1/^variables/$": R(GET=V, POST=A),
    "api/v1/^variables/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.variable.pk}, GET=V, PATCH=A, PUT=A, DELETE=A
    ),
    "api/v1/^environments/$": R(GET=V),
    "api/v1/^environments/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.environment.pk}, GET=V
    ),
    "api/v1/^environments/(?P<pk>[0-9]{1,18})/rollback/$": R(
        lambda w: {"pk": w.environment.pk}, POST=O
    ),
    "api/v1/^environments/(?P<pk>[0-9]{1,18})/promote/$": R(
        lambda w: {"pk": w.environment.pk}, POST=O
    ),
    "api/v1/^deployments/$": R(GET=V),
    "api/v1/^deployments/(?P<pk>[0-9]{1,18})/$": R(
        lambda w: {"pk": w.deployment.pk}, GET=V
    ),
    "api/v1/^clusters/$": R(GET=V),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/$": R(cluster, GET=V),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/objects/(?P<kind>[a-z]+)/$": R(
        lambda w: {"pk": w.cluster.pk, "kind": "pods"}, GET=V
    ),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/scale/$": R(cluster, POST=O),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/restart/$": R(cluster, POST=O),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/cordon/$": R(
        cluster, POST=O, body=lambda w: {"name": "node-1"}
    ),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/uncordon/$": R(cluster, POST=O),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/drain/$": R(cluster, POST=O),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/delete-pod/$": R(cluster, POST=O),
    "api/v1/^clusters/(?P<pk>[0-9]{1,18})/edit-hpa/$": R(cluster, POST=O),
    "api/v1/^audit/$": R(GET=A),
    "api/v1/^audit/(?P<pk>[0-9]{1,18})/$": R(lambda w: {"pk": 1}, GET=A),
}

# Django's admin: every route behind the admin site's own gate, which Slipway ties
# to the admin role (core/admin.py); its login and logout are public.
ADMIN_PUBLIC = {"admin/login/"}
ADMIN_LOGIN = {"admin/logout/"}  # POST only: a GET is 405 once logged in.
ADMIN_KWARGS = {
    "object_id": "999999",
    "content_type_id": "1",
    "app_label": "core",
    "id": "999999",
    "url": "no-such-page/",
}

SOCKETS: dict[str, tuple[str, Kwargs]] = {
    "ws/runs/<int:run_id>/": (V, lambda w: {"run_id": w.run.pk}),
    "ws/activity/": (V, lambda w: {}),
    "ws/jobs/<int:job_id>/log/": (V, lambda w: {"job_id": w.job.pk}),
    "ws/clusters/<int:cluster_id>/": (V, lambda w: {"cluster_id": w.cluster.pk}),
}


# What each route is about, for the grants matrix: REPO and CLUSTER pages take the
# role on that object (a grant counts); LIST pages need the role on something and
# show only what the user sees; GLOBAL needs a global role. A dict names it per method.
REPO, CLUSTER, LIST, GLOBAL, OPEN = "repository", "cluster", "list", "global", "open"

SCOPES: dict[str, str | dict[str, str]] = {
    route: OPEN
    for route in (
        "healthz",
        "readyz",
        "metrics",
        "login/",
        "logout/",
        "hooks/<str:forge>/<str:name>/",
        "badge/<str:name>.svg",
        "settings/tokens/",
        "settings/tokens/<int:pk>/revoke/",
        "api/^.*$",
    )
}
SCOPES.update(
    {
        "audit/": GLOBAL,
        "": LIST,
        "repos/": LIST,
        "workers/": LIST,
        "repos/new/": GLOBAL,
        "runs/": LIST,
        "environments/": LIST,
        "clusters/": LIST,
        "clusters/add/": GLOBAL,
        "api/schema/": GLOBAL,
        "api/docs/": GLOBAL,
        "api/v1/lint/": LIST,  # A role on anything: nothing is read or written.
        "api/v1/^repositories/$": {"GET": LIST, "POST": GLOBAL},
        # The repository is in the body: a developer's own, or "does not exist".
        "api/v1/^runs/$": {"GET": LIST, "POST": REPO},
        "api/v1/^jobs/$": LIST,
        "api/v1/^deliveries/$": LIST,
        "api/v1/^schedules/$": LIST,
        "api/v1/^variables/$": LIST,
        "api/v1/^environments/$": LIST,
        "api/v1/^deployments/$": LIST,
        "api/v1/^clusters/$": LIST,
        "api/v1/^audit/$": GLOBAL,
        "api/v1/^audit/(?P<pk>[0-9]{1,18})/$": GLOBAL,
    }
)
SCOPES.update(
    {
        route: REPO
        for route in (
            "repos/<str:name>/",
            "repos/<str:name>/branches/",
            "repos/<str:name>/webhooks/",
            "repos/<str:name>/webhooks/rotate/",
            "repos/<str:name>/deliveries/",
            "repos/<str:name>/deliveries/<int:pk>/redeliver/",
            "repos/<str:name>/schedules/",
            "repos/<str:name>/schedules/<int:pk>/delete/",
            "repos/<str:name>/schedules/<int:pk>/toggle/",
            "repos/<str:name>/variables/",
            "repos/<str:name>/variables/<int:pk>/delete/",
            "repos/<str:name>/settings/",
            "repos/<str:name>/delete/",
            "repos/<str:name>/run/",
            "runs/<int:pk>/",
            "runs/<int:pk>/cancel/",
            "runs/<int:pk>/retry/",
            "jobs/<int:pk>/",
            "jobs/<int:pk>/log.txt",
            "jobs/<int:pk>/retry/",
            "jobs/<int:pk>/play/",
            "jobs/<int:pk>/cancel/",
            "artifacts/<int:pk>/download/",
            "environments/<str:name>/",
            "environments/<str:name>/<str:env>/",
            "environments/<str:name>/<str:env>/edit/",
            "environments/<str:name>/<str:env>/deployments/<int:pk>/",
            "environments/<str:name>/<str:env>/deployments/<int:pk>/rollback/",
            "environments/<str:name>/<str:env>/promote/",
            "api/v1/^repositories/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^runs/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^runs/(?P<pk>[0-9]{1,18})/cancel/$",
            "api/v1/^runs/(?P<pk>[0-9]{1,18})/retry-failed/$",
            "api/v1/^jobs/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^jobs/(?P<pk>[0-9]{1,18})/log/$",
            "api/v1/^jobs/(?P<pk>[0-9]{1,18})/artifacts/$",
            "api/v1/^jobs/(?P<pk>[0-9]{1,18})/cancel/$",
            "api/v1/^jobs/(?P<pk>[0-9]{1,18})/retry/$",
            "api/v1/^jobs/(?P<pk>[0-9]{1,18})/play/$",
            "api/v1/^artifacts/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^artifacts/(?P<pk>[0-9]{1,18})/download/$",
            "api/v1/^deliveries/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^deliveries/(?P<pk>[0-9]{1,18})/redeliver/$",
            "api/v1/^schedules/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^variables/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^environments/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^environments/(?P<pk>[0-9]{1,18})/rollback/$",
            "api/v1/^environments/(?P<pk>[0-9]{1,18})/promote/$",
            "api/v1/^deployments/(?P<pk>[0-9]{1,18})/$",
        )
    }
)
SCOPES.update(
    {
        route: CLUSTER
        for route in (
            "clusters/<int:pk>/",
            "clusters/<int:pk>/edit/",
            "clusters/<int:pk>/delete/",
            "clusters/<int:pk>/test/",
            "clusters/<int:pk>/nodes/",
            "clusters/<int:pk>/pods/",
            "clusters/<int:pk>/workloads/",
            "clusters/<int:pk>/services/",
            "clusters/<int:pk>/storage/",
            "clusters/<int:pk>/autoscaling/",
            "clusters/<int:pk>/events/",
            "clusters/<int:pk>/apply/",
            "clusters/<int:pk>/pods/<str:namespace>/<str:name>/logs/",
            "clusters/<int:pk>/pods/<str:namespace>/<str:name>/logs.txt",
            "clusters/<int:pk>/yaml/<str:kind>/<str:namespace>/<str:name>/",
            "clusters/<int:pk>/actions/<slug:action>/",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/objects/(?P<kind>[a-z]+)/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/scale/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/restart/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/cordon/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/uncordon/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/drain/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/delete-pod/$",
            "api/v1/^clusters/(?P<pk>[0-9]{1,18})/edit-hpa/$",
        )
    }
)


# --- walking the resolver -----------------------------------------------------------


def url_patterns(
    patterns: list[Any] | None = None, prefix: str = ""
) -> Iterator[tuple[str, URLPattern]]:
    """Yield (full route, pattern) for every URL pattern, recursively."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from url_patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def build_path(route: str, kwargs: dict[str, Any]) -> str:
    """Fill ROUTE's parameters (path converters or regex groups) from KWARGS."""

    def value(name: str) -> str:
        if name not in kwargs:
            raise AssertionError(f"{route}: no value for {name!r}")
        return str(kwargs[name])

    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m[1]), route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m[1]), path)
    if "" in kwargs:  # A catch-all pattern: the example path replaces the regex.
        path = path.replace("^.*$", str(kwargs[""]))
    return "/" + path.replace("^", "").replace("$", "")


def test_every_url_pattern_has_a_rule() -> None:
    routes = [route for route, _ in url_patterns() if not route.startswith("admin/")]
    missing = [route for route in routes if route not in PAGES]
    assert not missing, f"Routes without an access rule: {missing}"
    stale = sorted(set(PAGES) - set(routes))
    assert not stale, f"Rules for routes that no longer exist: {stale}"


def test_every_socket_route_has_a_rule() -> None:
    routes = [str(p.pattern) for p in pipeline_sockets + cluster_sockets]
    assert sorted(routes) == sorted(SOCKETS), "socket routes and rules differ"


# --- requesting every route as everyone -----------------------------------------------


@pytest.fixture
def people(
    alice: User, bob: User, olivia: User, victor: User, charlie: User
) -> dict[str, User | None]:
    return {
        ANON: None,
        NONE: charlie,
        roles.VIEWER: victor,
        roles.DEVELOPER: bob,
        roles.OPERATOR: olivia,
        roles.ADMIN: alice,
    }


@pytest.fixture
def quiet(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SLIPWAY = {
        **settings.SLIPWAY,
        "RATELIMIT_LOGIN": "0",
        "RATELIMIT_HOOKS": "0",
        "METRICS_TOKEN": "metrics-secret",
    }


def request(client: Client, method: str, path: str, body: dict | None) -> Any:
    if path.startswith("/api/v1/"):
        return client.generic(
            method,
            path,
            data=__import__("json").dumps(body or {}),
            content_type="application/json",
            HTTP_ACCEPT="application/json",
        )
    if method == "GET":
        return client.get(path)
    if method == "POST":
        return client.post(path, body or {})
    # A form page asked with another verb: the same form body, as a browser would.
    return client.generic(
        method,
        path,
        data=urlencode(body or {}),
        content_type="application/x-www-form-urlencoded",
    )


def outcome(response: Any, path: str) -> str:
    """Classify a response: allowed, or denied as login/forbidden."""
    status = response.status_code
    # 502: the cluster behind a cluster page could not be reached (the test's is not).
    upstream = path.startswith("/clusters/") and status == 502
    assert status < 500 or upstream, f"{path}: {status}"
    location = response.get("Location", "") if status in (301, 302) else ""
    if status == 401 or (location and "login/" in location.split("?")[0]):
        return "login"
    if status == 403:
        return "forbidden"
    return "allowed"


INLINE_SCRIPT = re.compile(
    r"<script\b(?![^>]*\bsrc=)(?![^>]*type=[\"']application/(?:ld\+)?json)[^>]*>",
    re.I,
)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


def assert_csp_clean(response: Any, path: str) -> None:
    """Assert an HTML page runs no inline script under our policy."""
    if "text/html" not in response.get("Content-Type", ""):
        return
    policy = response.get("Content-Security-Policy", "")
    assert "script-src 'self'" in policy or "default-src 'none'" in policy, path
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0], path
    html = response.content.decode()
    assert not INLINE_SCRIPT.search(html), f"{path}: inline <script>"
    assert not INLINE_HANDLER.search(html), f"{path}: inline event handler"
    assert "javascript:" not in html.lower(), f"{path}: javascript: URL"
    if not path.startswith(("/admin/", "/api/")):
        # Our pages share one stylesheet (static/css/slipway.css): no page-local CSS.
        assert "<style" not in html, f"{path}: inline <style>"


def expected(rule: str, who: str, path: str) -> str:
    if rule == TOKEN:
        return "login"  # A session is not enough: the bearer token is.
    if who == ANON:
        return "login"
    if rule == LOGIN:
        return "allowed"
    return "allowed" if RANK[who] >= RANK[rule] else "forbidden"


def logged_in_clients(people: dict[str, User | None]) -> dict[str, Client]:
    """Return one client per role (a client is costly: it loads the middleware)."""
    clients = {}
    for who, user in people.items():
        clients[who] = Client()
        if user is not None:
            clients[who].force_login(user)
    return clients


def check_route(
    route: str,
    rule: Rule,
    people: dict[str, User | None],
    clients: dict[str, Client],
    shared: World,
) -> list[str]:
    failures = []
    for method, least in rule.methods.items():
        for who in AS:
            # A write may delete what it points at: give it a world of its own.
            world = shared if method == "GET" else make_world()
            path = build_path(route, rule.kwargs(world))
            client = clients[who]
            body = rule.body(world) if rule.body else None
            response = request(client, method, path, body)
            if route == "logout/" and people[who] is not None:
                client.force_login(people[who])
            got = outcome(response, path)
            # A public route has no gate: its own answer (a webhook's 401 for a bad
            # signature, logout's redirect to the login page) is not a denial.
            want = got if least == PUBLIC else expected(least, who, path)
            if got != want:
                failures.append(
                    f"{method} {path} as {who}: {got} ({response.status_code}), "
                    f"expected {want}"
                )
            elif got == "allowed" and method == "GET":
                assert_csp_clean(response, path)
    return failures


@pytest.mark.usefixtures("quiet")
def test_pages_and_api_matrix(people: dict[str, User | None]) -> None:
    shared = make_world()
    failures: list[str] = []
    clients = logged_in_clients(people)
    for route, _ in url_patterns():
        if route.startswith("admin/"):
            continue
        failures += check_route(route, PAGES[route], people, clients, shared)
    assert not failures, "\n".join(failures)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def check_undeclared_methods(
    route: str, rule: Rule, clients: dict[str, Client], world: World
) -> list[str]:
    """Request ROUTE with every method its rule does not name: each must be refused.

    An admin, who may do anything a route offers, must get 405; anonymous may be
    stopped at the login gate first (401, 403 or the login page).
    """
    failures = []
    path = build_path(route, rule.kwargs(world))
    body = rule.body(world) if rule.body else None
    for method in METHODS:
        if method in rule.methods:
            continue
        for who in (ANON, roles.ADMIN):
            response = request(clients[who], method, path, body)
            status = response.status_code
            if status == 405:
                continue
            gated = who == ANON or TOKEN in rule.methods.values()
            if gated and outcome(response, path) in ("login", "forbidden"):
                continue
            failures.append(
                f"{method} {path} as {who}: {status}, expected 405 "
                f"(or declare {method} in the rule)"
            )
    return failures


@pytest.mark.usefixtures("quiet")
def test_undeclared_methods_are_refused(people: dict[str, User | None]) -> None:
    # One world: a refused request changes nothing, and an accepted one fails anyway.
    world = make_world()
    clients = logged_in_clients(people)
    failures: list[str] = []
    for route, _ in url_patterns():
        if route.startswith("admin/"):
            continue
        if route in PAGES:  # A route without a rule fails its own test.
            failures += check_undeclared_methods(route, PAGES[route], clients, world)
    assert not failures, "\n".join(failures)


@pytest.mark.usefixtures("quiet")
def test_metrics_needs_its_bearer_token(db: None) -> None:
    client = Client()
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret")
    assert ok.status_code == 200


@pytest.mark.usefixtures("quiet")
def test_admin_site_matrix(people: dict[str, User | None]) -> None:
    make_world()
    failures = []
    clients = logged_in_clients(people)
    for route, _ in url_patterns():
        if not route.startswith("admin/"):
            continue
        path = build_path(route, ADMIN_KWARGS)
        least = (
            PUBLIC
            if route in ADMIN_PUBLIC
            else LOGIN
            if route in ADMIN_LOGIN
            else roles.ADMIN
        )
        for who in AS:
            client = clients[who]
            got = outcome(client.get(path), path)
            want = got if least == PUBLIC else expected(least, who, path)
            # The admin sends everyone it refuses to its own login page; past that
            # gate, a model may still refuse a view (no "add" of audit events).
            if want == "forbidden":
                want = "login"
            if want == "allowed" and got == "forbidden" and least == roles.ADMIN:
                got = "allowed"
            if got != want:
                failures.append(f"GET {path} as {who}: {got}, expected {want}")
    assert not failures, "\n".join(failures)


def test_staff_without_the_admin_role_cannot_use_the_admin(victor: User) -> None:
    User.objects.filter(pk=victor.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=victor.pk))
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_static_files_are_public(db: None) -> None:
    response = Client().get("/static/css/slipway.css")
    assert response.status_code == 200


# --- sockets ----------------------------------------------------------------------

CLOSE_OUTCOMES = {4401: "login", 4403: "forbidden", 4404: "hidden"}


async def _connect(path: str, user: User | None) -> str:
    """Open a socket as USER; return allowed, or how it was refused.

    Every consumer accepts the handshake and then closes with 4401, 4403 or 4404
    (docs/api.md): a refused handshake (a bare HTTP 403 to a browser) is a failure.

    (channels.testing needs daphne, which Slipway does not install: this is its
    WebsocketCommunicator in a few lines.)
    """
    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
        "user": user or AnonymousUser(),
    }
    app = URLRouter(pipeline_sockets + cluster_sockets)
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "websocket.connect"})
    first = await communicator.receive_output(timeout=5)
    try:
        if first["type"] == "websocket.close":
            return "refused the handshake"
        assert first["type"] == "websocket.accept", first
        while True:
            message = await communicator.receive_output(timeout=0.5)
            if message["type"] == "websocket.close":
                return CLOSE_OUTCOMES.get(message.get("code"), str(message))
    except TimeoutError:
        return "allowed"
    finally:
        try:
            if not communicator.future.done():
                await communicator.send_input(
                    {"type": "websocket.disconnect", "code": 1000}
                )
            await communicator.wait(timeout=2)
        except BaseException:  # noqa: B036 - The consumer's end is not under test.
            pass


@pytest.mark.django_db(transaction=True)
def test_socket_matrix(people: dict[str, User | None]) -> None:
    world = make_world()
    failures = []
    for route, (least, kwargs) in SOCKETS.items():
        path = build_path(route, kwargs(world))
        for who in AS:
            got = async_to_sync(_connect)(path, people[who])
            want = expected(least, who, path)
            if got != want:
                failures.append(f"{path} as {who}: {got}, expected {want}")
    assert not failures, "\n".join(failures)


# --- per-object grants --------------------------------------------------------------


def test_every_route_has_a_scope() -> None:
    missing = sorted(set(PAGES) - set(SCOPES))
    assert not missing, f"Routes without a scope for the grants matrix: {missing}"
    assert not sorted(set(SCOPES) - set(PAGES)), "scopes for routes that are gone"


# Routes whose gate is below their rule: the environment's deploy rule decides after
# it (pages let viewers of the repository through, the API developers), and pages
# that list to viewers and take the admins' form on the same URL.
GATES = {
    "repos/<str:name>/schedules/": V,
    "repos/<str:name>/variables/": V,
    "environments/<str:name>/": V,
    "environments/<str:name>/<str:env>/deployments/<int:pk>/rollback/": V,
    "environments/<str:name>/<str:env>/promote/": V,
    "api/v1/^environments/(?P<pk>[0-9]{1,18})/rollback/$": D,
    "api/v1/^environments/(?P<pk>[0-9]{1,18})/promote/$": D,
}


@dataclass
class Grantee:
    """A user, their global role, and the grant they hold on world A's object."""

    name: str
    user: User
    role: str  # Global role, or NONE.
    grant: str
    kind: str  # REPO or CLUSTER
    group: Group | None = None

    def give(self, world: World) -> None:
        """Grant the role on WORLD's repository or cluster."""
        target = world.repository if self.kind == REPO else world.cluster
        RoleGrant.objects.grant(self.group or self.user, self.grant, target)

    def held(self, kind: str, granted_world: bool) -> str:
        here = self.grant if granted_world and kind == self.kind else NONE
        return max(self.role, here, key=RANK.__getitem__)

    def anywhere(self) -> str:
        return max(self.role, self.grant, key=RANK.__getitem__)


@pytest.fixture
def grantees(charlie: User, victor: User) -> list[Grantee]:
    dora = User.objects.create_user("dora", "dora@example.com", "pw-dora")
    team = Group.objects.create(name="cluster-team")
    dora.groups.add(team)
    return [
        # No global role; a developer on repository A.
        Grantee("charlie", charlie, NONE, D, REPO),
        # A global viewer; an operator on cluster A.
        Grantee("victor", victor, V, O, CLUSTER),
        # No global role; an operator on cluster A through her group.
        Grantee("dora", dora, NONE, O, CLUSTER, group=team),
    ]


def expected_with_grants(
    route: str, method: str, least: str, g: Grantee, granted_world: bool
) -> str:
    scope = SCOPES[route]
    scope = scope[method] if isinstance(scope, dict) else scope
    if scope == GLOBAL:
        return "allowed" if RANK[g.role] >= RANK[least] else "forbidden"
    if scope == LIST:
        return "allowed" if RANK[g.anywhere()] >= RANK[least] else "forbidden"
    gate = GATES.get(route, least)
    if RANK[g.anywhere()] < RANK[gate]:
        return "forbidden"  # No such role anywhere: as for a user without a role.
    held = g.held(scope, granted_world)
    if RANK[held] >= RANK[least]:
        return "allowed"
    return "forbidden" if RANK[held] >= RANK[V] else "hidden"


def outcome_with_grants(response: Any, path: str) -> str:
    """Classify like ``outcome``, and tell a 404 (or an unknown id in the body)."""
    if response.status_code == 404:
        return "hidden"
    if response.status_code == 400 and b"does not exist" in response.content:
        return "hidden"
    return outcome(response, path)


@pytest.mark.usefixtures("quiet")
@pytest.mark.django_db
def test_grants_matrix(grantees: list[Grantee], alice: User) -> None:
    shared_a, shared_b = make_world(), make_world()
    for g in grantees:
        g.give(shared_a)
    clients = {g.name: Client() for g in grantees}
    for g in grantees:
        clients[g.name].force_login(g.user)
    admin = Client()
    admin.force_login(alice)
    failures: list[str] = []
    for route, _ in url_patterns():
        if route.startswith("admin/"):
            continue
        rule = PAGES[route]
        for method, least in rule.methods.items():
            if least in (PUBLIC, LOGIN, TOKEN):
                continue
            for g in grantees:
                if method == "GET":
                    worlds = (shared_a, shared_b)
                else:  # A write may delete what it points at: fresh worlds.
                    worlds = (make_world(), make_world())
                    g.give(worlds[0])
                for granted, world in zip((True, False), worlds, strict=True):
                    path = build_path(route, rule.kwargs(world))
                    body = rule.body(world) if rule.body else None
                    response = request(clients[g.name], method, path, body)
                    got = outcome_with_grants(response, path)
                    want = expected_with_grants(route, method, least, g, granted)
                    if got == "hidden" and want == "allowed" and method == "GET":
                        # Not found for an admin either (an unknown pod): allowed.
                        if request(admin, method, path, body).status_code == 404:
                            got = "allowed"
                    if got != want:
                        failures.append(
                            f"{method} {path} as {g.name} "
                            f"({'granted' if granted else 'other'} world): {got} "
                            f"({response.status_code}), expected {want}"
                        )
    assert not failures, "\n".join(failures)


@pytest.mark.usefixtures("quiet")
def test_lists_show_only_granted_objects(grantees: list[Grantee]) -> None:
    a, b = make_world(), make_world()
    charlie, victor, dora = grantees
    charlie.give(a)
    dora.give(a)
    client = Client()
    client.force_login(charlie.user)
    for path in ("/", "/repos/", "/runs/", "/environments/"):
        body = client.get(path).content.decode()
        assert a.repository.name in body, path
        assert b.repository.name not in body, path
    api = Client()
    api.force_login(charlie.user)
    for endpoint, key in (
        ("repositories", "name"),
        ("runs", "repository"),
        ("jobs", "run"),
        ("deliveries", "repository"),
        ("schedules", "repository"),
        ("variables", "repository"),
        ("environments", "repository"),
        ("deployments", "environment"),
        ("clusters", "id"),
    ):
        response = api.get(f"/api/v1/{endpoint}/", HTTP_ACCEPT="application/json")
        assert response.status_code == 200, endpoint
        rows = response.json()["results"]
        got = {row[key] for row in rows}
        want = {
            "repositories": {a.repository.name},
            "runs": {a.repository.pk},
            "jobs": {a.run.pk},
            "deliveries": {a.repository.pk},
            "schedules": {a.repository.pk},
            "variables": {a.repository.pk},
            "environments": {a.repository.pk},
            "deployments": {a.environment.pk},
            "clusters": set(),  # Charlie's grant is on a repository only.
        }[endpoint]
        assert got == want, (endpoint, got)
    # Dora sees cluster A (her group's grant) and no repository.
    client.force_login(dora.user)
    body = client.get("/clusters/").content.decode()
    assert a.cluster.name in body and b.cluster.name not in body
    ids = [
        row["id"]
        for row in client.get(
            "/api/v1/clusters/", HTTP_ACCEPT="application/json"
        ).json()["results"]
    ]
    assert ids == [a.cluster.pk]
    assert client.get("/repos/").status_code == 200
    assert a.repository.name not in client.get("/repos/").content.decode()
    # A global viewer still sees everything.
    client.force_login(victor.user)
    body = client.get("/repos/").content.decode()
    assert a.repository.name in body and b.repository.name in body


@pytest.mark.usefixtures("quiet")
def test_buttons_follow_the_role_on_the_object(grantees: list[Grantee]) -> None:
    a, b = make_world(), make_world()
    charlie, victor, _ = grantees
    charlie.give(a)
    victor.give(a)
    client = Client()
    client.force_login(charlie.user)
    assert "Run pipeline" in client.get(f"/repos/{a.repository.name}/").content.decode()
    assert client.get(f"/repos/{b.repository.name}/").status_code == 404
    client.force_login(victor.user)
    assert (
        "Run pipeline"
        not in client.get(f"/repos/{a.repository.name}/").content.decode()
    )
    nodes = f"/clusters/{a.cluster.pk}/nodes/"
    assert "data-actions-template" in client.get(nodes).content.decode()
    other = f"/clusters/{b.cluster.pk}/nodes/"
    assert "data-actions-template" not in client.get(other).content.decode()


# Sockets as the grantees, over real WebSocket connections to the ASGI server.


def _cookie(user: User) -> str:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


async def _ws_outcome(server: Any, path: str, cookie: str) -> str:
    import asyncio

    import websockets

    socket = await websockets.connect(
        server.ws_url + path,
        additional_headers={"Origin": server.url, "Cookie": cookie},
        open_timeout=10,
    )
    try:
        while True:
            await asyncio.wait_for(socket.recv(), 1.0)
    except TimeoutError:
        return "allowed"
    except websockets.ConnectionClosed:
        return CLOSE_OUTCOMES.get(socket.close_code, f"closed {socket.close_code}")
    finally:
        await socket.close()


SOCKET_SCOPES = {
    "ws/runs/<int:run_id>/": REPO,
    "ws/activity/": LIST,
    "ws/jobs/<int:job_id>/log/": REPO,
    "ws/clusters/<int:cluster_id>/": CLUSTER,
}


def test_every_socket_route_has_a_scope() -> None:
    assert sorted(SOCKET_SCOPES) == sorted(SOCKETS)


def test_socket_grants_matrix(asgi_server: Any, grantees: list[Grantee]) -> None:
    a, b = make_world(), make_world()
    for g in grantees:
        g.give(a)
    # A live job: a finished one's log socket says "end" and closes by itself.
    for world in (a, b):
        Job.objects.filter(pk=world.job.pk).update(status=Job.Status.RUNNING)
    failures = []
    for g in grantees:
        cookie = _cookie(g.user)
        for route, (least, kwargs) in SOCKETS.items():
            for granted, world in ((True, a), (False, b)):
                path = build_path(route, kwargs(world))
                got = async_to_sync(_ws_outcome)(asgi_server, path, cookie)
                scope = SOCKET_SCOPES[route]
                if scope == LIST:
                    want = (
                        "allowed" if RANK[g.anywhere()] >= RANK[least] else "forbidden"
                    )
                else:
                    held = g.held(scope, granted)
                    want = (
                        "allowed"
                        if RANK[held] >= RANK[least]
                        else "hidden"
                        if RANK[g.anywhere()] >= RANK[least]
                        else "forbidden"
                    )
                if got != want:
                    failures.append(f"{path} as {g.name}: {got}, expected {want}")
    assert not failures, "\n".join(failures)


def test_activity_feed_carries_only_granted_repositories(
    asgi_server: Any, grantees: list[Grantee]
) -> None:
    import asyncio
    import json

    import websockets
    from asgiref.sync import sync_to_async

    from pipelines import events

    a, b = make_world(), make_world()
    charlie = grantees[0]
    charlie.give(a)
    cookie = _cookie(charlie.user)

    async def watch() -> list[str]:
        socket = await websockets.connect(
            asgi_server.ws_url + "/ws/activity/",
            additional_headers={"Origin": asgi_server.url, "Cookie": cookie},
            open_timeout=10,
        )
        seen: list[str] = []
        async with socket:
            await asyncio.sleep(0.5)  # Subscribed once accepted and added.
            await sync_to_async(events.run_changed)(b.run)
            await sync_to_async(events.run_changed)(a.run)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while loop.time() < deadline and a.repository.name not in seen:
                message = json.loads(
                    await asyncio.wait_for(socket.recv(), deadline - loop.time())
                )
                seen.append(message["event"]["repository"])
        return seen

    # B's event was published first: had it passed the filter, it would be first.
    assert asyncio.run(watch()) == [a.repository.name]
