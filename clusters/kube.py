"""The one place that talks to Kubernetes API servers (synchronously).

Build a client from a stored :class:`~clusters.models.Cluster` with :func:`connect`,
then call the typed helpers on :class:`KubeBackend`. Every request carries a timeout,
TLS is verified unless the cluster says otherwise, and every API error becomes a
:class:`KubeError` carrying what the cluster said (a 403 is "the cluster refused").

All requests go through the official ``kubernetes`` client (its ``ApiClient``
serialises, authenticates and sends them); nothing here speaks HTTP by hand. Objects
are returned as plain dicts (the JSON the server sent): turning 10,000 pods into
generated model classes is slow and nothing here needs them.

PITFALL: the 37.x client sends every ``patch_*`` body as ``application/json-patch+json``
unless told otherwise, which a real API server rejects for a dict body. Every patch
below passes ``_content_type`` explicitly.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import yaml

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

    from .models import Cluster


class _LazyModule:
    """A module imported on first attribute access.

    The kubernetes client costs ~35 MiB and ~1 s to import, and every Slipway process
    imports this module at start (the admin, the pages, the engine), while only the
    ones that talk to a cluster need the client. Exceptions are reached through the
    module too (``except k8s.ApiException``): an except clause is evaluated only when
    an exception is on its way, and by then the client has been imported.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


k8s: Any = _LazyModule("kubernetes.client")
k8s_config: Any = _LazyModule("kubernetes.config")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
TIMEOUT = (CONNECT_TIMEOUT, READ_TIMEOUT)

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# --------------------------------------------------------------------------- errors


class KubeError(Exception):
    """An API server (or the way to it) said no.

    ``status`` is the HTTP status (0 when the server could not be reached),
    ``reason`` the Status reason (``Forbidden``, ``Conflict``, ``Unreachable``…),
    ``message`` the server's own words, ``causes`` its ``details.causes``.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        causes: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes or []

    def __str__(self) -> str:
        if self.status in (401, 403):
            return f"the cluster refused: {self.message}"
        if self.status == 0:
            return f"cannot reach the cluster: {self.message}"
        return self.message

    @property
    def refused(self) -> bool:
        """Return whether the cluster denied the identity (401/403)."""
        return self.status in (401, 403)

    @classmethod
    def from_api_exception(cls, exc: ApiException) -> KubeError:
        """Map the client's ApiException (with a v1 Status body, or not) to a KubeError."""
        status = int(exc.status or 0)
        body = exc.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("kind") == "Status":
            return cls(
                status,
                data.get("reason") or str(exc.reason or ""),
                data.get("message") or str(exc.reason or ""),
                (data.get("details") or {}).get("causes") or [],
            )
        text = (body or "").strip() or str(exc.reason or "") or f"HTTP {status}"
        reason = {404: "NotFound", 401: "Unauthorized", 403: "Forbidden"}.get(
            status, str(exc.reason or "Error")
        )
        return cls(status, reason, text)

    @classmethod
    def unreachable(cls, exc: BaseException) -> KubeError:
        """Wrap a connection or TLS failure."""
        return cls(0, "Unreachable", str(exc) or exc.__class__.__name__)


class CredentialsError(ValueError):
    """The stored credentials cannot make a client (bad kubeconfig, missing token)."""


# ---------------------------------------------------------------- kubeconfig parsing

# Keys that make the kubernetes client run a program or read a local file: an
# uploaded kubeconfig must never make the Slipway server do either.
_UNSAFE_USER_KEYS = (
    "exec",
    "auth-provider",
    "client-certificate",
    "client-key",
    "tokenFile",
)
_UNSAFE_CLUSTER_KEYS = ("certificate-authority",)


