"""Cluster pages: rendered from the monitor's Redis snapshot, patched live over
``/ws/clusters/<id>/``. Actions are POST-only, operator-only and audited."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core import audit, roles

from . import kube, services, snapshot
from .forms import ApplyForm, ClusterForm
from .models import Cluster

PAGE_SIZE = 100
# Samples on the overview's usage charts: ten minutes at the monitor's default
# five-second interval.
CHART_SAMPLES = 120
View = Callable[..., HttpResponse]


# Who may do what is decided by core.roles (global roles and per-cluster grants).
role_required = roles.role_required


def _cluster_scope(kwargs: dict[str, Any]) -> roles.Scope:
    """The cluster a page is about (its id is in the URL: no query)."""
    return roles.cluster(kwargs["pk"])


# How the "not permitted" notices name a kind.
KIND_LABELS = {
    "nodes": "nodes",
    "pods": "pods",
    "deployments": "deployments",
    "statefulsets": "statefulsets",
    "daemonsets": "daemonsets",
    "replicasets": "replicasets",
    "horizontalpodautoscalers": "HorizontalPodAutoscalers",
    "events": "events",
    "services": "services",
    "ingresses": "ingresses",
    "persistentvolumes": "PersistentVolumes",
    "persistentvolumeclaims": "PersistentVolumeClaims",
    "storageclasses": "StorageClasses",
}


def _not_permitted(state: dict[str, str], kinds: list[str]) -> list[dict[str, Any]]:
    """Return the notices for the KINDS a page shows that the cluster refuses.

    Each says which namespaces the identity may not list the kind in (none named:
    across the cluster), so a page says why a table is empty or short instead of
    looking as if the cluster had no such objects."""
    refused = snapshot.not_permitted(state)
    return [
        {
            "kind": kind,
            "label": KIND_LABELS.get(kind, kind),
            "namespaces": refused[kind],
        }
        for kind in kinds
        if kind in refused
    ]


def _context(request: HttpRequest, cluster: Cluster, tab: str, **extra: Any) -> dict:
    state = snapshot.read_state(cluster.pk)
    # The kinds the page reads (default: those it follows live); the overview
    # summarises every kind.
    kinds = extra.pop("kinds", None) or [
        k for k in str(extra.get("live_kinds", "")).split(",") if k
    ]
    not_permitted = _not_permitted(state, kinds)
    return {
        "cluster": cluster,
        "tab": tab,
        "state": state,
        "stale": snapshot.is_stale(state),
        "metrics_state": state.get("metrics", "unknown"),
        "not_permitted": not_permitted,
        # Refused across the cluster: the table shows nothing, and says so.
        "refused_kinds": {n["kind"] for n in not_permitted if not n["namespaces"]},
        "can_act": roles.has_role(request.user, roles.OPERATOR, cluster),
        "can_admin": roles.has_role(request.user, roles.ADMIN, cluster),
        "live_kinds": extra.pop("live_kinds", ""),
        **extra,
    }


def _sorted(objs: dict[str, dict]) -> list[dict]:
    return [dict(objs[k], key=k) for k in sorted(objs)]


# ------------------------------------------------------------------ cluster CRUD


@require_GET
@role_required(roles.VIEWER, roles.ANY)
def cluster_list(request: HttpRequest) -> HttpResponse:
    """List the registered clusters with their health."""
    clusters = list(roles.visible(request.user, Cluster.objects.all()))
    r = snapshot.client()
    pipe = r.pipeline(transaction=False)
    for c in clusters:
        pipe.hgetall(snapshot.state_key(c.pk))
        pipe.hlen(snapshot.objects_key(c.pk, "nodes"))
        pipe.hlen(snapshot.objects_key(c.pk, "pods"))
    results = pipe.execute() if clusters else []
    cards = []
    for i, c in enumerate(clusters):
        raw_state, nodes, pods = results[3 * i : 3 * i + 3]
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
        cards.append(
            {
                "cluster": c,
                "stale": snapshot.is_stale(state),
                "nodes": nodes,
                "pods": pods,
                "watched": bool(state),
            }
        )
    return render(
        request,
        "clusters/cluster_list.html",
        {"cards": cards, "can_admin": roles.has_role(request.user, roles.ADMIN)},
    )


def _save_cluster(request: HttpRequest, cluster: Cluster | None) -> HttpResponse:
    form = ClusterForm(request.POST or None, request.FILES or None, instance=cluster)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        audit.record(
            "cluster.create" if cluster is None else "cluster.update",
            request=request,
            target=saved,
            details={
                "auth_mode": saved.auth_mode,
                "context": saved.context,
                "namespaces": list(saved.namespaces or []),
            },
        )
        messages.success(request, f"Saved cluster {saved.name}.")
        return redirect("clusters:cluster-detail", saved.pk)
    return render(
        request, "clusters/cluster_form.html", {"form": form, "cluster": cluster}
    )


@require_http_methods(["GET", "POST"])
@role_required(roles.ADMIN)
def cluster_create(request: HttpRequest) -> HttpResponse:
    """Register a cluster."""
    return _save_cluster(request, None)


@require_http_methods(["GET", "POST"])
@role_required(roles.ADMIN, _cluster_scope)
def cluster_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a cluster's credentials or settings."""
    return _save_cluster(request, get_object_or_404(Cluster, pk=pk))


