"""Roles: who may read, trigger, operate and administer what.

Roles are ordered by power, each including the ones below it: viewer < developer <
operator < admin. A user holds them in two ways:

* a **global role**: membership of the Django group of that name (a superuser is an
  admin). It applies to every repository and cluster;
* a **grant** (``core.models.RoleGrant``): a role on one repository or one cluster,
  given to the user or to one of their groups, like a GitLab project membership.

A user's role on an object is the stronger of the two. A user without a global role
sees only the objects they hold a grant on (``visible``); a global role works on
every object. Pages, the API, the WebSocket consumers and the admin all ask the
functions below, so the rule is the same everywhere.

Everything a request needs is read in one query and kept on the user object, which
lives as long as the request (or the socket): a list of 500 rows asks no more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, NamedTuple

VIEWER = "viewer"
DEVELOPER = "developer"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (VIEWER, DEVELOPER, OPERATOR, ADMIN)
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# The models a grant may point at ("app_label.model"). Named, not imported: core
# depends on neither app.
REPOSITORY = "pipelines.repository"
CLUSTER = "clusters.cluster"
GRANT_TARGETS = (REPOSITORY, CLUSTER)

# Pass as the object to ask "does the user hold this role on anything at all?" (the
# gate of a list page, whose rows are then filtered with ``visible``).
ANY = "any"

_CACHE = "_slipway_access"


class Scope(NamedTuple):
    """One object a grant can point at, without loading it."""

    label: str  # "pipelines.repository" or "clusters.cluster"
    pk: int


def repository(pk: int) -> Scope:
    """Return the scope of the repository with id PK."""
    return Scope(REPOSITORY, int(pk))


def cluster(pk: int) -> Scope:
    """Return the scope of the cluster with id PK."""
    return Scope(CLUSTER, int(pk))


@dataclass(frozen=True)
class Access:
    """What one user holds: the global role and the grants (label -> id -> rank)."""

    role: str | None
    grants: dict[str, dict[int, int]] = field(default_factory=dict)

    def granted(self, scope: Scope) -> str | None:
        rank = self.grants.get(scope.label, {}).get(scope.pk)
        return None if rank is None else ROLES[rank]

    def strongest_grant(self) -> str | None:
        ranks = [rank for ids in self.grants.values() for rank in ids.values()]
        return ROLES[max(ranks)] if ranks else None


def _stronger(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if _RANK[a] >= _RANK[b] else b


def access(user: Any) -> Access | None:
    """Return what USER holds, or None for anonymous and inactive users.

    One query (group names and grants in a UNION), cached on the user object. Call
    ``forget`` after changing a user's groups or grants in the same request.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Access(ADMIN)
    cached = user.__dict__.get(_CACHE)
    if cached is not None:
        return cached
    from django.contrib.auth.models import Group
    from django.db.models import BigIntegerField, CharField, Q, Value

    from .models import RoleGrant

    empty = Value("", output_field=CharField())
    groups = (
        Group.objects.filter(user=user)
        .order_by()
        .values_list("name", empty, empty, Value(None, output_field=BigIntegerField()))
    )
    grants = (
        RoleGrant.objects.filter(Q(user=user) | Q(group__user=user))
        .order_by()
        .values_list(
            "role", "content_type__app_label", "content_type__model", "object_id"
        )
    )
    role: str | None = None
    held: dict[str, dict[int, int]] = {}
    for name, app_label, model, object_id in groups.union(grants, all=True):
        if name not in _RANK:
            continue
        if object_id is None:
            role = _stronger(role, name)
            continue
        ids = held.setdefault(f"{app_label}.{model}", {})
        ids[object_id] = max(ids.get(object_id, -1), _RANK[name])
    result = Access(role, held)
    user.__dict__[_CACHE] = result
    return result


def forget(user: Any) -> None:
    """Drop USER's cached roles (after their groups or grants changed)."""
    if user is not None:
        user.__dict__.pop(_CACHE, None)


def _target_field(model: type, via: str | None) -> tuple[str, str]:
    """Return (grant target label, lookup path to its id) for rows of MODEL."""
    label = model._meta.label_lower
    if via is None and label in GRANT_TARGETS:
        return label, "pk"
    if via is None:
        links = [
            f
            for f in model._meta.concrete_fields
            if f.is_relation and f.related_model._meta.label_lower in GRANT_TARGETS
        ]
        if len(links) != 1:
            raise ValueError(f"{label}: name the path to its repository or cluster")
        return links[0].related_model._meta.label_lower, links[0].name
    current: Any = model
    for part in via.split("__"):
        current = current._meta.get_field(part).related_model
        if current is None:
            raise ValueError(f"{label}.{via} does not lead to a repository or cluster")
    target = current._meta.label_lower
    if target not in GRANT_TARGETS:
        raise ValueError(f"{label}.{via} does not lead to a repository or cluster")
    return target, via


def scope_of(obj: Any, via: str | None = None) -> Scope | None:
    """Return the repository or cluster OBJ belongs to, or None (global only).

    OBJ may be a ``Scope``, a repository or cluster, or a row that points at one:
    directly (a run's ``repository``) or along VIA (``"run__repository"`` for a
    job). A row pointing at nothing (a global variable) has no scope: only a global
    role counts for it.
    """
    if obj is None or isinstance(obj, Scope):
        return obj
    label, path = _target_field(type(obj), via)
    if path == "pk":
        return Scope(label, obj.pk)
    *hops, last = path.split("__")
    current = obj
    for hop in hops:
        current = getattr(current, hop)
    pk = getattr(current, type(current)._meta.get_field(last).attname)
    return None if pk is None else Scope(label, pk)