def parse_kubeconfig(text: str) -> dict[str, Any]:
    """Parse and check an uploaded kubeconfig; raise CredentialsError saying why not.

    The file must be self-contained (``*-data`` fields and tokens): references to
    local files and exec/auth-provider plugins are refused, because they would run a
    program or read a file on the Slipway server.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CredentialsError(f"This is not valid YAML{where}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts"), list):
        raise CredentialsError(
            "This is not a kubeconfig: it has no list of contexts "
            "(expected the output of `kubectl config view --raw --minify`)."
        )
    if not data["contexts"]:
        raise CredentialsError("The kubeconfig has no contexts.")
    for user in data.get("users") or []:
        spec = (user or {}).get("user") or {}
        for key in _UNSAFE_USER_KEYS:
            if key in spec:
                name = (user or {}).get("name", "?")
                raise CredentialsError(
                    f"User {name!r} uses {key!r}, which would run a program or read "
                    "a file on the Slipway server. Use a token or embedded "
                    "client-certificate-data/client-key-data instead."
                )
    for cluster in data.get("clusters") or []:
        spec = (cluster or {}).get("cluster") or {}
        for key in _UNSAFE_CLUSTER_KEYS:
            if key in spec:
                raise CredentialsError(
                    f"Cluster {cluster.get('name', '?')!r} refers to the file "
                    f"{key!r}; embed it as certificate-authority-data instead."
                )
    return data


def kubeconfig_contexts(data: dict[str, Any]) -> list[str]:
    """Return the context names of a parsed kubeconfig, in file order."""
    return [
        str(c.get("name")) for c in data.get("contexts") or [] if c and c.get("name")
    ]


def kubeconfig_server(data: dict[str, Any], context: str | None) -> str:
    """Return the API server URL the CONTEXT (or the current one) points at."""
    name = context or data.get("current-context")
    ctx = next(
        (c for c in data.get("contexts") or [] if c and c.get("name") == name), None
    )
    if ctx is None:
        return ""
    cluster_name = (ctx.get("context") or {}).get("cluster")
    for c in data.get("clusters") or []:
        if c and c.get("name") == cluster_name:
            return str((c.get("cluster") or {}).get("server") or "")
    return ""


# --------------------------------------------------------------------- client build


def credentials_dict(cluster: Cluster) -> tuple[dict[str, Any], str | None]:
    """Return (kubeconfig dict, context) for a kubeconfig or token cluster.

    Token + CA credentials become a one-context kubeconfig, so the sync client and
    the monitor's async client load every cluster through the same loader.
    """
    if cluster.auth_mode == "kubeconfig":
        data = parse_kubeconfig(cluster.kubeconfig or "")
        context = cluster.context or None
        if context and context not in kubeconfig_contexts(data):
            raise CredentialsError(f"The kubeconfig has no context {context!r}.")
        if context is None and not data.get("current-context"):
            context = kubeconfig_contexts(data)[0]
        if cluster.api_server or not cluster.verify_tls:
            data = copy.deepcopy(data)
            name = context or data.get("current-context")
            ctx = next(c for c in data["contexts"] if c.get("name") == name)
            cluster_name = (ctx.get("context") or {}).get("cluster")
            for c in data.get("clusters") or []:
                if c.get("name") == cluster_name:
                    spec = c.setdefault("cluster", {})
                    if cluster.api_server:
                        spec["server"] = cluster.api_server.rstrip("/")
                    if not cluster.verify_tls:
                        spec["insecure-skip-tls-verify"] = True
        return data, context
    if cluster.auth_mode == "token":
        if not cluster.api_server or not cluster.token:
            raise CredentialsError("Token auth needs the API server URL and a token.")
        spec: dict[str, Any] = {"server": cluster.api_server.rstrip("/")}
        if cluster.ca_cert.strip():
            spec["certificate-authority-data"] = base64.b64encode(
                cluster.ca_cert.strip().encode()
            ).decode()
        if not cluster.verify_tls:
            spec["insecure-skip-tls-verify"] = True
        data = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "slipway", "cluster": spec}],
            "users": [{"name": "slipway", "user": {"token": cluster.token.strip()}}],
            "contexts": [
                {
                    "name": "slipway",
                    "context": {"cluster": "slipway", "user": "slipway"},
                }
            ],
            "current-context": "slipway",
        }
        return data, "slipway"
    raise CredentialsError(f"Auth mode {cluster.auth_mode!r} has no kubeconfig.")


def build_configuration(cluster: Cluster) -> k8s.Configuration:
    """Return a client Configuration for CLUSTER's stored credentials."""
    cfg = k8s.Configuration()
    if cluster.auth_mode == "in_cluster":
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except k8s_config.ConfigException as exc:
            raise CredentialsError(f"Not running inside a cluster: {exc}") from None
        if not cluster.verify_tls:
            cfg.verify_ssl = False
    else:
        data, context = credentials_dict(cluster)
        try:
            k8s_config.load_kube_config_from_dict(
                data, context=context, client_configuration=cfg, persist_config=False
            )
        except (k8s_config.ConfigException, ValueError, TypeError, KeyError) as exc:
            raise CredentialsError(f"Cannot use these credentials: {exc}") from None
    # Fail fast: the monitor and the pages need to know within seconds that a
    # cluster is gone, not after urllib3's retries.
    cfg.retries = 0
    return cfg


