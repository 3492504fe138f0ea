"""A fake Kubernetes API server over real HTTP(S) on loopback, for tests and benchmarks.

    with FakeKubeServer() as srv:
        srv.store.create({...})
        kubernetes.config.load_kube_config_from_dict(srv.kubeconfig())

See ``clusters/fakekube/README.md`` for the full behaviour list.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import os
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from . import managed
from .patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from .resources import (
    CORE_AGGREGATED,
    FIELD_SELECTORS,
    LIVEZ_VERBOSE,
    METRICS_GROUP,
    NAMED_AGGREGATED,
    READYZ_VERBOSE,
    REGISTRY,
    VERSION_INFO,
    VIRTUAL,
    ResourceType,
    default_object,
    label_selector_string,
    lookup,
    match_label_selector_obj,
    order_object,
)
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import (
    STALE,
    ApiError,
    Event,
    Store,
    compact_json,
    conflict,
    invalid,
    not_found,
    now_str,
    resolve,
)

AGGREGATED_MEDIA = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
)
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}
ADMIN_GROUPS = ("system:masters", "system:authenticated")
SELF_RULES = [
    {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    },
    {
        "verbs": ["create"],
        "apiGroups": ["authentication.k8s.io"],
        "resources": ["selfsubjectreviews"],
    },
]
PUBLIC_NON_RESOURCE = [
    {
        "verbs": ["get"],
        "nonResourceURLs": [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/openapi",
            "/openapi/*",
            "/readyz",
            "/version",
            "/version/",
        ],
    },
]
BOOKMARK_SHELLS: dict[str, dict] = {
    "Pod": {"spec": {"containers": None}, "status": {}},
    "Deployment": {
        "spec": {
            "replicas": 0,
            "selector": None,
            "template": {"metadata": {}, "spec": {"containers": None}},
            "strategy": {},
        },
        "status": {},
    },
    "ReplicaSet": {
        "spec": {
            "selector": None,
            "template": {"metadata": {}, "spec": {"containers": None}},
        },
        "status": {"replicas": 0},
    },
    "StatefulSet": {
        "spec": {
            "selector": None,
            "template": {"metadata": {}, "spec": {"containers": None}},
            "serviceName": "",
            "updateStrategy": {},
        },
        "status": {"replicas": 0, "availableReplicas": 0},
    },
    "DaemonSet": {
        "spec": {
            "selector": None,
            "template": {"metadata": {}, "spec": {"containers": None}},
            "updateStrategy": {},
        },
        "status": {
            "currentNumberScheduled": 0,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 0,
            "numberReady": 0,
        },
    },
    "Node": {
        "spec": {},
        "status": {
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "",
                "containerRuntimeVersion": "",
                "kubeletVersion": "",
                "kubeProxyVersion": "",
                "operatingSystem": "",
                "architecture": "",
            },
        },
    },
    "Namespace": {"spec": {}, "status": {}},
    "Service": {"spec": {}, "status": {"loadBalancer": {}}},
    "Event": {
        "involvedObject": {},
        "source": {},
        "firstTimestamp": None,
        "lastTimestamp": None,
        "eventTime": None,
        "reportingComponent": "",
        "reportingInstance": "",
    },
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    user: str | None = None
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    admin: bool = False
    rules: list[dict] = field(
        default_factory=list
    )  # [{verbs, apiGroups, resources, namespace}]


class _Watcher:
    __slots__ = (
        "key",
        "namespace",
        "match",
        "queue",
        "start_rv",
        "progress_rv",
        "closed",
    )

    def __init__(self, key, namespace, match, start_rv):
        self.key = key
        self.namespace = namespace
        self.match = match
        self.queue: asyncio.Queue = asyncio.Queue()
        self.start_rv = start_rv
        self.progress_rv = start_rv
        self.closed = False

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.match(obj)

    def offer(self, ev: Event) -> None:
        if ev.rv <= self.start_rv or self.closed:
            return
        self.progress_rv = max(self.progress_rv, ev.rv)
        if ev.key != self.key:
            return
        line = _transform(self, ev)
        if line is not None:
            self.queue.put_nowait(line)


def _transform(w: _Watcher, ev: Event) -> bytes | None:
    if ev.type == "ADDED":
        return ev.line() if w.matches(ev.obj) else None
    if ev.type == "DELETED":
        return ev.line() if w.matches(ev.obj) else None
    new_m = w.matches(ev.obj)
    old_m = w.matches(ev.old)
    if new_m and old_m:
        return ev.line()
    if new_m:
        return (compact_json({"type": "ADDED", "object": ev.obj}) + "\n").encode()
    if old_m:
        return (compact_json({"type": "DELETED", "object": ev.obj}) + "\n").encode()
    return None


def _status_success(code: int = 200, details: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    }
    if details is not None:
        body["details"] = details
    if code != 200:
        body["code"] = code
    return body


def _failing_readyz(failing: set[str]) -> str:
    """Return /readyz?verbose as kube-apiserver words it when FAILING checks fail."""
    lines = []
    for line in READYZ_VERBOSE.splitlines():
        name = line[3:].split(" ", 1)[0] if line.startswith("[+]") else None
        if name in failing:
            line = f"[-]{name} failed: reason withheld"
        elif line == "readyz check passed":
            line = "readyz check failed"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _json_response(
    body: Any, status: int = 200, content_type: str = "application/json"
):
    return web.Response(
        body=compact_json(body).encode(),
        status=status,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache, private",
            "Audit-Id": str(uuid.uuid4()),
        },
    )


def _error_response(err: ApiError) -> web.Response:
    return _json_response(err.status(), err.code)


def _text_404() -> web.Response:
    return web.Response(
        body=b"404 page not found\n",
        status=404,
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_continue(rv: int, start: str) -> str:
    tok = compact_json({"v": "meta.k8s.io/v1", "rv": rv, "start": start})
    # Go's encoding/json writes U+0000 as \u0000, like Python's json.
    tok = json.dumps(
        {"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")
    )
    return _b64url(tok.encode())


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError
        return int(data["rv"]), str(data["start"])
    except Exception as e:  # noqa: BLE001
        raise ApiError(
            400, f"continue key is not valid: {e or 'incorrect encoded start'}"
        ) from e


def _obj_key(obj: dict) -> str:
    ns = obj["metadata"].get("namespace")
    name = obj["metadata"]["name"]
    return f"/{ns}/{name}" if ns else f"/{name}"


def _strip_type(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _parse_duration_age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    secs = int((dt.datetime.now(dt.UTC) - t).total_seconds())
    secs = max(secs, 0)
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _manager_from_ua(ua: str | None) -> str:
    if not ua:
        return "unknown"
    return ua.split("/", 1)[0].split(" ", 1)[0] or "unknown"


class FakeKubeServer:
    """In-memory Kubernetes API server on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        token: str | None = "test-token",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        metrics: bool = False,
        seed: int | None = None,
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
    ):
        self.token = token
        self.host = host
        self.port = port
        self.tls = tls
        self.metrics_enabled = metrics
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.store = Store(seed=seed)
        self.requests: list[RecordedRequest] = []
        self.record_requests = True
        self.ca_pem: str | None = None
        self._cert_files: list[str] = []
        self._ssl_ctx: ssl.SSLContext | None = None
        self._tokens: dict[str, Identity] = {}
        if token is not None:
            self._tokens[token] = Identity("admin", ADMIN_GROUPS, admin=True)
        self._denials: list[tuple[str, str, str, str | None]] = []
        self._available = True
        self._unavailable_mode = "refuse"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None
        self._watchers: set[_Watcher] = set()
        self._streams: set[asyncio.Task] = set()
        self._pod_logs: dict[tuple[str, str, str], list[str]] = {}
        # /readyz checks to report as failing (names as listed, e.g. "informer-sync").
        self.readyz_failures: set[str] = set()
        self._log_waiters: set[asyncio.Event] = set()
        self.node_usage: dict[str, dict[str, str]] = {}
        self.pod_usage: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
        self.controllers = None
        self._listener = self._on_store_event
        self.store.add_listener(self._listener)
        self._kubeconfig_path: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> FakeKubeServer:
        if self._thread is not None:
            return self
        if self.tls:
            self._make_cert()
        ready = threading.Event()
        errors: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._startup())
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fakekube", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        if self.controllers is not None:
            self.controllers.stop()
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None
        for f in self._cert_files:
            try:
                os.unlink(f)
            except OSError:
                pass
        self._cert_files = []

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await self._start_site()

    async def _start_site(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            ssl_context=self._ssl_ctx,
            reuse_address=True,
        )
        await site.start()
        self._site = site
        if not self.port:
            server = site._server  # noqa: SLF001
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        await self._close_streams()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _close_streams(self) -> None:
        for w in list(self._watchers):
            w.closed = True
            w.queue.put_nowait(None)
        for t in list(self._streams):
            t.cancel()
        for ev in list(self._log_waiters):
            ev.set()
        await asyncio.sleep(0)

    def _call(self, coro_fn: Callable[[], Any], timeout: float = 10) -> Any:
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)
        return fut.result(timeout)

    def set_available(self, available: bool, mode: str = "refuse") -> None:
        """Simulate an outage. mode='refuse' closes the listening socket (connection
        refused) and drops open watches; mode='503' answers every request with 503."""
        if available == self._available:
            return
        self._available = available
        self._unavailable_mode = mode
        if self._loop is None or mode != "refuse":
            if not available and self._loop is not None:
                self._call(self._close_streams)
            return

        async def toggle():
            if not available:
                await self._close_streams()
                if self._site is not None:
                    await self._site.stop()
                    self._site = None
            else:
                await self._start_site()

        self._call(toggle)

    # ------------------------------------------------------------------ TLS
    def _make_cert(self) -> None:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakekube")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.ca_pem = cert_pem.decode()
        cf = tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False)
        cf.write(cert_pem)
        cf.close()
        kf = tempfile.NamedTemporaryFile("wb", suffix=".key", delete=False)
        kf.write(key_pem)
        kf.close()
        self._cert_files += [cf.name, kf.name]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cf.name, kf.name)
        self._ssl_ctx = ctx

    # ------------------------------------------------------------------ kubeconfig
    def kubeconfig(self, token: str | None = None, context: str = "fakekube") -> dict:
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls and self.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.ca_pem.encode()
            ).decode()
        user: dict[str, Any] = {}
        tok = token if token is not None else self.token
        if tok:
            user["token"] = tok
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": user}],
            "contexts": [
                {
                    "name": context,
                    "context": {
                        "cluster": context,
                        "user": context,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | os.PathLike, token: str | None = None
    ) -> str:
        with open(path, "w") as fh:
            yaml.safe_dump(self.kubeconfig(token), fh)
        return str(path)

    # ------------------------------------------------------------------ auth config
    def add_token(
        self, token: str, user: str, groups: tuple[str, ...] = (), admin: bool = False
    ) -> None:
        self._tokens[token] = Identity(
            user, tuple(groups) + ("system:authenticated",), admin
        )

    def allow(
        self,
        user: str,
        verbs,
        resources,
        namespace: str | None = None,
        api_groups=("*",),
    ) -> None:
        """Grant a non-admin identity some verbs on resources (optionally in a namespace)."""
        for ident in self._tokens.values():
            if ident.user == user:
                ident.rules.append(
                    {
                        "verbs": list(verbs),
                        "resources": list(resources),
                        "apiGroups": list(api_groups),
                        "namespace": namespace,
                    }
                )

    def add_rbac_denial(
        self, user_or_token: str, verb: str, resource: str, namespace: str | None = None
    ) -> None:
        """Deny ``verb`` on ``resource`` ('pods', 'pods/log', '*') even for admins."""
        ident = self._tokens.get(user_or_token)
        user = ident.user if ident else user_or_token
        self._denials.append((user, verb, resource, namespace))

    def service_account_token(self, namespace: str, name: str) -> str:
        """Mint a bearer token for a ServiceAccount identity (no permissions by default)."""
        header = _b64url(b'{"alg":"RS256","kid":"fakekube"}')
        payload = _b64url(
            compact_json(
                {
                    "sub": f"system:serviceaccount:{namespace}:{name}",
                    "iat": int(time.time()),
                    "jti": str(uuid.uuid4()),
                }
            ).encode()
        )
        tok = f"{header}.{payload}.{_b64url(os.urandom(32))}"
        self._tokens[tok] = Identity(
            f"system:serviceaccount:{namespace}:{name}",
            (
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ),
        )
        return tok

    def _authorized(
        self,
        ident: Identity,
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
    ) -> bool:
        for user, dverb, dres, dns in self._denials:
            if (
                user == ident.user
                and dverb in (verb, "*")
                and dres in (resource, "*")
                and (dns is None or dns == namespace)
            ):
                return False
        if ident.admin:
            return True
        if group == "authorization.k8s.io" and resource in (
            "selfsubjectaccessreviews",
            "selfsubjectrulesreviews",
        ):
            return True
        if group == "authentication.k8s.io" and resource == "selfsubjectreviews":
            return True
        for r in ident.rules:
            if (
                ("*" in r["verbs"] or verb in r["verbs"])
                and ("*" in r["resources"] or resource in r["resources"])
                and ("*" in r["apiGroups"] or group in r["apiGroups"])
                and (r["namespace"] is None or r["namespace"] == namespace)
            ):
                return True
        return False

    # ------------------------------------------------------------------ logs & metrics
    def set_pod_log(
        self, namespace: str, pod: str, text: str, container: str | None = None
    ):
        lines = text.splitlines(keepends=True)
        self._pod_logs[(namespace, pod, container or "")] = lines
        self._wake_logs()

    def append_pod_log(
        self, namespace: str, pod: str, line: str, container: str | None = None
    ):
        if not line.endswith("\n"):
            line += "\n"
        self._pod_logs.setdefault((namespace, pod, container or ""), []).append(line)
        self._wake_logs()

    def _wake_logs(self) -> None:
        if self._loop is None:
            return

        def wake():
            for ev in list(self._log_waiters):
                ev.set()

        self._loop.call_soon_threadsafe(wake)

    def set_node_usage(self, node: str, cpu: str, memory: str) -> None:
        self.node_usage[node] = {"cpu": cpu, "memory": memory}

    def set_pod_usage(
        self, namespace: str, pod: str, containers: dict[str, dict[str, str]]
    ):
        self.pod_usage[(namespace, pod)] = containers

    # ------------------------------------------------------------------ controllers
    def simulate_controllers(self, enabled: bool = True, **options) -> Any:
        from .controllers import Controllers

        if enabled:
            if self.controllers is None:
                self.controllers = Controllers(self.store, **options)
                self.controllers.start()
            else:
                self.controllers.configure(**options)
        elif self.controllers is not None:
            self.controllers.stop()
            self.controllers = None
        return self.controllers

    def populate(
        self,
        nodes: int = 3,
        pods: int = 10,
        namespaces: int = 2,
        deployments: int = 0,
        seed: int = 0,
    ) -> None:
        from .controllers import populate

        populate(
            self.store,
            nodes=nodes,
            pods=pods,
            namespaces=namespaces,
            deployments=deployments,
            seed=seed,
        )

    def churn(
        self,
        changes_per_second: float = 50,
        duration: float = 10.0,
        namespace: str | None = None,
    ) -> threading.Thread:
        from .controllers import churn

        return churn(self.store, changes_per_second, duration, namespace)

    def clear_requests(self) -> None:
        self.requests.clear()

    # ------------------------------------------------------------------ watch fan-out
    def _on_store_event(self, ev: Event) -> None:
        loop = self._loop
        if loop is None or not self._watchers:
            return
        try:
            loop.call_soon_threadsafe(self._fanout, ev)
        except RuntimeError:
            pass

    def _fanout(self, ev: Event) -> None:
        for w in list(self._watchers):
            w.offer(ev)

    # ------------------------------------------------------------------ HTTP entry
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        query = {k: v for k, v in request.query.items()}
        rec = RecordedRequest(
            request.method,
            request.path,
            query,
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        if self.record_requests:
            self.requests.append(rec)
        if not self._available:
            resp = _json_response(
                ApiError(
                    503,
                    "the server is currently unable to handle the request",
                    "ServiceUnavailable",
                    {},
                ).status(),
                503,
            )
            rec.status = 503
            return resp
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            resp = await self._dispatch(request, rec)
        except ApiError as e:
            resp = _error_response(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            resp = _error_response(ApiError(500, f"fakekube internal error: {e!r}"))
        finally:
            if task is not None:
                self._streams.discard(task)
        rec.status = resp.status
        return resp

    def _authenticate(self, request: web.Request) -> Identity | None:
        if self.token is None:
            return Identity("admin", ADMIN_GROUPS, admin=True)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return None
        if not auth.startswith("Bearer "):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        ident = self._tokens.get(auth[7:].strip())
        if ident is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return ident

    async def _dispatch(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        ident = self._authenticate(request)
        rec.user = ident.user if ident else "system:anonymous"
        accept = request.headers.get("Accept", "")
        q = rec.query
        if path in ("/version", "/healthz", "/livez", "/readyz"):
            if path == "/version":
                return _json_response(VERSION_INFO)
            if path == "/readyz" and self.readyz_failures:
                # A failing check: 500, and the whole list even without ?verbose.
                return web.Response(
                    status=500,
                    body=_failing_readyz(self.readyz_failures).encode(),
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
            if "verbose" in q:
                text = READYZ_VERBOSE if path == "/readyz" else LIVEZ_VERBOSE
                if path == "/healthz":
                    text = LIVEZ_VERBOSE.replace("livez", "healthz")
                return web.Response(
                    body=text.encode(),
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
            return web.Response(
                body=b"ok", headers={"Content-Type": "text/plain; charset=utf-8"}
            )
        if ident is None:
            ident = Identity("system:anonymous", ("system:unauthenticated",))
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            if not ident.admin:
                raise ApiError(
                    403,
                    f'forbidden: User "{ident.user}" cannot get path "{path}"',
                    "Forbidden",
                    {},
                )
            return _text_404()
        if parts[0] == "api":
            if len(parts) == 1:
                return self._discovery_api(accept)
            group, version, rest = "", parts[1], parts[2:]
            if version != "v1":
                return _text_404()
        else:
            if len(parts) == 1:
                return self._discovery_apis(accept)
            group = parts[1]
            if len(parts) == 2:
                return self._discovery_group(group)
            version, rest = parts[2], parts[3:]
        if group == "metrics.k8s.io" and self.metrics_enabled and version == "v1beta1":
            return self._metrics(rest, q, ident)
        if (group, version) not in {(g, v) for (g, v, _) in REGISTRY}:
            return _text_404()
        if not rest:
            return _json_response(self._resource_list(group, version))
        return await self._resource_request(request, rec, ident, group, version, rest)

    # ------------------------------------------------------------------ discovery
    def _groups(self) -> list[dict]:
        groups = list(NAMED_AGGREGATED)
        if self.metrics_enabled:
            groups = groups + [METRICS_GROUP]
        return groups

    def _discovery_api(self, accept: str) -> web.Response:
        if "as=APIGroupDiscoveryList" in accept:
            body = {
                "kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": [CORE_AGGREGATED],
            }
            return _json_response(body, content_type=AGGREGATED_MEDIA)
        return _json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {
                        "clientCIDR": "0.0.0.0/0",
                        "serverAddress": f"{self.host}:{self.port}",
                    }
                ],
            }
        )

    def _api_group(self, item: dict) -> dict:
        name = item["metadata"]["name"]
        versions = [
            {"groupVersion": f"{name}/{v['version']}", "version": v["version"]}
            for v in item["versions"]
        ]
        return {"name": name, "versions": versions, "preferredVersion": versions[0]}

    def _discovery_apis(self, accept: str) -> web.Response:
        if "as=APIGroupDiscoveryList" in accept:
            body = {
                "kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": self._groups(),
            }
            return _json_response(body, content_type=AGGREGATED_MEDIA)
        return _json_response(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._api_group(i) for i in self._groups()],
            }
        )

    def _discovery_group(self, group: str) -> web.Response:
        for item in self._groups():
            if item["metadata"]["name"] == group:
                body = {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(item)}
                return _json_response(body)
        return _text_404()

    def _resource_list(self, group: str, version: str) -> dict:
        item = (
            CORE_AGGREGATED
            if group == ""
            else next(i for i in self._groups() if i["metadata"]["name"] == group)
        )
        gv = f"{group}/{version}" if group else version
        resources = []
        for v in item["versions"]:
            if v["version"] != version:
                continue
            for r in v["resources"]:
                rt = lookup(group, version, r["resource"])
                entry: dict[str, Any] = {
                    "name": r["resource"],
                    "singularName": r.get("singularResource", ""),
                    "namespaced": r["scope"] == "Namespaced",
                    "kind": r["responseKind"]["kind"],
                    "verbs": r["verbs"],
                }
                if r.get("shortNames"):
                    entry["shortNames"] = r["shortNames"]
                if r.get("categories"):
                    entry["categories"] = r["categories"]
                if rt is not None and "list" in r["verbs"]:
                    entry["storageVersionHash"] = rt.storage_version_hash
                resources.append(entry)
                for s in r.get("subresources", []):
                    sub = {
                        "name": f"{r['resource']}/{s['subresource']}",
                        "singularName": "",
                        "namespaced": r["scope"] == "Namespaced",
                    }
                    rk = s["responseKind"]
                    if rk.get("group") or rk.get("version"):
                        sub["group"] = rk["group"]
                        sub["version"] = rk["version"]
                    sub["kind"] = rk["kind"]
                    sub["verbs"] = s["verbs"]
                    resources.append(sub)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    # ------------------------------------------------------------------ routing
    async def _resource_request(self, request, rec, ident, group, version, rest):
        method = request.method
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) if len(rest) > 2 else None
        rt = lookup(group, version, plural)
        if rt is None or (sub and sub not in rt.subresources) or len(rest) > 3:
            raise ApiError(
                404, "the server could not find the requested resource", "NotFound", {}
            )
        if rt.namespaced and namespace is None and name is not None:
            raise ApiError(
                404, "the server could not find the requested resource", "NotFound", {}
            )
        if not rt.namespaced and namespace is not None:
            raise ApiError(
                404, "the server could not find the requested resource", "NotFound", {}
            )
        q = rec.query
        is_watch = _truthy(q.get("watch"))
        if method == "GET":
            verb = "get" if name else ("watch" if is_watch else "list")
        else:
            verb = {
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection",
            }.get(method)
            if verb is None:
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    "MethodNotAllowed",
                    {},
                )
        res_name = f"{plural}/{sub}" if sub else plural
        if not self._authorized(ident, verb, group, res_name, namespace):
            raise self._forbidden(ident, verb, rt, res_name, name, namespace)
        if (
            not is_watch
            and "watch" in q
            and q["watch"] not in ("", "0", "false", "False")
        ):
            is_watch = True
        if plural in VIRTUAL:
            if method != "POST":
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    "MethodNotAllowed",
                    {},
                )
            return await self._virtual(rt, namespace, rec, ident)
        if sub:
            return await self._subresource(
                request, rec, ident, rt, namespace, name, sub
            )
        if method == "GET":
            if name:
                return self._get(rt, namespace, name, request.headers.get("Accept", ""))
            if is_watch:
                return await self._watch(request, rt, namespace, q)
            return self._list(rt, namespace, q, request.headers.get("Accept", ""))
        if method == "POST":
            if name:
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    "MethodNotAllowed",
                    {},
                )
            return self._create(request, rec, rt, namespace)
        if method == "PUT":
            return self._replace(request, rec, rt, namespace, name, None)
        if method == "PATCH":
            return self._patch(request, rec, rt, namespace, name, None)
        if method == "DELETE":
            if not name:
                return self._delete_collection(rt, namespace, q)
            return self._delete(rec, rt, namespace, name)
        raise ApiError(405, "method not allowed", "MethodNotAllowed", {})

    def _forbidden(self, ident, verb, rt, res_name, name, namespace) -> ApiError:
        what = f"{rt.qualified.replace(rt.plural, res_name, 1)}"
        if name:
            what += f' "{name}"'
        where = (
            f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        )
        msg = (
            f'{what} is forbidden: User "{ident.user}" cannot {verb} resource '
            f'"{res_name}" in API group "{rt.group}" {where}'
        )
        details: dict[str, Any] = {}
        if name:
            details["name"] = name
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        return ApiError(403, msg, "Forbidden", details)

    # ------------------------------------------------------------------ body parsing
    def _read_obj(self, rec: RecordedRequest) -> dict:
        ctype = (
            rec.headers.get("content-type", "application/json").split(";")[0].strip()
        )
        if "protobuf" in ctype or "cbor" in ctype:
            # JSON/YAML only: typed Go clients (kubectl auth can-i ...) that send protobuf
            # bodies get the answer a server without that serializer would give.
            raise ApiError(
                415, "415: Unsupported Media Type", "UnsupportedMediaType", {}
            )
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                obj = yaml.safe_load(rec.body.decode() or "{}")
            else:
                obj = json.loads(rec.body or b"{}")
        except Exception as e:  # noqa: BLE001
            raise ApiError(
                400, f"couldn't get version/kind; json parse error: {e}"
            ) from e
        if not isinstance(obj, dict):
            raise ApiError(
                400,
                "couldn't get version/kind; json parse error: json: cannot unmarshal "
                f"{type(obj).__name__} into Go value of type struct "
                '{ APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string '
                '"json:\\"kind,omitempty\\"" }',
            )
        return obj

    def _manager(self, rec: RecordedRequest) -> str:
        return rec.query.get("fieldManager") or _manager_from_ua(
            rec.headers.get("user-agent")
        )

    def _ensure_namespace(self, namespace: str | None) -> None:
        if (
            namespace
            and self.store.get_raw(resolve("namespaces"), "", namespace) is None
        ):
            raise ApiError(
                404,
                f'namespaces "{namespace}" not found',
                "NotFound",
                {"name": namespace, "kind": "namespaces"},
            )

    # ------------------------------------------------------------------ verbs
    def _get(self, rt, namespace, name, accept):
        with self.store.lock:
            obj = self.store.get_raw(rt, namespace or "", name)
            if obj is None:
                raise not_found(rt, name)
            if "as=Table" in accept:
                return _json_response(
                    self._table(rt, [obj], self.store.resource_version)
                )
            return _json_response(obj)

    def _list(self, rt: ResourceType, namespace, q, accept):
        try:
            lmatch = parse_label_selector(q.get("labelSelector"))
        except SelectorError as e:
            raise ApiError(400, str(e)) from e
        try:
            fmatch = parse_field_selector(
                q.get("fieldSelector"), FIELD_SELECTORS.get(rt.plural, set())
            )
        except SelectorError as e:
            raise ApiError(400, str(e)) from e
        limit = int(q.get("limit") or 0)
        cont = q.get("continue")
        rv, rvm = q.get("resourceVersion"), q.get("resourceVersionMatch")
        store = self.store
        with store.lock:
            cur = store.resource_version
            start = None
            if cont:
                crv, start = decode_continue(cont)
                if not start.startswith("/"):
                    start = "/" + start
                if 0 < crv < store.compacted_revision:
                    raise ApiError(
                        410,
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter, "
                        "or use the continue token in this response to retrieve the remainder "
                        "of the results. Continuing with the provided token results in an "
                        "inconsistent list - objects that were created, modified, or deleted "
                        "between the time the first chunk was returned and now may show up in "
                        "the list.",
                        "Expired",
                        metadata={"continue": encode_continue(-1, start.lstrip("/"))},
                    )
                list_rv = crv if crv > 0 else cur
            elif rvm == "Exact" and rv:
                x = int(rv)
                if x < store.compacted_revision:
                    raise ApiError(
                        410,
                        "The resourceVersion for the provided list is too old.",
                        "Expired",
                    )
                list_rv = min(x, cur)
            else:
                list_rv = cur
            if list_rv == cur:
                objs = store.list_raw(rt, namespace)
            else:
                objs = [
                    o
                    for o in store.snapshot_at(rt, list_rv)
                    if not namespace or o["metadata"].get("namespace") == namespace
                ]
            keyed = sorted(((_obj_key(o), o) for o in objs), key=lambda t: t[0])
            if start is not None:
                keyed = [(k, o) for k, o in keyed if k >= start]
            selected = [
                (k, o)
                for k, o in keyed
                if lmatch(o["metadata"].get("labels") or {}) and fmatch(o)
            ]
            meta: dict[str, Any] = {
                "resourceVersion": str(list_rv if cont or rvm == "Exact" else cur)
            }
            if limit and len(selected) > limit:
                page = selected[:limit]
                meta["continue"] = encode_continue(list_rv, page[-1][0] + "\x00")
                if not q.get("labelSelector") and not q.get("fieldSelector"):
                    meta["remainingItemCount"] = len(selected) - limit
            else:
                page = selected
            items = [o for _, o in page]
            if "as=Table" in accept:
                table = self._table(rt, items, list_rv)
                table["metadata"] = meta
                return _json_response(table)
            parts = [store.item_json(o) for o in items]
        head = compact_json(
            {"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": meta}
        )
        body = head[:-1] + ',"items":[' + ",".join(parts) + "]}"
        return web.Response(
            body=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Cache-Control": "no-cache, private",
            },
        )

    def _create(self, request, rec, rt, namespace):
        obj = self._read_obj(rec)
        if rt.namespaced:
            bns = (obj.get("metadata") or {}).get("namespace")
            if bns and namespace and bns != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            self._ensure_namespace(namespace)
        dry = rec.query.get("dryRun") == "All"
        if rt.kind == "Pod" and (obj.get("spec") or {}).get("nodeName"):
            pass
        created = self.store.create(
            obj, namespace=namespace, manager=self._manager(rec), rt=rt, dry_run=dry
        )
        return _json_response(created, 201)

    def _replace(self, request, rec, rt, namespace, name, sub):
        obj = self._read_obj(rec)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise ApiError(
                400,
                f"the name of the object ({meta['name']}) does not match the name "
                f"on the URL ({name})",
            )
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        if not meta.get("resourceVersion") and rt.kind in ("Deployment",):
            pass
        new = self.store.replace(
            obj,
            subresource=sub,
            manager=self._manager(rec),
            rt=rt,
            dry_run=rec.query.get("dryRun") == "All",
        )
        return _json_response(new)

    def _decode_patch(self, rec: RecordedRequest) -> tuple[str, Any]:
        ctype = rec.headers.get("content-type", "").split(";")[0].strip()
        ptype = PATCH_TYPES.get(ctype)
        if ptype is None or ptype == "apply-cbor":
            raise ApiError(
                415, "415: Unsupported Media Type", "UnsupportedMediaType", {}
            )
        text = rec.body.decode("utf-8", "replace")
        if ptype == "apply":
            if not rec.query.get("fieldManager"):
                raise ApiError(
                    422,
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                    "is required for apply patch",
                    "Invalid",
                    {
                        "group": "meta.k8s.io",
                        "kind": "PatchOptions",
                        "causes": [
                            {
                                "reason": "FieldValueRequired",
                                "message": "Required value: is required for apply patch",
                                "field": "fieldManager",
                            }
                        ],
                    },
                )
            try:
                body = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ApiError(400, f"error converting YAML to JSON: {e}") from e
            if not isinstance(body, dict):
                raise ApiError(
                    400,
                    "error decoding YAML: json: cannot unmarshal "
                    f"{_go_kind(body)} into Go value of type map[string]interface {{}}",
                )
            return ptype, body
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError as e:
            raise ApiError(400, f"invalid character in patch body: {e}") from e
        if ptype == "json":
            if not isinstance(body, list):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {_go_kind(body)} into Go value of "
                    "type jsonpatch.Patch",
                )
        elif not isinstance(body, dict):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_go_kind(body)} into Go value of type "
                "map[string]interface {}",
            )
        return ptype, body

    def _apply_patch(self, ptype: str, doc: dict, body: Any) -> dict:
        try:
            if ptype == "json":
                new = json_patch(doc, body)
            elif ptype == "merge":
                new = json_merge_patch(doc, body)
            else:
                new = strategic_merge_patch(doc, body)
        except PatchError as e:
            raise ApiError(
                422,
                "the server rejected our request due to an error in our request",
                "Invalid",
                {},
            ) from e
        if not isinstance(new, dict):
            raise ApiError(
                422,
                "the server rejected our request due to an error in our request",
                "Invalid",
                {},
            )
        return new

    def _patch(self, request, rec, rt, namespace, name, sub):
        ptype, body = self._decode_patch(rec)
        manager = self._manager(rec)
        force = _truthy(rec.query.get("force"))
        dry = rec.query.get("dryRun") == "All"
        store = self.store
        with store.lock:
            cur = store.get_raw(rt, namespace or "", name)
            if ptype == "apply":
                return self._server_side_apply(
                    rt, namespace, name, sub, cur, body, manager, force, dry
                )
            if cur is None:
                raise not_found(rt, name)
            new = self._apply_patch(ptype, copy.deepcopy(cur), body)
            nrv = (new.get("metadata") or {}).get("resourceVersion")
            if nrv and nrv != cur["metadata"]["resourceVersion"]:
                raise conflict(rt, name, STALE)
            new.setdefault("metadata", {})
            for k in ("name", "namespace", "uid"):
                if k in cur["metadata"]:
                    new["metadata"][k] = cur["metadata"][k]
            new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            out = store.replace(
                new, subresource=sub, manager=manager, rt=rt, dry_run=dry
            )
        return _json_response(out)

    def _server_side_apply(
        self, rt, namespace, name, sub, cur, body, manager, force, dry
    ):
        store = self.store
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise ApiError(
                400,
                f"the name of the object ({meta['name']}) does not match the name "
                f"on the URL ({name})",
            )
        if body.get("kind") and body["kind"] != rt.kind and sub != "scale":
            raise ApiError(
                400,
                f"the kind of the applied object ({body['kind']}) does not match "
                f"the resource ({rt.kind})",
            )
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        now = now_str()
        if cur is None:
            if sub:
                raise not_found(rt, name)
            self._ensure_namespace(namespace if rt.namespaced else None)
            obj = managed.server_side_apply(
                None, body, manager, rt.api_version, now, force
            )
            mf = obj["metadata"].pop("managedFields")
            created = store.create(
                obj,
                namespace=namespace,
                rt=rt,
                record=False,
                dry_run=dry,
                managed_fields=mf,
            )
            created = order_object(created)
            return _json_response(created, 201)
        try:
            new = managed.server_side_apply(
                cur, body, manager, rt.api_version, now, force, sub
            )
        except managed.ApplyConflict as e:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f"conflict with {m}",
                    "field": managed.path_string(p),
                }
                for p, m in e.conflicts
            ]
            raise ApiError(409, str(e), "Conflict", {"causes": causes}) from e
        for k in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            if k in cur["metadata"]:
                new["metadata"][k] = cur["metadata"][k]
        default_object(rt, new, store.rng)
        if rt.has_status and sub is None:
            if "status" in cur:
                new["status"] = copy.deepcopy(cur["status"])
        out = store.replace(
            new,
            subresource=sub,
            manager=manager,
            rt=rt,
            operation="Apply",
            prepared=True,
            dry_run=dry,
        )
        return _json_response(out)

    def _delete(self, rec, rt, namespace, name):
        opts: dict = {}
        if rec.body:
            try:
                opts = json.loads(rec.body) or {}
            except ValueError as e:
                raise ApiError(400, f"invalid DeleteOptions: {e}") from e
        q = rec.query
        grace = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
        policy = q.get("propagationPolicy", opts.get("propagationPolicy"))
        if opts.get("orphanDependents") is True:
            policy = "Orphan"
        dry = q.get("dryRun") == "All" or opts.get("dryRun") == ["All"]
        obj, gone = self.store.delete(
            rt,
            namespace,
            name,
            grace_period_seconds=int(grace) if grace is not None else None,
            propagation_policy=policy,
            preconditions=opts.get("preconditions"),
            dry_run=dry,
        )
        if gone and rt.kind not in ("Pod", "Namespace"):
            details: dict[str, Any] = {"name": name}
            if rt.group:
                details["group"] = rt.group
            details["kind"] = rt.plural
            details["uid"] = obj["metadata"]["uid"]
            return _json_response(_status_success(200, details))
        return _json_response(obj)

    def _delete_collection(self, rt, namespace, q):
        lmatch = parse_label_selector(q.get("labelSelector"))
        fmatch = parse_field_selector(
            q.get("fieldSelector"), FIELD_SELECTORS.get(rt.plural, set())
        )
        with self.store.lock:
            victims = [
                o
                for o in self.store.list_raw(rt, namespace)
                if lmatch(o["metadata"].get("labels") or {}) and fmatch(o)
            ]
            deleted = []
            for o in sorted(victims, key=_obj_key):
                obj, _ = self.store.delete(
                    rt, o["metadata"].get("namespace"), o["metadata"]["name"]
                )
                deleted.append(_strip_type(obj))
            meta = {"resourceVersion": str(self.store.resource_version)}
        return _json_response(
            {
                "kind": rt.kind + "List",
                "apiVersion": rt.api_version,
                "metadata": meta,
                "items": deleted,
            }
        )

    # ------------------------------------------------------------------ watch
    async def _watch(self, request: web.Request, rt: ResourceType, namespace, q):
        try:
            lmatch = parse_label_selector(q.get("labelSelector"))
            fmatch = parse_field_selector(
                q.get("fieldSelector"), FIELD_SELECTORS.get(rt.plural, set())
            )
        except SelectorError as e:
            raise ApiError(400, str(e)) from e

        def match(obj):
            return lmatch(obj["metadata"].get("labels") or {}) and fmatch(obj)

        rv = q.get("resourceVersion")
        send_initial = _truthy(q.get("sendInitialEvents"))
        allow_bm = _truthy(q.get("allowWatchBookmarks"))
        if send_initial and (
            not allow_bm or q.get("resourceVersionMatch") != "NotOlderThan"
        ):
            raise ApiError(
                422,
                'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
                "sendInitialEvents is forbidden for watch unless the WatchList feature gate is "
                "enabled, allowWatchBookmarks is true and resourceVersionMatch=NotOlderThan",
                "Invalid",
                {"group": "meta.k8s.io", "kind": "ListOptions"},
            )
        timeout = float(q.get("timeoutSeconds") or self.default_watch_timeout)
        store = self.store
        initial: list[dict] = []
        backlog: list[bytes] = []
        expired = None
        with store.lock:
            cur = store.resource_version
            w = _Watcher(rt.key, namespace, match, cur)
            if not rv or rv == "0" or send_initial:
                initial = sorted(
                    (o for o in store.list_raw(rt, namespace) if w.matches(o)),
                    key=_obj_key,
                )
            else:
                try:
                    x = int(rv)
                except ValueError as e:
                    raise ApiError(400, f'invalid resource version: "{rv}"') from e
                if x < store.compacted_revision:
                    expired = (x, store.compacted_revision)
                else:
                    for ev in store.history_since(x):
                        if ev.key == rt.key:
                            line = _transform(w, ev)
                            if line is not None:
                                backlog.append(line)
            if expired is None:
                self._watchers.add(w)
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "application/json",
                "Cache-Control": "no-cache, private",
                "Audit-Id": str(uuid.uuid4()),
            },
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if expired is not None:
            err = ApiError(
                410, f"too old resource version: {expired[0]} ({expired[1]})", "Expired"
            )
            await resp.write(
                (
                    compact_json({"type": "ERROR", "object": err.status()}) + "\n"
                ).encode()
            )
            await resp.write_eof()
            return resp

        def bookmark(initial_end: bool = False) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(w.progress_rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {
                "kind": rt.kind,
                "apiVersion": rt.api_version,
                "metadata": meta,
                **copy.deepcopy(BOOKMARK_SHELLS.get(rt.kind, {})),
            }
            return (compact_json({"type": "BOOKMARK", "object": obj}) + "\n").encode()

        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        # kube-apiserver's cacher schedules a bookmark at deadline-2s (delivered by a 1 s
        # bucket timer); when that falls within ~1.5 s of the start it is not sent (fixture 50).
        final_bm_at = deadline - 2.0
        if final_bm_at < started + 1.5:
            final_bm_at = deadline + 1
        next_bm = started + self.bookmark_interval
        try:
            chunk = b"".join(
                (compact_json({"type": "ADDED", "object": o}) + "\n").encode()
                for o in initial
            )
            if send_initial:
                chunk += bookmark(initial_end=True)
            chunk += b"".join(backlog)
            if chunk:
                await resp.write(chunk)
            final_sent = False
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wake = deadline
                if allow_bm:
                    wake = min(
                        wake, next_bm, final_bm_at if not final_sent else deadline
                    )
                try:
                    line = await asyncio.wait_for(w.queue.get(), max(0.0, wake - now))
                except TimeoutError:
                    line = b""
                if line is None:
                    break  # server closing / outage
                out = [line] if line else []
                while not w.queue.empty():
                    nxt = w.queue.get_nowait()
                    if nxt is None:
                        w.closed = True
                        break
                    out.append(nxt)
                now = loop.time()
                if allow_bm and w.queue.empty():
                    if not final_sent and now >= final_bm_at:
                        out.append(bookmark())
                        final_sent = True
                        next_bm = deadline + 1
                    elif now >= next_bm:
                        out.append(bookmark())
                        next_bm = now + self.bookmark_interval
                if out:
                    await resp.write(b"".join(out))
                if w.closed:
                    break
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            w.closed = True
            self._watchers.discard(w)
        return resp

    # ------------------------------------------------------------------ tables
    def _table(self, rt: ResourceType, objs: list[dict], rv: int) -> dict:
        def partial(o):
            return {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }

        if rt.kind == "Pod":
            cols = [
                (
                    "Name",
                    "string",
                    "name",
                    "Name must be unique within a namespace.",
                    0,
                ),
                (
                    "Ready",
                    "string",
                    "",
                    "The aggregate readiness state of this pod for accepting traffic.",
                    0,
                ),
                (
                    "Status",
                    "string",
                    "",
                    "The aggregate status of the containers in this pod.",
                    0,
                ),
                (
                    "Restarts",
                    "string",
                    "",
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                    0,
                ),
                (
                    "Age",
                    "string",
                    "",
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                    0,
                ),
                ("IP", "string", "", "podIP address allocated to the pod.", 1),
                (
                    "Node",
                    "string",
                    "",
                    "NodeName indicates in which node this pod is scheduled.",
                    1,
                ),
                (
                    "Nominated Node",
                    "string",
                    "",
                    "nominatedNodeName is set only when this pod preempts other pods on the node.",
                    1,
                ),
                (
                    "Readiness Gates",
                    "string",
                    "",
                    "If specified, all readiness gates will be evaluated for pod readiness.",
                    1,
                ),
            ]
            rows = []
            for o in objs:
                st = o.get("status") or {}
                cs = st.get("containerStatuses") or []
                total = len((o.get("spec") or {}).get("containers") or [])
                ready = sum(1 for c in cs if c.get("ready"))
                reason = st.get("reason") or st.get("phase", "")
                for c in cs:
                    waiting = (c.get("state") or {}).get("waiting")
                    if waiting and waiting.get("reason"):
                        reason = waiting["reason"]
                if o["metadata"].get("deletionTimestamp"):
                    reason = "Terminating"
                restarts = sum(int(c.get("restartCount", 0)) for c in cs)
                rows.append(
                    {
                        "cells": [
                            o["metadata"]["name"],
                            f"{ready}/{total}",
                            reason,
                            str(restarts),
                            _parse_duration_age(o["metadata"].get("creationTimestamp")),
                            st.get("podIP", "<none>"),
                            (o.get("spec") or {}).get("nodeName", "<none>"),
                            st.get("nominatedNodeName", "<none>"),
                            "<none>",
                        ],
                        "object": partial(o),
                    }
                )
        else:
            cols = [
                (
                    "Name",
                    "string",
                    "name",
                    "Name must be unique within a namespace.",
                    0,
                ),
                (
                    "Created At",
                    "date",
                    "",
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                    0,
                ),
            ]
            rows = [
                {
                    "cells": [
                        o["metadata"]["name"],
                        o["metadata"].get("creationTimestamp"),
                    ],
                    "object": partial(o),
                }
                for o in objs
            ]
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": [
                {"name": n, "type": t, "format": f, "description": d, "priority": p}
                for n, t, f, d, p in cols
            ],
            "rows": rows,
        }

    # ------------------------------------------------------------------ subresources
    async def _subresource(self, request, rec, ident, rt, namespace, name, sub):
        method = request.method
        store = self.store
        if sub == "status":
            if method == "GET":
                return self._get(rt, namespace, name, "")
            if method == "PUT":
                return self._replace(request, rec, rt, namespace, name, "status")
            if method == "PATCH":
                return self._patch(request, rec, rt, namespace, name, "status")
        elif sub == "scale":
            return self._scale(request, rec, rt, namespace, name)
        elif sub == "log" and method == "GET":
            return await self._log(request, rec, rt, namespace, name)
        elif sub == "eviction" and method == "POST":
            return self._evict(rec, rt, namespace, name)
        elif sub == "binding" and method == "POST":
            body = self._read_obj(rec)
            return self._bind(namespace, name, (body.get("target") or {}).get("name"))
        elif sub == "token" and method == "POST":
            return self._token_request(rec, rt, namespace, name)
        elif method == "GET":
            with store.lock:
                obj = store.get_raw(rt, namespace or "", name)
                if obj is None:
                    raise not_found(rt, name)
                return _json_response(obj)
        raise ApiError(
            405,
            "the server does not allow this method on the requested resource",
            "MethodNotAllowed",
            {},
        )

    def _scale_of(self, rt, obj) -> dict:
        m = obj["metadata"]
        meta = {
            k: m[k]
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "creationTimestamp",
            )
            if k in m
        }
        st = obj.get("status") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": meta,
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {
                "replicas": st.get("replicas", 0),
                "selector": label_selector_string(
                    (obj.get("spec") or {}).get("selector")
                ),
            },
        }

    def _scale(self, request, rec, rt, namespace, name):
        store = self.store
        method = request.method
        with store.lock:
            cur = store.get_raw(rt, namespace or "", name)
            if cur is None:
                raise not_found(rt, name)
            scale = self._scale_of(rt, cur)
            if method == "GET":
                return _json_response(scale)
            if method == "PUT":
                new_scale = self._read_obj(rec)
            elif method == "PATCH":
                ptype, body = self._decode_patch(rec)
                if ptype == "apply":
                    new_scale = json_merge_patch(
                        scale, {"spec": body.get("spec") or {}}
                    )
                else:
                    new_scale = self._apply_patch(ptype, scale, body)
            else:
                raise ApiError(405, "method not allowed", "MethodNotAllowed", {})
            srv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if srv and srv != cur["metadata"]["resourceVersion"]:
                raise conflict(rt, name, STALE)
            reps = (new_scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(reps, int) or reps < 0:
                raise ApiError(
                    422,
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                    f"{reps}: must be greater than or equal to 0",
                    "Invalid",
                    {
                        "name": name,
                        "group": "autoscaling",
                        "kind": "Scale",
                        "causes": [
                            {
                                "reason": "FieldValueInvalid",
                                "message": f"Invalid value: {reps}: must be greater than or equal to 0",
                                "field": "spec.replicas",
                            }
                        ],
                    },
                )
            new = copy.deepcopy(cur)
            new["spec"]["replicas"] = reps
            out = store.replace(
                new,
                subresource="scale",
                manager=self._manager(rec),
                rt=rt,
                check_rv=False,
                prepared=True,
            )
            return _json_response(self._scale_of(rt, out))

    def _evict(self, rec, rt, namespace, name):
        store = self.store
        body = self._read_obj(rec) if rec.body else {}
        with store.lock:
            pod = store.get_raw(rt, namespace, name)
            if pod is None:
                raise not_found(rt, name)
            pdb_rt = resolve(("policy", "poddisruptionbudgets"))
            labels = pod["metadata"].get("labels") or {}
            pdbs = [
                p
                for p in store.list_raw(pdb_rt, namespace)
                if match_label_selector_obj(
                    (p.get("spec") or {}).get("selector"), labels
                )
            ]
            if len(pdbs) > 1:
                raise ApiError(
                    500,
                    "This pod has more than one PodDisruptionBudget, which the "
                    "eviction subresource does not support.",
                    "InternalError",
                )
            phase = (pod.get("status") or {}).get("phase")
            if (
                pdbs
                and phase not in ("Succeeded", "Failed", "Pending")
                and not pod["metadata"].get("deletionTimestamp")
            ):
                pdb = pdbs[0]
                healthy, expected, desired = self._pdb_numbers(pdb, namespace)
                if _pod_ready(pod) and healthy - desired <= 0:
                    raise ApiError(
                        429,
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        "TooManyRequests",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb['metadata']['name']} "
                                    f"needs {desired} healthy pods and has {healthy} "
                                    "currently",
                                }
                            ]
                        },
                    )
            opts = body.get("deleteOptions") or {}
            store.delete(
                rt,
                namespace,
                name,
                grace_period_seconds=opts.get("gracePeriodSeconds"),
                preconditions=opts.get("preconditions"),
            )
        return _json_response(_status_success(201), 201)

    def _pdb_numbers(self, pdb: dict, namespace: str) -> tuple[int, int, int]:
        pods = [
            p
            for p in self.store.list_raw(resolve("pods"), namespace)
            if match_label_selector_obj(
                (pdb.get("spec") or {}).get("selector"),
                p["metadata"].get("labels") or {},
            )
            and not p["metadata"].get("deletionTimestamp")
        ]
        expected = len(pods)
        healthy = sum(1 for p in pods if _pod_ready(p))
        spec = pdb.get("spec") or {}

        def resolve_n(v):
            if isinstance(v, str) and v.endswith("%"):
                import math

                return math.ceil(expected * int(v[:-1]) / 100)
            return int(v)

        if "minAvailable" in spec:
            desired = resolve_n(spec["minAvailable"])
        elif "maxUnavailable" in spec:
            desired = max(0, expected - resolve_n(spec["maxUnavailable"]))
        else:
            desired = expected
        return healthy, expected, desired

    def _bind(self, namespace, name, node):
        from .controllers import bind_pod

        bind_pod(self.store, namespace, name, node)
        return _json_response(_status_success(201), 201)

    def _token_request(self, rec, rt, namespace, name):
        with self.store.lock:
            sa = self.store.get_raw(rt, namespace, name)
            if sa is None:
                raise not_found(rt, name)
        body = self._read_obj(rec)
        spec = body.get("spec") or {}
        exp = int(spec.get("expirationSeconds") or 3600)
        now = now_str()
        token = self.service_account_token(namespace, name)
        out = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": sa["metadata"]["uid"],
                "creationTimestamp": now,
                "managedFields": [
                    {
                        "manager": self._manager(rec),
                        "operation": "Update",
                        "apiVersion": "authentication.k8s.io/v1",
                        "time": now,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:spec": {"f:audiences": {}, "f:expirationSeconds": {}}
                        },
                        "subresource": "token",
                    }
                ],
            },
            "spec": {
                "audiences": spec.get("audiences")
                or ["https://kubernetes.default.svc.cluster.local"],
                "expirationSeconds": exp,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": token, "expirationTimestamp": now_str(exp)},
        }
        return _json_response(out, 201)

    async def _log(self, request, rec, rt, namespace, name):
        q = rec.query
        with self.store.lock:
            pod = self.store.get_raw(rt, namespace, name)
            if pod is None:
                raise not_found(rt, name)
            containers = [
                c["name"] for c in (pod.get("spec") or {}).get("containers") or []
            ]
        container = q.get("container")
        if not container:
            if len(containers) != 1:
                raise ApiError(
                    400,
                    f"a container name must be specified for pod {name}, choose "
                    f"one of: [{' '.join(containers)}]",
                )
            container = containers[0]
        elif container not in containers:
            raise ApiError(400, f"container {container} is not valid for pod {name}")
        key = (namespace, name, container)
        alt = (namespace, name, "")
        if key not in self._pod_logs and alt in self._pod_logs:
            key = alt
        phase = (pod.get("status") or {}).get("phase")
        if key not in self._pod_logs and phase == "Pending":
            raise ApiError(
                400,
                f'container "{container}" in pod "{name}" is waiting to start: '
                "ContainerCreating",
            )
        lines = list(self._pod_logs.get(key, []))
        tail = q.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        ts = _truthy(q.get("timestamps"))

        def fmt(line: str) -> bytes:
            if ts:
                line = (
                    dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z ") + line
                )
            return line.encode()

        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        if not _truthy(q.get("follow")):
            data = b"".join(fmt(line) for line in lines)
            if limit is not None:
                data = data[:limit]
            return web.Response(body=data, headers={"Content-Type": "text/plain"})
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = len(self._pod_logs.get(key, []))
        if lines:
            await resp.write(b"".join(fmt(line) for line in lines))
        waiter = asyncio.Event()
        self._log_waiters.add(waiter)
        try:
            while True:
                try:
                    await asyncio.wait_for(waiter.wait(), 0.5)
                except TimeoutError:
                    pass
                waiter.clear()
                if not self._available or self._loop is None:
                    break
                cur = self._pod_logs.get(key, [])
                if len(cur) > sent:
                    await resp.write(b"".join(fmt(line) for line in cur[sent:]))
                    sent = len(cur)
                with self.store.lock:
                    p = self.store.get_raw(rt, namespace, name)
                if (
                    p is None
                    or p["metadata"].get("uid") != pod["metadata"].get("uid")
                    or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                ):
                    break
            await resp.write_eof()
        finally:
            self._log_waiters.discard(waiter)
        return resp

    # ------------------------------------------------------------------ virtual resources
    async def _virtual(self, rt, namespace, rec, ident):
        body = self._read_obj(rec)
        spec = body.get("spec") or {}
        base = {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {"creationTimestamp": None},
        }
        if rt.plural == "selfsubjectrulesreviews":
            ns = spec.get("namespace", "")
            if ident.admin and not any(d[0] == ident.user for d in self._denials):
                rules = [
                    {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
                ] + SELF_RULES
                nonres = [
                    {"verbs": ["*"], "nonResourceURLs": ["*"]}
                ] + PUBLIC_NON_RESOURCE
            else:
                rules = list(SELF_RULES)
                if ident.admin:
                    rules.insert(
                        0, {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
                    )
                for r in ident.rules:
                    if r["namespace"] in (None, ns):
                        rules.append(
                            {
                                "verbs": r["verbs"],
                                "apiGroups": r["apiGroups"],
                                "resources": r["resources"],
                            }
                        )
                nonres = list(PUBLIC_NON_RESOURCE)
            return _json_response(
                {
                    **base,
                    "spec": spec,
                    "status": {
                        "resourceRules": rules,
                        "nonResourceRules": nonres,
                        "incomplete": False,
                    },
                },
                201,
            )
        if rt.plural == "selfsubjectaccessreviews":
            ra = spec.get("resourceAttributes") or {}
            res = ra.get("resource", "")
            if ra.get("subresource"):
                res += "/" + ra["subresource"]
            allowed = self._authorized(
                ident,
                ra.get("verb", ""),
                ra.get("group", ""),
                res,
                ra.get("namespace") or None,
            )
            status: dict[str, Any] = {"allowed": allowed}
            if allowed and ident.admin:
                status["reason"] = ""
            return _json_response({**base, "spec": spec, "status": status}, 201)
        if rt.plural == "selfsubjectreviews":
            return _json_response(
                {
                    **base,
                    "status": {
                        "userInfo": {
                            "username": ident.user,
                            "groups": list(ident.groups),
                        }
                    },
                },
                201,
            )
        if rt.plural == "tokenreviews":
            tok = spec.get("token", "")
            who = self._tokens.get(tok)
            status = {"authenticated": who is not None}
            if who:
                status["user"] = {"username": who.user, "groups": list(who.groups)}
            return _json_response({**base, "spec": spec, "status": status}, 201)
        if rt.plural == "bindings":
            meta = body.get("metadata") or {}
            return self._bind(
                namespace, meta.get("name"), (body.get("target") or {}).get("name")
            )
        raise ApiError(
            404, "the server could not find the requested resource", "NotFound", {}
        )

    # ------------------------------------------------------------------ metrics
    def _metrics(self, rest, q, ident: Identity):
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        # The aggregated API is authorised like any other: get/list on nodes or pods
        # in group metrics.k8s.io (a namespace-only Role cannot read node metrics).
        verb = "get" if name else "list"
        if plural in ("nodes", "pods") and not self._authorized(
            ident, verb, "metrics.k8s.io", plural, namespace
        ):
            what = (
                f'{plural}.metrics.k8s.io "{name}"'
                if name
                else f"{plural}.metrics.k8s.io"
            )
            where = (
                f'in the namespace "{namespace}"'
                if namespace
                else "at the cluster scope"
            )
            raise ApiError(
                403,
                f'{what} is forbidden: User "{ident.user}" cannot {verb} resource '
                f'"{plural}" in API group "metrics.k8s.io" {where}',
                "Forbidden",
                {"group": "metrics.k8s.io", "kind": plural},
            )
        ts = now_str()
        if plural == "nodes":
            items = [
                {
                    "metadata": {
                        "name": n,
                        "creationTimestamp": ts,
                        "labels": self.store.get("nodes", n)["metadata"].get(
                            "labels", {}
                        )
                        if self.store.get("nodes", n)
                        else {},
                    },
                    "timestamp": ts,
                    "window": "20.05s",
                    "usage": u,
                }
                for n, u in sorted(self.node_usage.items())
                if name in (None, n)
            ]
            kind = "NodeMetrics"
        elif plural == "pods":
            items = [
                {
                    "metadata": {"name": p, "namespace": ns, "creationTimestamp": ts},
                    "timestamp": ts,
                    "window": "15.05s",
                    "containers": [
                        {"name": c, "usage": u} for c, u in sorted(cs.items())
                    ],
                }
                for (ns, p), cs in sorted(self.pod_usage.items())
                if (namespace in (None, ns)) and name in (None, p)
            ]
            kind = "PodMetrics"
        else:
            raise ApiError(
                404, "the server could not find the requested resource", "NotFound", {}
            )
        if name:
            if not items:
                raise ApiError(
                    404,
                    f'{plural}.metrics.k8s.io "{name}" not found',
                    "NotFound",
                    {"name": name, "group": "metrics.k8s.io", "kind": plural},
                )
            return _json_response(
                {"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", **items[0]}
            )
        return _json_response(
            {
                "kind": kind + "List",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": items,
            }
        )


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1")


def _go_kind(v: Any) -> str:
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "null"


def _pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


__all__ = ["FakeKubeServer", "RecordedRequest", "ApiError", "invalid"]