def role_of(user: Any, obj: Any = None) -> str | None:
    """Return USER's strongest role (on OBJ when given), or None.

    Without OBJ: the global role. With a repository or cluster (or a row of one, or
    a ``Scope``): the stronger of the global role and the grants on it. With
    ``ANY``: the strongest role the user holds anywhere.
    """
    held = access(user)
    if held is None:
        return None
    if obj is None or held.role == ADMIN:
        return held.role
    if obj == ANY:
        return _stronger(held.role, held.strongest_grant())
    if not held.grants:
        return held.role
    scope = scope_of(obj)
    return held.role if scope is None else _stronger(held.role, held.granted(scope))


def has_role(user: Any, role: str, obj: Any = None) -> bool:
    """Return whether USER holds ROLE or a stronger one (on OBJ; see ``role_of``)."""
    held = role_of(user, obj)
    return held is not None and _RANK[held] >= _RANK[role]


def visible_ids(user: Any, label: str, role: str = VIEWER) -> set[int] | None:
    """Return the ids of the LABEL objects USER holds ROLE on; None means all."""
    held = access(user)
    if held is None:
        return set()
    if held.role is not None and _RANK[held.role] >= _RANK[role]:
        return None
    rank = _RANK[role]
    return {pk for pk, r in held.grants.get(label, {}).items() if r >= rank}


def visible(
    user: Any, queryset: Any, via: str | None = None, role: str = VIEWER
) -> Any:
    """Return the rows of QUERYSET whose repository or cluster USER holds ROLE on.

    A global role of at least ROLE sees every row (the queryset is returned as it
    is); otherwise rows are filtered to the granted objects, found along VIA (as in
    ``scope_of``; guessed when the model has one link to a repository or cluster).
    """
    label, path = _target_field(queryset.model, via)
    ids = visible_ids(user, label, role)
    if ids is None:
        return queryset
    return queryset.filter(**{f"{path}__in": sorted(ids)})


def filter_visible(user: Any, rows: Iterable[Any], label: str) -> list[Any]:
    """Return the ROWS (repositories or clusters, already loaded) USER may see."""
    ids = visible_ids(user, label)
    rows = list(rows)
    return rows if ids is None else [row for row in rows if row.pk in ids]


# --- enforcing on pages ------------------------------------------------------------

Resolver = Callable[[dict[str, Any]], Scope | None]


def require(
    request: Any, role: str, scope: Scope | str | Callable[[], Scope | None] | None
) -> None:
    """Raise unless the request's user holds ROLE on SCOPE.

    SCOPE is a ``Scope`` (or a function returning one, or None when the object does
    not exist), ``ANY``, or None for a global role only. No such role anywhere: 403,
    as for a user without a role. The object does not exist, or the user cannot even
    see it: 404, so a grant holder learns nothing about other repositories. Seen but
    not enough: 403.
    """
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    user = request.user
    if has_role(user, role):
        return
    if scope is None or not has_role(user, role, ANY):
        raise PermissionDenied(f"This needs the {role} role.")
    if scope == ANY:
        return
    target = scope() if callable(scope) else scope
    if target is not None:
        if has_role(user, role, target):
            return
        if has_role(user, VIEWER, target):
            raise PermissionDenied(f"This needs the {role} role here.")
    raise Http404("No such object, or you do not have access to it.")


# How a WebSocket consumer refuses (after accepting, so that the browser sees the
# code; a refused handshake reaches it as a bare HTTP 403). See docs/api.md.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


def socket_refusal(user: Any, role: str, scope: Scope | str | None) -> int | None:
    """Return the close code a socket refuses USER with, or None to let them in.

    The rule of ``require`` in close codes: anonymous 4401; no such role anywhere
    4403; SCOPE None (no such object) or an object the user cannot see 4404; seen
    but not enough 4403. SCOPE is the object the socket is about, or ``ANY``.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return CLOSE_UNAUTHENTICATED
    if not has_role(user, role, ANY):
        return CLOSE_FORBIDDEN
    if scope == ANY:
        return None
    if scope is None:
        return CLOSE_NOT_FOUND
    if has_role(user, role, scope):
        return None
    return CLOSE_FORBIDDEN if has_role(user, VIEWER, scope) else CLOSE_NOT_FOUND


def role_required(
    role: str, scope: Resolver | str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a view so that only users holding ROLE get through.

    SCOPE says where: None for a global role only (creating a repository); ``ANY``
    for a page that lists objects, filtered in the view with ``visible``; or a
    function of the URL's keyword arguments returning the repository or cluster the
    page is about (a ``Scope``, or None when there is no such object). The resolver
    runs at most once per request, and only when the global role does not decide;
    the page's buttons (``core.context_processors``) ask about the same object.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            if callable(scope):
                request.role_scope = _memo(scope, kwargs)
                require(request, role, request.role_scope)
            else:
                require(request, role, scope)
            return view(request, *args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _memo(resolve: Resolver, kwargs: dict[str, Any]) -> Callable[[], Scope | None]:
    box: list[Scope | None] = []

    def get() -> Scope | None:
        if not box:
            box.append(resolve(kwargs))
        return box[0]

    return get


def request_scope(request: Any) -> Scope | None:
    """Return the object the current page is about, when its view named one."""
    resolve = getattr(request, "role_scope", None)
    return resolve() if resolve is not None else None
