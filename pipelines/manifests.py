"""Render a deploy job's Kubernetes manifests from its workspace (plain Python).

Two sources, as `deploy:` in `.slipway.yml` chooses:

* ``manifests: k8s/`` — every ``*.yaml``/``*.yml`` file of a directory (sorted by
  name, not recursive), or one file;
* ``kustomize: overlays/prod`` — a directory with a ``kustomization.yaml``, read by a
  small built-in loader (no kustomize binary): ``resources`` (files or directories
  holding their own kustomization), ``namespace``, ``commonLabels`` and ``images``.
  Anything else (patches, generators, components…) is refused with a clear message
  rather than silently ignored.

Then ``images`` substitutions from the job replace container images, and the result is
a list of documents plus the YAML stream that was rendered (stored with the
deployment, so a rollback re-applies exactly the same thing).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ManifestError",
    "load",
    "load_kustomization",
    "load_manifests",
    "substitute_images",
    "set_namespace",
    "dump",
    "parse",
]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KUSTOMIZE_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "commonLabels", "images"}
)
MAX_DOCUMENTS = 500
MAX_BYTES = 5 * 1024 * 1024


class ManifestError(Exception):
    """The manifests cannot be rendered; the message says which file and why."""


# --------------------------------------------------------------------- reading files


def _inside(root: Path, relative: str) -> Path:
    """Return ROOT/RELATIVE, refusing paths that leave ROOT (also through symlinks)."""
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise ManifestError(f"{relative}: the path leaves the workspace")
    return target


def _read_documents(path: Path, shown: str) -> list[dict[str, Any]]:
    if path.stat().st_size > MAX_BYTES:
        raise ManifestError(f"{shown}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{shown}: invalid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{shown}: not a UTF-8 text file") from None
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{shown}: document {index + 1} is not a mapping")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(d for d in doc["items"] if isinstance(d, dict))
            continue
        meta = doc.get("metadata")
        if (
            not doc.get("apiVersion")
            or not doc.get("kind")
            or not isinstance(meta, dict)
            or not meta.get("name")
        ):
            raise ManifestError(
                f"{shown}: document {index + 1} needs apiVersion, kind and "
                "metadata.name"
            )
        out.append(doc)
    return out


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


def load_manifests(workspace: Path, relative: str) -> list[dict[str, Any]]:
    """Return the documents of one file, or of every YAML file in a directory."""
    target = _inside(workspace, relative)
    if target.is_file():
        return _read_documents(target, relative)
    if not target.is_dir():
        raise ManifestError(f"{relative}: no such file or directory in the commit")
    files = [p for p in _yaml_files(target) if p.name not in KUSTOMIZATION_FILES[:2]]
    if not files:
        raise ManifestError(f"{relative}: no .yaml or .yml files")
    docs: list[dict[str, Any]] = []
    for path in files:
        docs.extend(_read_documents(path, str(path.relative_to(workspace))))
    return docs


# ------------------------------------------------------------------------ kustomize


def _kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def load_kustomization(
    workspace: Path, relative: str, _seen: tuple[Path, ...] = ()
) -> list[dict[str, Any]]:
    """Return the documents a kustomization directory builds (the supported subset)."""
    directory = _inside(workspace, relative)
    if not directory.is_dir():
        raise ManifestError(f"{relative}: no such directory in the commit")
    if directory in _seen:
        raise ManifestError(f"{relative}: kustomization includes itself")
    path = _kustomization_file(directory)
    if path is None:
        raise ManifestError(f"{relative}: no kustomization.yaml")
    shown = str(path.relative_to(workspace))
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ManifestError(f"{shown}: invalid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ManifestError(f"{shown}: expected a mapping")
    unsupported = sorted(set(config) - SUPPORTED_KUSTOMIZE_KEYS)
    if unsupported:
        raise ManifestError(
            f"{shown}: {', '.join(unsupported)} not supported by Slipway's built-in "
            "kustomize loader (supported: resources, namespace, commonLabels, images); "
            "render the manifests in the job's script and use `manifests:` instead"
        )
    docs: list[dict[str, Any]] = []
    for entry in config.get("resources") or []:
        if not isinstance(entry, str):
            raise ManifestError(f"{shown}: resources entries must be paths")
        if "://" in entry or entry.startswith("github.com/"):
            raise ManifestError(f"{shown}: remote resource {entry!r} not supported")
        sub = (Path(relative) / entry).as_posix()
        target = _inside(workspace, sub)
        if target.is_dir():
            docs.extend(load_kustomization(workspace, sub, (*_seen, directory)))
        elif target.is_file():
            docs.extend(_read_documents(target, sub))
        else:
            raise ManifestError(f"{shown}: resource {entry!r} not found")
    labels = config.get("commonLabels") or {}
    if labels:
        if not isinstance(labels, dict):
            raise ManifestError(f"{shown}: commonLabels must be a mapping")
        docs = [
            _add_labels(doc, {str(k): str(v) for k, v in labels.items()})
            for doc in docs
        ]
    namespace = config.get("namespace")
    if namespace:
        docs = [_with_namespace(doc, str(namespace)) for doc in docs]
    images = config.get("images") or []
    if images:
        mapping: dict[str, str] = {}
        for item in images:
            if not isinstance(item, dict) or not item.get("name"):
                raise ManifestError(f"{shown}: images entries need a name")
            name = str(item["name"])
            new = str(item.get("newName") or name)
            if item.get("digest"):
                new += f"@{item['digest']}"
            elif item.get("newTag") is not None:
                new += f":{item['newTag']}"
            mapping[name] = new
        docs = substitute_images(docs, mapping, by_container_name=False)
    return docs


_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)


def _with_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    if doc.get("kind") in _CLUSTER_SCOPED:
        return doc
    doc = copy.deepcopy(doc)
    doc.setdefault("metadata", {})["namespace"] = namespace
    return doc


def set_namespace(
    docs: list[dict[str, Any]], namespace: str, *, replace: str | None = None
) -> list[dict[str, Any]]:
    """Return DOCS moved to NAMESPACE: those naming REPLACE (or none) are rewritten.

    Used by promotion: the manifests that ran in staging's namespace are applied to
    production's. Documents naming a third namespace keep it (and the apply refuses
    them, as it refuses any document aimed outside the environment).
    """
    out = []
    for doc in docs:
        current = (doc.get("metadata") or {}).get("namespace")
        if doc.get("kind") not in _CLUSTER_SCOPED and current in (None, replace):
            doc = _with_namespace(doc, namespace)
        out.append(doc)
    return out


def _add_labels(doc: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    meta = doc.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return doc
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        # As kustomize does: selectors and pod labels get the labels too, so the
        # workload still selects its own pods.
        if kind != "Job":
            selector = spec.setdefault("selector", {})
            selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **labels}
        template = spec.setdefault("template", {})
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
    elif kind == "Service" and isinstance(spec.get("selector"), dict):
        spec["selector"] = {**spec["selector"], **labels}
    return doc


# --------------------------------------------------------------------------- images


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = doc.get("kind")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "Pod":
        yield spec
    elif kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        pod = (job.get("template") or {}).get("spec")
        if isinstance(pod, dict):
            yield pod
    else:
        pod = (spec.get("template") or {}).get("spec")
        if isinstance(pod, dict):
            yield pod


def _repository(image: str) -> str:
    """Return an image reference without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def substitute_images(
    docs: list[dict[str, Any]],
    images: Mapping[str, str],
    *,
    by_container_name: bool = True,
) -> list[dict[str, Any]]:
    """Return DOCS with container images replaced from IMAGES.

    A key matches a container whose name is the key (with BY_CONTAINER_NAME), or
    whose image repository is the key, in full or its last path segment
    (``web`` matches ``registry.example.com/shop/web:1.2``).
    """
    if not images:
        return docs
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        for pod in _pod_specs(doc):
            for field in ("initContainers", "containers"):
                for container in pod.get(field) or []:
                    if not isinstance(container, dict):
                        continue
                    new = _image_for(container, images, by_container_name)
                    if new is not None:
                        container["image"] = new
        out.append(doc)
    return out


