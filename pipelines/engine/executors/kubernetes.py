"""Run jobs as Pods in a Kubernetes namespace (the official `kubernetes` client).

The pod runs `spec.image` (or the default image) with the job's script passed to
``sh -c``; the job's variables travel in a Secret the pod reads through ``envFrom``
(never in the pod spec, where anyone who may read pods would see them). The Secret
is owned by the pod, so the cluster's garbage collector removes it with the pod even
if the worker dies; the executor deletes both itself anyway.

The pod does not see the worker's workspace: the script runs in the image without
the checkout unless the image brings it (clone inside the script if needed).
`after_script` runs in the same container after the script, and is skipped on
cancel and timeout (the pod is deleted at once).

This module never imports Django: the caller passes a client ``Configuration`` (see
``pipelines/k8s_executor.py``, which builds it from a stored cluster).
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import threading
import time
import types
from typing import TYPE_CHECKING, Any, cast

from .base import (
    CHUNK_QUEUE_SIZE,
    ExecResult,
    ExecSpec,
    OutputFn,
    put_chunk,
    take_chunks,
)
from .shell import render_script

if TYPE_CHECKING:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException


def _client() -> types.ModuleType:
    """Return the kubernetes client module, imported on first use.

    Every process imports the executors (Celery loads the tasks), and the client
    costs ~35 MiB and ~0.1 s: only a worker that runs a pod job pays for it.
    """
    from kubernetes import client

    return client


def _api_exception() -> type[ApiException]:
    from kubernetes.client.exceptions import ApiException

    return ApiException


__all__ = ["KubernetesExecutor", "pod_manifest"]

TICK = 0.1
POLL = 0.5
REQUEST_TIMEOUT = (5, 30)
CONTAINER = "job"
# $1 is the script, $2 the after_script; the script's exit status is the pod's.
WRAPPER = (
    'sh -c "$1"; rc=$?; '
    'if [ -n "$2" ]; then sh -c "$2" || '
    "printf '\\033[33;1mWARNING: after_script failed (exit code %s); ignored"
    '\\033[0;m\\n\' "$?"; fi; exit $rc'
)
_DROPPED_ENV = ("HOME", "PATH", "SLIPWAY_WORKSPACE")
_PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
_RED = b"\x1b[31;1m"
_RESET = b"\x1b[0;m"


def _call(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a generated API method; return the JSON body as a dict.

    Objects stay plain dicts: the generated models refuse partial statuses that
    servers (and fakes) do send, and nothing here needs them.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    resp = fn(*args, _preload_content=False, **kwargs)
    data = resp.data
    return json.loads(data) if data else {}


def _slug(text: str, size: int = 30) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return slug[:size].strip("-") or "job"


def pod_manifest(spec: ExecSpec, name: str, image: str, secret: str) -> dict[str, Any]:
    """Return the Pod that runs SPEC (its env comes from the Secret SECRET)."""
    main = render_script(
        (*spec.before_script, *spec.script),
        section="step_script",
        header='Executing "step_script" stage of the job script',
        posix=True,
    )
    after = (
        render_script(
            spec.after_script,
            section="after_script",
            header="Running after_script",
            posix=True,
        )
        if spec.after_script
        else ""
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "slipway",
                "slipway.io/job": _slug(spec.job_name, 63),
            },
        },
        "spec": {
            "restartPolicy": "Never",
            # A job gets no credentials for the cluster it runs in unless asked.
            "automountServiceAccountToken": False,
            # The cluster stops the pod even if the worker that owns it died.
            "activeDeadlineSeconds": int(spec.timeout) + 60,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image,
                    "command": ["sh", "-c", WRAPPER, "slipway", main, after],
                    "envFrom": [{"secretRef": {"name": secret}}],
                }
            ],
        },
    }


class KubernetesExecutor:
    """Run scripts as pods in NAMESPACE; see `base` for the contract."""

    name = "kubernetes"

    def __init__(
        self,
        configuration: k8s.Configuration | None,
        namespace: str = "default",
        *,
        default_image: str = "alpine:3.20",
        unavailable: str = "",
        cluster_name: str = "",
        poll_interval: float = POLL,
    ) -> None:
        self.configuration = configuration
        self.namespace = namespace
        self.default_image = default_image
        self.unavailable = unavailable
        self.cluster_name = cluster_name or "the cluster"
        self.poll_interval = poll_interval
        if configuration is None and not unavailable:
            self.unavailable = "no cluster configured for the kubernetes executor"

    # ------------------------------------------------------------------ availability

    def available(self) -> tuple[bool, str]:
        """Return whether the cluster answers and lets us list pods in the namespace."""
        if self.unavailable or self.configuration is None:
            return False, self.unavailable
        api = _client().ApiClient(self.configuration)
        try:
            _client().CoreV1Api(api).list_namespaced_pod(
                self.namespace,
                limit=1,
                _request_timeout=(2, 5),
                _preload_content=False,
            )
        except _api_exception() as exc:
            return False, (
                f"cluster {self.cluster_name} refused to list pods in namespace "
                f"{self.namespace}: {exc.status} {exc.reason}"
            )
        except Exception as exc:  # noqa: BLE001 - unreachable, TLS, DNS: not here.
            return False, f"cluster {self.cluster_name} is unreachable: {exc}"
        finally:
            api.close()
        return True, ""

    # --------------------------------------------------------------------------- run

    def run(
        self, spec: ExecSpec, output: OutputFn, cancel: threading.Event
    ) -> ExecResult:
        """Create the pod, follow its log, return its result and delete it."""
        started = time.time()
        ok, why = self.available()
        if not ok:
            return ExecResult("error", None, started, time.time(), why)
        assert self.configuration is not None
        api = _client().ApiClient(self.configuration)
        core = _client().CoreV1Api(api)
        name = f"slipway-{_slug(spec.job_name)}-{secrets.token_hex(4)}"
        secret = f"{name}-env"
        image = spec.image or self.default_image
        deadline = time.monotonic() + spec.timeout
        try:
            pod = _call(
                core.create_namespaced_pod,
                self.namespace,
                pod_manifest(spec, name, image, secret),
            )
            env = {k: v for k, v in spec.env.items() if k not in _DROPPED_ENV}
            _call(
                core.create_namespaced_secret,
                self.namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": secret,
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Pod",
                                "name": name,
                                "uid": pod["metadata"]["uid"],
                            }
                        ],
                    },
                    "type": "Opaque",
                    "stringData": env,
                },
            )
        except _api_exception() as exc:
            self._delete(core, name, secret)
            api.close()
            return ExecResult(
                "error",
                None,
                started,
                time.time(),
                f"cannot create the job's pod in namespace {self.namespace}: "
                f"{exc.status} {exc.reason}",
            )
        except Exception as exc:  # noqa: BLE001
            self._delete(core, name, secret)
            api.close()
            return ExecResult("error", None, started, time.time(), f"kubernetes: {exc}")
        output(
            f"Running in pod {name} (namespace {self.namespace}, image {image})\n".encode()
        )
        try:
            status, code, message = self._follow(
                core, name, deadline, spec.timeout, output, cancel
            )
        except Exception as exc:  # noqa: BLE001 - API errors are job errors.
            status, code, message = "error", None, f"kubernetes: {exc}"
        finally:
            self._delete(core, name, secret, now=True)
            api.close()
        return ExecResult(status, code, started, time.time(), message)

    def _follow(
        self,
        core: k8s.CoreV1Api,
        name: str,
        deadline: float,
        timeout: int,
        output: OutputFn,
        cancel: threading.Event,
    ) -> tuple[str, int | None, str]:
        reading = threading.Event()  # Set once we stop reading the log queue.
        try:
            return self._follow_loop(
                core, name, deadline, timeout, output, cancel, reading
            )
        finally:
            reading.set()

    def _follow_loop(
        self,
        core: k8s.CoreV1Api,
        name: str,
        deadline: float,
        timeout: int,
        output: OutputFn,
        cancel: threading.Event,
        reading: threading.Event,
    ) -> tuple[str, int | None, str]:
        chunks: queue.Queue[bytes | None] = queue.Queue(CHUNK_QUEUE_SIZE)
        holder: dict[str, Any] = {}
        reader: threading.Thread | None = None
        next_poll = 0.0
        phase = "Pending"
        pod: Any = None
        eof = False
        while True:
            if cancel.is_set():
                output(b"\n" + _RED + b"ERROR: job canceled" + _RESET + b"\n")
                return "canceled", None, "canceled"
            if time.monotonic() >= deadline:
                text = f"ERROR: job timed out after {timeout} seconds"
                output(b"\n" + _RED + text.encode() + _RESET + b"\n")
                return "timeout", None, f"timed out after {timeout} seconds"
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_interval
                pod = _call(core.read_namespaced_pod, name, self.namespace)
                phase = (pod.get("status") or {}).get("phase") or "Pending"
                if phase == "Pending":
                    problem = _pull_problem(pod)
                    if problem:
                        return "error", None, problem
                elif reader is None:
                    reader = threading.Thread(
                        target=self._pump,
                        args=(core, name, chunks, holder, timeout, reading),
                        name=f"k8s-logs-{name}",
                        daemon=True,
                    )
                    reader.start()
                if phase in ("Succeeded", "Failed") and (reader is None or eof):
                    break
            if reader is None or eof:
                time.sleep(TICK)
                continue
            try:
                chunk = chunks.get(timeout=TICK)
            except queue.Empty:
                continue
            if chunk is None:
                ended = True
            else:
                data, ended = take_chunks(chunks, chunk)
                output(data)
            if ended:
                eof = True
                next_poll = 0.0  # The log ended: the container did, or soon will.
        code = _exit_code(pod)
        if code is None:
            code = 0 if phase == "Succeeded" else 1
        if code == 0:
            return "success", 0, ""
        output(_RED + f"ERROR: job failed: exit code {code}".encode() + _RESET + b"\n")
        return "failed", code, f"exit code {code}"

    def _pump(
        self,
        core: k8s.CoreV1Api,
        name: str,
        chunks: queue.Queue[bytes | None],
        holder: dict[str, Any],
        timeout: int,
        reading: threading.Event,
    ) -> None:
        # The client's log stream blocks; a thread turns it into a queue so the
        # calling thread can watch cancel and the deadline, and call `output` itself.
        try:
            resp = core.read_namespaced_pod_log(
                name,
                self.namespace,
                container=CONTAINER,
                follow=True,
                _preload_content=False,
                # A job may be silent for long: only its own timeout bounds a read.
                _request_timeout=(REQUEST_TIMEOUT[0], timeout + 60),
            )
            holder["resp"] = resp
            for chunk in cast(Any, resp).stream(65536):
                if chunk and not put_chunk(chunks, bytes(chunk), reading):
                    return
        except Exception as exc:  # noqa: BLE001 - the pod went away or the stream broke.
            holder["error"] = exc
        finally:
            put_chunk(chunks, None, reading)

    def _delete(
        self, core: k8s.CoreV1Api, name: str, secret: str, *, now: bool = False
    ) -> None:
        """Delete the pod (at once) and its Secret; a missing one is fine."""
        for fn, target in (
            (core.delete_namespaced_pod, name),
            (core.delete_namespaced_secret, secret),
        ):
            try:
                fn(
                    target,
                    self.namespace,
                    grace_period_seconds=0 if now else None,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except _api_exception() as exc:
                if exc.status != 404:
                    pass  # Owned by the pod: the garbage collector removes it.
            except Exception:  # noqa: BLE001, S110 - unreachable: activeDeadline ends it.
                pass


def _container_status(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return dict(status)
    return {}


def _exit_code(pod: dict[str, Any] | None) -> int | None:
    terminated = (_container_status(pod).get("state") or {}).get("terminated")
    if not terminated or terminated.get("exitCode") is None:
        return None
    return int(terminated["exitCode"])


def _pull_problem(pod: dict[str, Any] | None) -> str:
    status = _container_status(pod)
    waiting = (status.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _PULL_ERRORS:
        image = status.get("image") or ""
        return (
            f"cannot pull image {image}: {waiting['reason']}: "
            f"{waiting.get('message') or ''}"
        )
    return ""