async def build_async_client(cluster: Cluster) -> Any:
    """Return a kubernetes_asyncio ApiClient for CLUSTER (the monitor's watches)."""
    from kubernetes_asyncio import client as ak8s
    from kubernetes_asyncio import config as ak8s_config
    from kubernetes_asyncio.config.config_exception import (
        ConfigException as AsyncConfigException,
    )

    cfg = ak8s.Configuration()
    try:
        if cluster.auth_mode == "in_cluster":
            ak8s_config.load_incluster_config(client_configuration=cfg)
            if not cluster.verify_tls:
                cfg.verify_ssl = False
        else:
            data, context = credentials_dict(cluster)
            await ak8s_config.load_kube_config_from_dict(
                data, context=context, client_configuration=cfg
            )
    except (AsyncConfigException, ValueError, TypeError, KeyError) as exc:
        raise CredentialsError(f"Cannot use these credentials: {exc}") from None
    return ak8s.ApiClient(cfg)


def connect(cluster: Cluster) -> KubeBackend:
    """Return the backend for CLUSTER (raise CredentialsError on bad credentials)."""
    return KubeBackend(k8s.ApiClient(build_configuration(cluster)))


# ------------------------------------------------------------------------ resources


@dataclass(frozen=True)
class Kind:
    """Where the API serves one kind of object."""

    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


