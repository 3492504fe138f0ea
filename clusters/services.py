"""Verbs on clusters: test a connection, act on objects. The only write path.

Every action is recorded in the audit log, whether the cluster accepted it or not:
a refused action is as interesting to an auditor as a successful one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core import audit

from . import kube
from .models import Cluster


@dataclass
class ConnectionResult:
    """What "test connection" found out."""

    ok: bool
    version: str = ""
    error: str = ""
    rules: kube.Rules | None = None
    readyz: list[tuple[str, bool]] = field(default_factory=list)


def test_connection(cluster: Cluster, namespace: str = "default") -> ConnectionResult:
    """Ask CLUSTER for its version and what our identity may do; record the outcome."""
    try:
        with kube.connect(cluster) as backend:
            version = backend.server_version()
            cluster.mark_seen(version)
            try:
                rules = backend.self_subject_rules(namespace)
            except kube.KubeError as exc:
                rules = kube.Rules([], [], True, str(exc))
            return ConnectionResult(True, version=version, rules=rules)
    except kube.CredentialsError as exc:
        cluster.mark_unreachable(str(exc))
        return ConnectionResult(False, error=str(exc))
    except kube.KubeError as exc:
        cluster.mark_unreachable(str(exc))
        return ConnectionResult(False, error=str(exc))


class ActionError(Exception):
    """An action could not be done; the message is for the user."""


@dataclass
class ActionResult:
    """The outcome of an action, for a flash message."""

    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _int(params: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    try:
        value = int(str(params.get(key, "")).strip())
    except ValueError:
        raise ActionError(f"{key} must be a whole number.") from None
    if value < minimum:
        raise ActionError(f"{key} must be at least {minimum}.")
    return value


def _scale(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    replicas = _int(p, "replicas")
    b.scale(p["kind"], p["namespace"], p["name"], replicas)
    return f"Scaled {p['kind']} {p['namespace']}/{p['name']} to {replicas} replicas."


def _restart(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    b.rollout_restart(p["kind"], p["namespace"], p["name"])
    return f"Restarted {p['kind']} {p['namespace']}/{p['name']}."


def _resources(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    requests = {
        r: str(p.get(f"requests_{r}", "")).strip()
        for r in ("cpu", "memory")
        if str(p.get(f"requests_{r}", "")).strip()
    }
    limits = {
        r: str(p.get(f"limits_{r}", "")).strip()
        for r in ("cpu", "memory")
        if str(p.get(f"limits_{r}", "")).strip()
    }
    if not p.get("container"):
        raise ActionError("Choose a container.")
    if not requests and not limits:
        raise ActionError("Give at least one request or limit.")
    b.set_resources(
        p["kind"], p["namespace"], p["name"], p["container"], requests, limits
    )
    return f"Updated resources of {p['container']} in {p['namespace']}/{p['name']}."


def _delete_pod(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    b.delete_pod(p["namespace"], p["name"])
    return f"Deleted pod {p['namespace']}/{p['name']}."


def _cordon(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    b.cordon(p["name"])
    return f"Cordoned node {p['name']}."


def _uncordon(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    b.uncordon(p["name"])
    return f"Uncordoned node {p['name']}."


def _drain(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    result = b.drain(p["name"])
    p["_result"] = {"evicted": result.evicted, "blocked": result.blocked}
    text = f"Drained node {p['name']}: evicted {len(result.evicted)} pods."
    if result.blocked:
        blocked = "; ".join(f"{k}: {v}" for k, v in result.blocked.items())
        text += f" Blocked by a PodDisruptionBudget: {blocked}"
    return text


def _edit_hpa(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    cpu = str(p.get("cpu_target", "")).strip()
    b.edit_hpa(
        p["namespace"],
        p["name"],
        _int(p, "min_replicas", minimum=1),
        _int(p, "max_replicas", minimum=1),
        int(cpu) if cpu.isdigit() else None,
    )
    return f"Updated HPA {p['namespace']}/{p['name']}."


def _apply(b: kube.KubeBackend, p: dict[str, Any]) -> str:
    objs = b.apply_yaml(
        p.get("yaml", ""),
        field_manager="slipway",
        force=bool(p.get("force")),
        namespace=p.get("namespace") or None,
    )
    names = [f"{o.get('kind')} {(o.get('metadata') or {}).get('name')}" for o in objs]
    return "Applied " + ", ".join(names) + "."


ACTIONS: dict[str, Callable[[kube.KubeBackend, dict[str, Any]], str]] = {
    "scale": _scale,
    "restart": _restart,
    "resources": _resources,
    "delete-pod": _delete_pod,
    "cordon": _cordon,
    "uncordon": _uncordon,
    "drain": _drain,
    "edit-hpa": _edit_hpa,
    "apply": _apply,
}


def perform_action(
    cluster: Cluster,
    action: str,
    params: dict[str, Any],
    *,
    request: Any = None,
    actor: Any = None,
    backend: kube.KubeBackend | None = None,
) -> ActionResult:
    """Do ACTION on CLUSTER with PARAMS; audit it; return a message for the user."""
    fn = ACTIONS.get(action)
    if fn is None:
        raise ActionError(f"Unknown action {action!r}.")
    params = dict(params)
    target = {
        k: params.get(k)
        for k in ("kind", "namespace", "name", "container")
        if params.get(k)
    }
    try:
        if backend is None:
            with kube.connect(cluster) as b:
                message = fn(b, params)
        else:
            message = fn(backend, params)
        result = ActionResult(True, message, params.get("_result") or {})
    except ActionError as exc:
        result = ActionResult(False, str(exc))
    except (kube.KubeError, kube.CredentialsError) as exc:
        result = ActionResult(False, str(exc))
    except KeyError as exc:
        result = ActionResult(False, f"Missing {exc.args[0]}.")
    details = {"target": target, "ok": result.ok, "message": result.message[:1000]}
    if action == "apply":
        details["yaml_bytes"] = len(str(params.get("yaml", "")))
    else:
        details["params"] = {
            k: v for k, v in params.items() if not k.startswith("_") and k != "yaml"
        }
    audit.record(
        f"cluster.{action}",
        actor=actor,
        request=request,
        target=cluster,
        details=details,
    )
    return result