@require_POST
@role_required(roles.ADMIN, _cluster_scope)
def cluster_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Forget a cluster (the monitor stops watching it within seconds)."""
    cluster = get_object_or_404(Cluster, pk=pk)
    audit.record("cluster.delete", request=request, target=cluster)
    cluster.delete()
    snapshot.forget(pk)
    messages.success(request, f"Removed cluster {cluster.name}.")
    return redirect("clusters:cluster-list")


@require_POST
@role_required(roles.OPERATOR, _cluster_scope)
def cluster_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask the cluster for its version and what our identity may do."""
    cluster = get_object_or_404(Cluster, pk=pk)
    namespace = request.POST.get("namespace", "default").strip() or "default"
    result = services.test_connection(cluster, namespace)
    audit.record(
        "cluster.test_connection",
        request=request,
        target=cluster,
        details={"ok": result.ok, "error": result.error},
    )
    return render(
        request,
        "clusters/cluster_test.html",
        _context(request, cluster, "overview", result=result, namespace=namespace),
    )


# --------------------------------------------------------------------- overview


def _control_plane(cluster: Cluster) -> tuple[list[tuple[str, bool]], str]:
    """Return the /readyz checks (cached for 15 s) and an error, if any."""
    key = f"slipway:cluster:{cluster.pk}:readyz"
    cached = cache.get(key)
    if cached is not None:
        return cached
    try:
        with kube.connect(cluster) as b:
            b.timeout = (2, 3)
            value: tuple[list[tuple[str, bool]], str] = (b.readyz(), "")
    except (kube.KubeError, kube.CredentialsError) as exc:
        value = ([], str(exc))
    cache.set(key, value, 15)
    return value


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def cluster_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show the cluster's health at a glance."""
    cluster = get_object_or_404(Cluster, pk=pk)
    nodes = snapshot.read_objects(pk, "nodes")
    pods = snapshot.read_objects(pk, "pods")
    node_status = Counter(
        "Cordoned" if n.get("unschedulable") and n["status"] == "Ready" else n["status"]
        for n in nodes.values()
    )
    phases = Counter(p.get("phase", "Unknown") for p in pods.values())
    active = [p for p in pods.values() if p.get("phase") not in ("Succeeded", "Failed")]
    usage = snapshot.read_usage(pk, "nodes")
    resources = {
        "cpu_alloc": sum(n.get("cpu_alloc", 0) for n in nodes.values()),
        "mem_alloc": sum(n.get("mem_alloc", 0) for n in nodes.values()),
        "cpu_req": sum(p.get("cpu_req", 0) for p in active),
        "mem_req": sum(p.get("mem_req", 0) for p in active),
        "cpu_used": sum(u.get("cpu", 0) for u in usage.values()) if usage else None,
        "mem_used": sum(u.get("mem", 0) for u in usage.values()) if usage else None,
    }
    warnings = sorted(
        (
            e
            for e in snapshot.read_objects(pk, "events").values()
            if e["type"] == "Warning"
        ),
        key=lambda e: e.get("last") or "",
        reverse=True,
    )[:10]
    problems = [
        f"Node {n['name']}: {p}" for n in nodes.values() for p in n.get("problems", [])
    ]
    for kind in ("deployments", "statefulsets", "daemonsets"):
        for w in snapshot.read_objects(pk, kind).values():
            if w.get("ready", 0) < w.get("desired", 0):
                problems.append(
                    f"{kind[:-1].capitalize()} {w['namespace']}/{w['name']}: "
                    f"{w['ready']}/{w['desired']} ready"
                )
    readyz, readyz_error = _control_plane(cluster)
    history = snapshot.read_history(pk, CHART_SAMPLES)
    return render(
        request,
        "clusters/cluster_detail.html",
        _context(
            request,
            cluster,
            "overview",
            live_kinds="nodes",
            kinds=list(KIND_LABELS),
            node_status=sorted(node_status.items()),
            node_count=len(nodes),
            phases=sorted(phases.items()),
            pod_count=len(pods),
            resources=resources,
            warnings=warnings,
            problems=problems[:20],
            readyz=readyz,
            readyz_failed=[name for name, ok in readyz if not ok],
            readyz_error=readyz_error,
            history=history,
            usage_chart=_usage_chart(history, resources),
            usage_kinds=[("cpu", "CPU"), ("mem", "Memory")],
        ),
    )