def _image_for(
    container: dict[str, Any], images: Mapping[str, str], by_name: bool
) -> str | None:
    if by_name and container.get("name") in images:
        return images[container["name"]]
    image = str(container.get("image") or "")
    repository = _repository(image)
    if repository in images:
        return images[repository]
    last = repository.rsplit("/", 1)[-1]
    if last in images:
        return images[last]
    return None


def images_of(docs: list[dict[str, Any]]) -> list[str]:
    """Return the container images DOCS run, each once, in order."""
    seen: list[str] = []
    for doc in docs:
        for pod in _pod_specs(doc):
            for field in ("initContainers", "containers"):
                for container in pod.get(field) or []:
                    image = isinstance(container, dict) and container.get("image")
                    if image and image not in seen:
                        seen.append(str(image))
    return seen


# ---------------------------------------------------------------------- entry point


def load(
    workspace: Path,
    *,
    manifests: str | None = None,
    kustomize: str | None = None,
    images: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Return the documents a `deploy:` block renders, images substituted."""
    if bool(manifests) == bool(kustomize):
        raise ManifestError("set exactly one of deploy.manifests or deploy.kustomize")
    if manifests:
        docs = load_manifests(workspace, manifests)
    else:
        docs = load_kustomization(workspace, str(kustomize))
    if not docs:
        raise ManifestError("the manifests hold no documents")
    if len(docs) > MAX_DOCUMENTS:
        raise ManifestError(f"more than {MAX_DOCUMENTS} documents")
    return substitute_images(docs, images or {})


def dump(docs: list[dict[str, Any]]) -> str:
    """Return DOCS as one YAML stream (the text stored with a deployment)."""
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def parse(text: str) -> list[dict[str, Any]]:
    """Return the documents of a stored YAML stream."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
