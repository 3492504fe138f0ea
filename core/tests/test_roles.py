"""Global roles and per-object grants: role_of, has_role, visible, and their cost."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.http import Http404
from django.test import RequestFactory

from clusters.models import Cluster
from clusters.tests.factories import make_cluster
from core import roles
from core.models import RoleGrant
from pipelines.models import Job, Repository, Run, Variable
from pipelines.tests.factories import (
    make_job,
    make_repository,
    make_run,
    make_stage,
    make_variable,
)

pytestmark = pytest.mark.django_db


def fresh(user: User) -> User:
    """Return USER as a new request would load it (nothing cached)."""
    return User.objects.get(pk=user.pk)


@pytest.fixture
def two_repos() -> tuple[Repository, Repository]:
    return make_repository(name="alpha"), make_repository(name="beta")


@pytest.fixture
def two_clusters() -> tuple[Cluster, Cluster]:
    return (
        make_cluster(name="x", auth_mode="token", token="t"),
        make_cluster(name="y", auth_mode="token", token="t"),
    )


def test_global_roles_work_as_before(alice, bob, olivia, victor, charlie):
    assert [roles.role_of(u) for u in (alice, bob, olivia, victor, charlie)] == [
        "admin",
        "developer",
        "operator",
        "viewer",
        None,
    ]
    assert roles.has_role(olivia, roles.DEVELOPER)
    assert not roles.has_role(victor, roles.DEVELOPER)
    assert roles.role_of(None) is None


def test_a_grant_gives_its_role_on_that_repository_only(charlie, two_repos):
    a, b = two_repos
    RoleGrant.objects.grant(charlie, roles.DEVELOPER, a)
    charlie = fresh(charlie)
    assert roles.role_of(charlie) is None
    assert roles.role_of(charlie, a) == roles.DEVELOPER
    assert roles.role_of(charlie, b) is None
    assert roles.has_role(charlie, roles.VIEWER, a)
    assert not roles.has_role(charlie, roles.OPERATOR, a)
    assert not roles.has_role(charlie, roles.VIEWER, b)
    assert roles.role_of(charlie, roles.ANY) == roles.DEVELOPER


def test_the_stronger_of_global_role_and_grant_wins(victor, bob, two_clusters):
    x, y = two_clusters
    RoleGrant.objects.grant(victor, roles.OPERATOR, x)
    RoleGrant.objects.grant(bob, roles.VIEWER, x)  # Weaker than bob's global role.
    victor, bob = fresh(victor), fresh(bob)
    assert roles.role_of(victor, x) == roles.OPERATOR
    assert roles.role_of(victor, y) == roles.VIEWER
    assert roles.role_of(bob, x) == roles.DEVELOPER


def test_a_group_grant_reaches_every_member(charlie, victor, two_repos):
    a, b = two_repos
    team = Group.objects.create(name="team-alpha")
    charlie.groups.add(team)
    RoleGrant.objects.grant(team, roles.OPERATOR, a)
    RoleGrant.objects.grant(charlie, roles.DEVELOPER, a)
    assert roles.role_of(fresh(charlie), a) == roles.OPERATOR
    assert roles.role_of(fresh(victor), a) == roles.VIEWER  # Not a member.


def test_rows_of_a_repository_take_its_grant(charlie, two_repos):
    a, b = two_repos
    run = make_run(repository=a)
    job = make_job(run=run, stage=make_stage(run, "build", 0))
    RoleGrant.objects.grant(charlie, roles.DEVELOPER, a)
    charlie = fresh(charlie)
    assert roles.role_of(charlie, run) == roles.DEVELOPER
    assert roles.scope_of(job, "run__repository") == roles.repository(a.pk)
    assert roles.has_role(
        charlie, roles.DEVELOPER, roles.scope_of(job, "run__repository")
    )
    # A global variable belongs to no repository: only a global role counts.
    assert roles.scope_of(make_variable(None, name="G")) is None
    assert roles.role_of(charlie, make_variable(None, name="H")) is None


def test_visible_filters_rows_for_users_without_a_global_role(
    charlie, victor, two_repos, two_clusters
):
    a, b = two_repos
    x, y = two_clusters
    for repo in (a, b):
        make_job(run=(run := make_run(repository=repo)), stage=make_stage(run, "s", 0))
    RoleGrant.objects.grant(charlie, roles.VIEWER, a)
    RoleGrant.objects.grant(charlie, roles.ADMIN, y)
    charlie, victor = fresh(charlie), fresh(victor)
    repos = roles.visible(charlie, Repository.objects.all())
    assert list(repos.values_list("name", flat=True)) == ["alpha"]
    assert {r.repository_id for r in roles.visible(charlie, Run.objects.all())} == {
        a.pk
    }
    jobs = roles.visible(charlie, Job.objects.all(), "run__repository")
    assert {j.run.repository_id for j in jobs} == {a.pk}
    assert list(roles.visible(charlie, Cluster.objects.all())) == [y]
    assert (
        roles.visible(charlie, Repository.objects.all(), role=roles.DEVELOPER).count()
        == 0
    )
    # A global viewer sees everything; anonymous users nothing.
    assert roles.visible(victor, Repository.objects.all()).count() == 2
    assert roles.visible(None, Repository.objects.all()).count() == 0
    with pytest.raises(ValueError):
        roles.visible(charlie, Variable.objects.all(), "name")


def test_one_query_per_user_however_many_rows_are_checked(
    charlie, two_repos, django_assert_max_num_queries
):
    repos = [make_repository(name=f"r{i}") for i in range(40)]
    team = Group.objects.create(name="team")
    charlie.groups.add(team)
    for repo in repos[::2]:
        RoleGrant.objects.grant(charlie, roles.DEVELOPER, repo)
    RoleGrant.objects.grant(team, roles.ADMIN, repos[1])
    charlie = fresh(charlie)
    with django_assert_max_num_queries(1):
        got = [roles.role_of(charlie, repo) for repo in repos]
        assert roles.visible_ids(charlie, roles.REPOSITORY) == {
            r.pk for r in repos[::2]
        } | {repos[1].pk}
    assert got[:4] == [roles.DEVELOPER, roles.ADMIN, roles.DEVELOPER, None]


def test_a_list_page_costs_the_same_with_3_or_30_granted_repositories(
    client, charlie, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    client.force_login(charlie)
    for n in (3, 30):
        for i in range(n):
            repo = make_repository(name=f"list-{n}-{i}")
            make_run(repository=repo)
            RoleGrant.objects.grant(charlie, roles.VIEWER, repo)
        make_repository(name=f"hidden-{n}")
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/repos/")
        assert response.status_code == 200
        body = response.content.decode()
        assert f"list-{n}-0" in body and f"hidden-{n}" not in body
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    with django_assert_max_num_queries(counts[0]):
        client.get("/repos/")


def test_grants_go_with_their_object(charlie, two_repos):
    a, _ = two_repos
    RoleGrant.objects.grant(charlie, roles.ADMIN, a)
    a.delete()
    assert not RoleGrant.objects.exists()


def test_a_grant_names_a_user_or_a_group_and_one_role_per_object(charlie, two_repos):
    a, _ = two_repos
    RoleGrant.objects.grant(charlie, roles.VIEWER, a)
    RoleGrant.objects.grant(charlie, roles.ADMIN, a)  # Replaces the first.
    assert list(RoleGrant.objects.on(a).values_list("role", flat=True)) == ["admin"]
    grant = RoleGrant.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        RoleGrant.objects.filter(pk=grant.pk).update(user=None)
    with pytest.raises(ValueError):
        RoleGrant.objects.grant(charlie, roles.VIEWER, charlie)


def test_require_answers_403_or_404_like_a_page(charlie, victor, two_repos):
    a, b = two_repos
    RoleGrant.objects.grant(charlie, roles.DEVELOPER, a)
    request = RequestFactory().get("/")
    request.user = fresh(charlie)
    roles.require(request, roles.DEVELOPER, roles.repository(a.pk))
    with pytest.raises(PermissionDenied):
        roles.require(request, roles.OPERATOR, roles.repository(a.pk))
    with pytest.raises(Http404):  # Not even visible: its existence is not told.
        roles.require(request, roles.VIEWER, roles.repository(b.pk))
    with pytest.raises(Http404):
        roles.require(request, roles.VIEWER, lambda: None)
    with pytest.raises(PermissionDenied):  # Global-only pages.
        roles.require(request, roles.VIEWER, None)
    request.user = fresh(victor)  # A role, but no grant anywhere.
    with pytest.raises(PermissionDenied):
        roles.require(request, roles.DEVELOPER, roles.repository(b.pk))