def _usage_chart(history: list[dict[str, Any]], resources: dict[str, Any]) -> dict:
    """Return what the overview's usage charts draw (clusters.js reads it as JSON).

    Samples are ``[at, cpu, mem]`` triples, oldest first: a third of the size of the
    stored dicts, and the page keeps appending the monitor's new samples to them."""
    return {
        "samples": [[h["at"], h.get("cpu", 0), h.get("mem", 0)] for h in history],
        "keep": CHART_SAMPLES,
        **{k: resources[k] for k in ("cpu_alloc", "mem_alloc", "cpu_req", "mem_req")},
    }


# ------------------------------------------------------------------------ lists


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def node_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List nodes with capacity, allocatable and usage."""
    cluster = get_object_or_404(Cluster, pk=pk)
    nodes = _sorted(snapshot.read_objects(pk, "nodes"))
    usage = snapshot.read_usage(pk, "nodes")
    pods_per_node = Counter(
        p.get("node") for p in snapshot.read_objects(pk, "pods").values()
    )
    for n in nodes:
        n["usage"] = usage.get(n["key"])
        n["pod_count"] = pods_per_node.get(n["name"], 0)
    return render(
        request,
        "clusters/node_list.html",
        _context(request, cluster, "nodes", live_kinds="nodes", nodes=nodes),
    )


def _page_number(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def pod_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List pods, filtered and paginated on the server.

    The monitor keeps the pods' keys in sorted sets (all, per phase, per node; a
    namespace is a key range), so a page is one ZRANGE and one HMGET of 100
    projections, and a search runs inside Redis: at 30,000 pods reading every key
    per request took most of a second."""
    cluster = get_object_or_404(Cluster, pk=pk)
    namespace = request.GET.get("namespace", "").strip()
    phase = request.GET.get("phase", "").strip()
    node = request.GET.get("node", "").strip()
    q = request.GET.get("q", "").strip().lower()
    number = _page_number(request.GET.get("page"))

    def find(number: int) -> tuple[int, list[str]]:
        return snapshot.find_keys(
            pk,
            "pods",
            namespace=namespace,
            status=phase,
            node=node,
            search=q,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )

    matching, page_keys = find(number)
    paginator = Paginator(range(matching), PAGE_SIZE)
    if number > paginator.num_pages:
        # Past the end (the list shrank, or a typed URL): show the last page.
        number = paginator.num_pages
        matching, page_keys = find(number)
        paginator = Paginator(range(matching), PAGE_SIZE)
    objs = snapshot.read_objects_by_key(pk, "pods", page_keys)
    rows = [dict(objs[k], key=k) for k in page_keys if k in objs]
    usage = snapshot.read_usage(pk, "pods", [p["key"] for p in rows])
    # One reverse() per page, not three per row: rendering the rows is the cost.
    yaml_base = f"{reverse('clusters:cluster-detail', args=[pk])}yaml/pods/"
    for p in rows:
        p["usage"] = usage.get(p["key"])
        p["status"] = p.get("reason") or p.get("phase")
        p["yaml_url"] = f"{yaml_base}{quote(p['key'], safe='/')}/"
    page = Page(rows, number, paginator)
    query = request.GET.copy()
    query.pop("page", None)
    # Paging and filtering swap only the table (htmx): no page chrome to render.
    partial = request.headers.get("HX-Target") == "pod-table"
    return render(
        request,
        "clusters/partials/pod_table.html" if partial else "clusters/pod_list.html",
        _context(
            request,
            cluster,
            "pods",
            live_kinds="pods",
            page=page,
            total=snapshot.count(pk, "pods"),
            matching=matching,
            namespaces=snapshot.namespaces(pk, "pods"),
            filters={"namespace": namespace, "phase": phase, "node": node, "q": q},
            phases=["Pending", "Running", "Succeeded", "Failed", "Unknown"],
            query=query.urlencode(),
        ),
    )


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def workload_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List deployments, statefulsets and daemonsets."""
    cluster = get_object_or_404(Cluster, pk=pk)
    groups = [
        (kind, title, _sorted(snapshot.read_objects(pk, kind)))
        for kind, title in (
            ("deployments", "Deployments"),
            ("statefulsets", "StatefulSets"),
            ("daemonsets", "DaemonSets"),
        )
    ]
    return render(
        request,
        "clusters/workload_list.html",
        _context(
            request,
            cluster,
            "workloads",
            live_kinds="deployments,statefulsets,daemonsets",
            groups=groups,
        ),
    )


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def service_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List services and ingresses."""
    cluster = get_object_or_404(Cluster, pk=pk)
    return render(
        request,
        "clusters/service_list.html",
        _context(
            request,
            cluster,
            "services",
            live_kinds="services,ingresses",
            services=_sorted(snapshot.read_objects(pk, "services")),
            ingresses=_sorted(snapshot.read_objects(pk, "ingresses")),
        ),
    )


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def storage_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List PersistentVolumes, claims and StorageClasses."""
    cluster = get_object_or_404(Cluster, pk=pk)
    return render(
        request,
        "clusters/storage_list.html",
        _context(
            request,
            cluster,
            "storage",
            live_kinds="persistentvolumes,persistentvolumeclaims,storageclasses",
            pvs=_sorted(snapshot.read_objects(pk, "persistentvolumes")),
            pvcs=_sorted(snapshot.read_objects(pk, "persistentvolumeclaims")),
            classes=_sorted(snapshot.read_objects(pk, "storageclasses")),
        ),
    )


def _autoscaling_extras(cluster: Cluster) -> dict[str, Any]:
    """Return VPA recommendations and Cluster Autoscaler status (cached for 30 s)."""
    key = f"slipway:cluster:{cluster.pk}:autoscaling"
    cached = cache.get(key)
    if cached is not None:
        return cached
    value: dict[str, Any] = {"vpa": None, "ca_status": None, "error": ""}
    try:
        with kube.connect(cluster) as b:
            b.timeout = (2, 5)
            value["vpa"] = b.vpa_recommendations()
            value["ca_status"] = b.cluster_autoscaler_status()
    except (kube.KubeError, kube.CredentialsError) as exc:
        value["error"] = str(exc)
    cache.set(key, value, 30)
    return value


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def hpa_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List HPAs; show VPA recommendations and Cluster Autoscaler status if present."""
    cluster = get_object_or_404(Cluster, pk=pk)
    return render(
        request,
        "clusters/hpa_list.html",
        _context(
            request,
            cluster,
            "hpas",
            live_kinds="horizontalpodautoscalers",
            hpas=_sorted(snapshot.read_objects(pk, "horizontalpodautoscalers")),
            autoscaling=_autoscaling_extras(cluster),
        ),
    )


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def event_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List events, warnings first, newest first."""
    cluster = get_object_or_404(Cluster, pk=pk)
    events = sorted(
        (dict(v, key=k) for k, v in snapshot.read_objects(pk, "events").items()),
        key=lambda e: e.get("last") or "",
        reverse=True,
    )
    events.sort(key=lambda e: e.get("type") != "Warning")
    return render(
        request,
        "clusters/event_list.html",
        _context(request, cluster, "events", live_kinds="events", events=events[:500]),
    )


# ------------------------------------------------------------- logs and YAML


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def pod_logs(request: HttpRequest, pk: int, namespace: str, name: str) -> HttpResponse:
    """Show a pod's log; the page follows it by polling ``pod_log_text``."""
    cluster = get_object_or_404(Cluster, pk=pk)
    pod = snapshot.read_object(pk, "pods", f"{namespace}/{name}") or {}
    return render(
        request,
        "clusters/pod_logs.html",
        _context(
            request,
            cluster,
            "pods",
            namespace=namespace,
            name=name,
            containers=pod.get("containers") or [],
            container=request.GET.get("container", ""),
        ),
    )


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def pod_log_text(
    request: HttpRequest, pk: int, namespace: str, name: str
) -> HttpResponse:
    """Return the last lines of a container's log as text."""
    cluster = get_object_or_404(Cluster, pk=pk)
    try:
        tail = max(1, min(int(request.GET.get("tail", "500")), 5000))
    except ValueError:
        tail = 500
    try:
        with kube.connect(cluster) as b:
            text = b.pod_logs(
                namespace, name, request.GET.get("container") or None, tail=tail
            )
        status = 200
    except (kube.KubeError, kube.CredentialsError) as exc:
        text, status = str(exc), 502 if not getattr(exc, "refused", False) else 403
    return HttpResponse(text, content_type="text/plain; charset=utf-8", status=status)