KINDS: dict[str, Kind] = {
    k.plural: k
    for k in (
        Kind("Node", "", "v1", "nodes", namespaced=False),
        Kind("Namespace", "", "v1", "namespaces", namespaced=False),
        Kind("Pod", "", "v1", "pods"),
        Kind("Service", "", "v1", "services"),
        Kind("ConfigMap", "", "v1", "configmaps"),
        Kind("Secret", "", "v1", "secrets"),
        Kind("ServiceAccount", "", "v1", "serviceaccounts"),
        Kind("Event", "", "v1", "events"),
        Kind("PersistentVolume", "", "v1", "persistentvolumes", namespaced=False),
        Kind("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
        Kind("Deployment", "apps", "v1", "deployments"),
        Kind("StatefulSet", "apps", "v1", "statefulsets"),
        Kind("DaemonSet", "apps", "v1", "daemonsets"),
        Kind("ReplicaSet", "apps", "v1", "replicasets"),
        Kind("Job", "batch", "v1", "jobs"),
        Kind("CronJob", "batch", "v1", "cronjobs"),
        Kind(
            "HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers"
        ),
        Kind("Ingress", "networking.k8s.io", "v1", "ingresses"),
        Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
        Kind(
            "StorageClass", "storage.k8s.io", "v1", "storageclasses", namespaced=False
        ),
        Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
        Kind("Role", "rbac.authorization.k8s.io", "v1", "roles"),
        Kind("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
        Kind(
            "ClusterRole",
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            namespaced=False,
        ),
        Kind(
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            namespaced=False,
        ),
    )
}
_BY_KIND = {k.kind.lower(): k for k in KINDS.values()}
SCALABLE = ("deployments", "statefulsets", "replicasets")
RESTARTABLE = ("deployments", "statefulsets", "daemonsets")


def kind_for(name: str) -> Kind:
    """Return the Kind for a plural (``pods``), a Kind (``Pod``) or a singular."""
    key = name.lower()
    if key in KINDS:
        return KINDS[key]
    if key in _BY_KIND:
        return _BY_KIND[key]
    if key + "s" in KINDS:
        return KINDS[key + "s"]
    raise KubeError(404, "NotFound", f"Slipway does not know the kind {name!r}.")


# ------------------------------------------------------------------- result shapes


@dataclass
class Page:
    """One page of a list: items as dicts, the list's resourceVersion, the next token."""

    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


@dataclass
class Rules:
    """What an identity may do in a namespace (SelfSubjectRulesReview)."""

    resource_rules: list[dict[str, Any]]
    non_resource_rules: list[dict[str, Any]]
    incomplete: bool
    evaluation_error: str = ""


@dataclass
class DrainResult:
    """What a drain did: pods evicted, pods a PodDisruptionBudget protected, skipped."""

    evicted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.blocked


# -------------------------------------------------------------- backend interface


class OrchestratorBackend(Protocol):
    """What Slipway needs from an orchestrator; Kubernetes is the one implementation.

    A Docker Swarm backend would map workloads to services and nodes to swarm nodes.
    Contract: every method either returns or raises :class:`KubeError` (the name is
    historical: it means "the orchestrator said no"); none blocks longer than its
    timeout; objects are plain dicts in the orchestrator's own shape; all calls are
    safe to retry except ``apply`` with ``force``.
    """

    def server_version(self) -> str: ...

    def list_objects(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
        continue_token: str | None = None,
    ) -> Page: ...

    def get_object(self, kind: str, namespace: str | None, name: str) -> dict: ...

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> dict: ...

    def rollout_restart(self, kind: str, namespace: str, name: str) -> dict: ...

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def cordon(self, node: str) -> dict: ...

    def uncordon(self, node: str) -> dict: ...

    def drain(self, node: str) -> DrainResult: ...

    def apply_yaml(
        self, text: str, field_manager: str = "slipway", force: bool = False
    ) -> list[dict]: ...


# ----------------------------------------------------------------------- backend


class KubeBackend:
    """Typed helpers over one cluster's API server (implements OrchestratorBackend)."""

    def __init__(self, api_client: k8s.ApiClient, timeout: Any = TIMEOUT) -> None:
        self.api = api_client
        self.timeout = timeout
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.authz = k8s.AuthorizationV1Api(api_client)

    def close(self) -> None:
        """Release the connection pool."""
        self.api.close()

    def __enter__(self) -> KubeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a generated API method raw; return the decoded JSON body."""
        kwargs.setdefault("_request_timeout", self.timeout)
        kwargs["_preload_content"] = False
        try:
            resp = fn(*args, **kwargs)
            data = resp.data
        except k8s.ApiException as exc:
            raise KubeError.from_api_exception(exc) from None
        except Exception as exc:  # urllib3 errors: refused, DNS, TLS, timeout.
            if _is_network_error(exc):
                raise KubeError.unreachable(exc) from None
            raise
        return json.loads(data) if data else None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
        raw: bool = False,
    ) -> Any:
        """Send one request through the client's ApiClient (for any resource path).

        Use it for paths the generated API has no method for (any kind by path,
        discovery, ``/readyz``); it authenticates and times out like the rest.
        """
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        try:
            params = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(*params, _request_timeout=self.timeout)
            resp.read()
        except k8s.ApiException as exc:
            raise KubeError.from_api_exception(exc) from None
        except Exception as exc:
            if _is_network_error(exc):
                raise KubeError.unreachable(exc) from None
            raise
        if not 200 <= resp.status <= 299:
            raise KubeError.from_api_exception(
                k8s.ApiException(status=resp.status, reason=resp.reason, body=resp.data)
            )
        if raw:
            return resp.data.decode("utf-8", "replace")
        return json.loads(resp.data) if resp.data else None

    # -- reading

    def server_version(self) -> str:
        """Return the server's gitVersion (``v1.36.2``)."""
        data = self._call(k8s.VersionApi(self.api).get_code)
        return str(data.get("gitVersion", ""))

    def readyz(self) -> list[tuple[str, bool]]:
        """Return the control plane's /readyz checks as (name, ok) pairs."""
        try:
            text = self.request(
                "GET", "/readyz", query=[("verbose", "")], raw=True, accept="text/plain"
            )
        except KubeError as exc:
            # A failing check makes the API server answer 500 with the same list:
            # that is the answer the overview wants, not an error.
            checks = parse_readyz(exc.message) if exc.status == 500 else []
            if not checks:
                raise
            return checks
        return parse_readyz(text)

    def self_subject_rules(self, namespace: str = "default") -> Rules:
        """Return what the stored identity may do in NAMESPACE."""
        body = k8s.V1SelfSubjectRulesReview(
            api_version="authorization.k8s.io/v1",
            kind="SelfSubjectRulesReview",
            spec=k8s.V1SelfSubjectRulesReviewSpec(namespace=namespace),
        )
        data = self._call(self.authz.create_self_subject_rules_review, body)
        status = (data or {}).get("status") or {}
        return Rules(
            resource_rules=status.get("resourceRules") or [],
            non_resource_rules=status.get("nonResourceRules") or [],
            incomplete=bool(status.get("incomplete")),
            evaluation_error=status.get("evaluationError") or "",
        )

    def list_objects(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> Page:
        """Return one page of KIND, filtered by the server (all namespaces if None)."""
        k = kind_for(kind)
        query: list[tuple[str, Any]] = [("limit", int(limit))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if continue_token:
            query.append(("continue", continue_token))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        data = self.request("GET", k.path(namespace), query=query)
        meta = data.get("metadata") or {}
        items = data.get("items") or []
        for item in items:
            # Lists omit kind/apiVersion on items; callers render and re-apply them.
            item.setdefault("kind", k.kind)
            item.setdefault("apiVersion", k.api_version)
        return Page(
            items=items,
            resource_version=str(meta.get("resourceVersion", "")),
            continue_token=meta.get("continue") or None,
            remaining=meta.get("remainingItemCount"),
        )

    def iter_objects(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        page_size: int = 500,
        **kw: Any,
    ) -> Iterator[dict[str, Any]]:
        """Yield every object of KIND, page by page."""
        token = None
        while True:
            page = self.list_objects(
                kind, namespace, limit=page_size, continue_token=token, **kw
            )
            yield from page.items
            token = page.continue_token
            if not token:
                return

    def list_nodes(self, **kw: Any) -> Page:
        return self.list_objects("nodes", None, **kw)

    def list_pods(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("pods", namespace, **kw)

    def list_deployments(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("deployments", namespace, **kw)

    def list_statefulsets(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("statefulsets", namespace, **kw)

    def list_daemonsets(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("daemonsets", namespace, **kw)

    def list_services(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("services", namespace, **kw)

    def list_ingresses(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("ingresses", namespace, **kw)

    def list_hpas(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("horizontalpodautoscalers", namespace, **kw)

    def list_events(self, namespace: str | None = None, **kw: Any) -> Page:
        return self.list_objects("events", namespace, **kw)

    def get_object(self, kind: str, namespace: str | None, name: str) -> dict:
        """Return one object of KIND as a dict."""
        k = kind_for(kind)
        obj = self.request("GET", k.path(namespace, name))
        obj.setdefault("kind", k.kind)
        obj.setdefault("apiVersion", k.api_version)
        return obj

    def get_object_yaml(self, kind: str, namespace: str | None, name: str) -> str:
        """Return one object as YAML, without the noisy managedFields."""
        obj = self.get_object(kind, namespace, name)
        (obj.get("metadata") or {}).pop("managedFields", None)
        return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)

    def pod_logs(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        *,
        tail: int | None = 500,
        since_seconds: int | None = None,
        timestamps: bool = False,
    ) -> str:
        """Return the last TAIL lines of a container's log (``kubectl logs --tail``:
        false options are left out of the query, as kubectl leaves them)."""
        kwargs: dict[str, Any] = {"timestamps": True} if timestamps else {}
        if container:
            kwargs["container"] = container
        if tail is not None:
            kwargs["tail_lines"] = int(tail)
        if since_seconds:
            kwargs["since_seconds"] = int(since_seconds)
        try:
            resp = self.core.read_namespaced_pod_log(
                name,
                namespace,
                _preload_content=False,
                _request_timeout=self.timeout,
                **kwargs,
            )
            return resp.data.decode("utf-8", "replace")
        except k8s.ApiException as exc:
            raise KubeError.from_api_exception(exc) from None
        except Exception as exc:
            if _is_network_error(exc):
                raise KubeError.unreachable(exc) from None
            raise

    def cluster_autoscaler_status(self) -> str | None:
        """Return the Cluster Autoscaler's status text, or None when it is absent."""
        try:
            cm = self.request(
                "GET",
                "/api/v1/namespaces/kube-system/configmaps/cluster-autoscaler-status",
            )
        except KubeError as exc:
            if exc.status in (403, 404):
                return None
            raise
        return str((cm.get("data") or {}).get("status", ""))

    def has_api_group(self, group: str, version: str | None = None) -> bool:
        """Return whether discovery lists GROUP (and VERSION, if given)."""
        data = self.request("GET", "/apis")
        for g in data.get("groups") or []:
            if g.get("name") == group:
                return version is None or any(
                    v.get("version") == version for v in g.get("versions") or []
                )
        return False

    def vpa_recommendations(self) -> list[dict[str, Any]] | None:
        """Return VPA recommendations per target, or None when the VPA CRDs are absent."""
        if not self.has_api_group("autoscaling.k8s.io", "v1"):
            return None
        data = self.request(
            "GET",
            "/apis/autoscaling.k8s.io/v1/verticalpodautoscalers",
            query=[("limit", 500)],
        )
        out = []
        for vpa in data.get("items") or []:
            meta = vpa.get("metadata") or {}
            rec = ((vpa.get("status") or {}).get("recommendation") or {}).get(
                "containerRecommendations"
            ) or []
            out.append(
                {
                    "namespace": meta.get("namespace", ""),
                    "name": meta.get("name", ""),
                    "target": (vpa.get("spec") or {}).get("targetRef") or {},
                    "containers": rec,
                }
            )
        return out

    def metrics(self, kind: str) -> list[dict[str, Any]] | None:
        """Return metrics.k8s.io usage for ``nodes`` or ``pods``; None without it."""
        try:
            data = self.request("GET", f"/apis/metrics.k8s.io/v1beta1/{kind}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return data.get("items") or []

    # -- acting (each one is the request kubectl sends)

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> dict:
        """Set REPLICAS through the scale subresource with a merge patch (kubectl scale)."""
        k = kind_for(kind)
        if k.plural not in SCALABLE:
            raise KubeError(422, "Invalid", f"{k.kind} cannot be scaled.")
        if replicas < 0:
            raise KubeError(422, "Invalid", "Replicas cannot be negative.")
        fn = {
            "deployments": self.apps.patch_namespaced_deployment_scale,
            "statefulsets": self.apps.patch_namespaced_stateful_set_scale,
            "replicasets": self.apps.patch_namespaced_replica_set_scale,
        }[k.plural]
        return self._call(
            fn,
            name,
            namespace,
            {"spec": {"replicas": int(replicas)}},
            _content_type=MERGE,
        )

    def _patch_workload(
        self, kind: str, namespace: str, name: str, body: dict, **kw: Any
    ) -> dict:
        k = kind_for(kind)
        fn = {
            "deployments": self.apps.patch_namespaced_deployment,
            "statefulsets": self.apps.patch_namespaced_stateful_set,
            "daemonsets": self.apps.patch_namespaced_daemon_set,
        }.get(k.plural)
        if fn is None:
            raise KubeError(
                422, "Invalid", f"{k.kind} is not a workload Slipway edits."
            )
        return self._call(fn, name, namespace, body, _content_type=SMP, **kw)

    def rollout_restart(
        self, kind: str, namespace: str, name: str, *, now: dt.datetime | None = None
    ) -> dict:
        """Restart a workload's pods exactly as ``kubectl rollout restart`` does."""
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}
        }
        return self._patch_workload(
            kind, namespace, name, body, field_manager="kubectl-rollout"
        )

    def set_resources(
        self,
        kind: str,
        namespace: str,
        name: str,
        container: str,
        requests: dict[str, str] | None = None,
        limits: dict[str, str] | None = None,
    ) -> dict:
        """Set one container's requests/limits (SMP merges containers by name).

        An empty string for a value removes it (``null`` in the patch).
        """
        resources: dict[str, Any] = {}
        if requests:
            resources["requests"] = {k: (v or None) for k, v in requests.items()}
        if limits:
            resources["limits"] = {k: (v or None) for k, v in limits.items()}
        body = {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": container, "resources": resources}]
                    }
                }
            }
        }
        return self._patch_workload(kind, namespace, name, body)

    def cordon(self, node: str) -> dict:
        """Mark NODE unschedulable (kubectl cordon: SMP spec.unschedulable true)."""
        return self._call(
            self.core.patch_node,
            node,
            {"spec": {"unschedulable": True}},
            _content_type=SMP,
        )

    def uncordon(self, node: str) -> dict:
        """Mark NODE schedulable again (kubectl uncordon: SMP unschedulable null)."""
        return self._call(
            self.core.patch_node,
            node,
            {"spec": {"unschedulable": None}},
            _content_type=SMP,
        )

    def evict(self, namespace: str, name: str) -> None:
        """Evict one pod through policy/v1 Eviction (respects PodDisruptionBudgets)."""
        body = k8s.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace),
        )
        # The generated method sets no Content-Type for this POST; kubectl sends JSON.
        self._call(
            self.core.create_namespaced_pod_eviction,
            name,
            namespace,
            body,
            _headers={"Content-Type": "application/json"},
        )

    def drain(self, node: str) -> DrainResult:
        """Cordon NODE, then evict its pods except DaemonSet and mirror pods.

        Pods a PodDisruptionBudget protects (429) are reported in ``blocked`` with
        the server's reason, not retried: the caller decides whether to try again.
        """
        self.cordon(node)
        result = DrainResult()
        for pod in self.iter_objects(
            "pods", None, field_selector=f"spec.nodeName={node}"
        ):
            meta = pod.get("metadata") or {}
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            owners = meta.get("ownerReferences") or []
            mirror = "kubernetes.io/config.mirror" in (meta.get("annotations") or {})
            phase = (pod.get("status") or {}).get("phase")
            if mirror or any(o.get("kind") == "DaemonSet" for o in owners):
                result.skipped.append(key)
                continue
            if phase in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
                result.skipped.append(key)
                continue
            try:
                self.evict(meta["namespace"], meta["name"])
            except KubeError as exc:
                if exc.status == 429:
                    causes = "; ".join(c.get("message", "") for c in exc.causes)
                    result.blocked[key] = causes or exc.message
                    continue
                if exc.status == 404:
                    continue
                raise
            result.evicted.append(key)
        return result

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete one pod gracefully, as ``kubectl delete pod`` does: DeleteOptions
        with background propagation in the body, the pod's own grace period."""
        self._call(
            self.core.delete_namespaced_pod,
            name,
            namespace,
            body={
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "propagationPolicy": "Background",
            },
            # The generated client labels no DELETE body; kubectl (and the API
            # server's decoder) say what it is.
            _headers={"Content-Type": "application/json"},
        )

    def edit_hpa(
        self,
        namespace: str,
        name: str,
        min_replicas: int,
        max_replicas: int,
        cpu_target: int | None = None,
    ) -> dict:
        """Set an HPA's bounds and CPU utilisation target (merge patch, autoscaling/v2)."""
        if min_replicas < 1 or max_replicas < min_replicas:
            raise KubeError(422, "Invalid", "Need 1 <= minReplicas <= maxReplicas.")
        spec: dict[str, Any] = {
            "minReplicas": int(min_replicas),
            "maxReplicas": int(max_replicas),
        }
        if cpu_target is not None:
            spec["metrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": int(cpu_target),
                        },
                    },
                }
            ]
        return self._call(
            self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
            name,
            namespace,
            {"spec": spec},
            _content_type=MERGE,
        )

    def resolve_kind(self, api_version: str, kind: str) -> Kind:
        """Return where KIND of API_VERSION is served (discovery for unknown kinds)."""
        known = _BY_KIND.get(kind.lower())
        if known is not None and known.api_version == api_version:
            return known
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        data = self.request("GET", path)
        for res in data.get("resources") or []:
            if res.get("kind") == kind and "/" not in res.get("name", ""):
                return Kind(
                    kind, group, version, res["name"], bool(res.get("namespaced"))
                )
        raise KubeError(
            404, "NotFound", f"The cluster does not serve {kind} in {api_version}."
        )

    def apply(
        self,
        obj: dict[str, Any],
        *,
        namespace: str | None = None,
        field_manager: str = "slipway",
        force: bool = False,
    ) -> dict:
        """Server-side apply one object; return what the server stored."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        meta = obj.get("metadata") or {}
        if not api_version or not kind or not meta.get("name"):
            raise KubeError(
                422,
                "Invalid",
                "Every document needs apiVersion, kind and metadata.name.",
            )
        k = self.resolve_kind(str(api_version), str(kind))
        ns = None
        if k.namespaced:
            ns = meta.get("namespace") or namespace or "default"
            if namespace and meta.get("namespace") not in (None, namespace):
                raise KubeError(
                    422,
                    "Invalid",
                    f"{kind} {meta['name']} names namespace {meta['namespace']!r}, "
                    f"not {namespace!r}.",
                )
            obj = {**obj, "metadata": {**meta, "namespace": ns}}
        query: list[tuple[str, Any]] = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return self.request(
            "PATCH",
            k.path(ns, meta["name"]),
            query=query,
            body=json.dumps(obj),
            content_type=APPLY,
        )

    def apply_yaml(
        self,
        text: str,
        field_manager: str = "slipway",
        force: bool = False,
        namespace: str | None = None,
    ) -> list[dict]:
        """Server-side apply every document of a YAML stream, in order."""
        try:
            docs = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as exc:
            raise KubeError(422, "Invalid", f"Invalid YAML: {exc}") from None
        if not docs or not all(isinstance(d, dict) for d in docs):
            raise KubeError(422, "Invalid", "Expected one or more YAML mappings.")
        return [
            self.apply(d, namespace=namespace, field_manager=field_manager, force=force)
            for d in docs
        ]


def parse_readyz(text: str) -> list[tuple[str, bool]]:
    """Parse ``/readyz?verbose`` lines like ``[+]etcd ok`` into (name, ok) pairs."""
    checks = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[+]") or line.startswith("[-]"):
            name = line[3:].split(" ", 1)[0]
            checks.append((name, line.startswith("[+]")))
    return checks


def _is_network_error(exc: BaseException) -> bool:
    import urllib3.exceptions

    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError, TimeoutError))