@require_GET
@role_required(roles.VIEWER, _cluster_scope)
def object_yaml(
    request: HttpRequest, pk: int, kind: str, namespace: str, name: str
) -> HttpResponse:
    """Show any object as YAML (``-`` as namespace for cluster-scoped objects)."""
    cluster = get_object_or_404(Cluster, pk=pk)
    ns = None if namespace == "-" else namespace
    error = ""
    text = ""
    try:
        with kube.connect(cluster) as b:
            text = b.get_object_yaml(kind, ns, name)
    except (kube.KubeError, kube.CredentialsError) as exc:
        error = str(exc)
    return render(
        request,
        "clusters/object_yaml.html",
        _context(
            request,
            cluster,
            "",
            kind=kind,
            namespace=ns,
            name=name,
            text=text,
            error=error,
        ),
        status=200 if not error else 404 if "not found" in error else 502,
    )


# ----------------------------------------------------------------------- actions


def _back(request: HttpRequest, cluster: Cluster) -> HttpResponseRedirect:
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, {request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("clusters:cluster-detail", args=[cluster.pk])
    return HttpResponseRedirect(target)


@require_POST
@role_required(roles.OPERATOR, _cluster_scope)
def cluster_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Do one action on the cluster (scale, restart, cordon …) and go back."""
    cluster = get_object_or_404(Cluster, pk=pk)
    if action not in services.ACTIONS or action == "apply":
        raise PermissionDenied("Unknown action.")
    params = {
        k: v
        for k, v in request.POST.items()
        if k not in ("csrfmiddlewaretoken", "next")
    }
    result = services.perform_action(cluster, action, params, request=request)
    (messages.success if result.ok else messages.error)(request, result.message)
    return _back(request, cluster)


@require_http_methods(["GET", "POST"])
@role_required(roles.OPERATOR, _cluster_scope)
def apply_yaml(request: HttpRequest, pk: int) -> HttpResponse:
    """Apply YAML with server-side apply."""
    cluster = get_object_or_404(Cluster, pk=pk)
    form = ApplyForm(request.POST or None)
    result = None
    if request.method == "POST" and form.is_valid():
        result = services.perform_action(
            cluster, "apply", dict(form.cleaned_data), request=request
        )
        (messages.success if result.ok else messages.error)(request, result.message)
        if result.ok:
            return redirect("clusters:apply", pk)
    return render(
        request,
        "clusters/apply.html",
        _context(request, cluster, "apply", form=form, result=result),
        status=422 if result is not None and not result.ok else 200,
    )
