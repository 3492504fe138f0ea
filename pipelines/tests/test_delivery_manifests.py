"""Rendering a deploy job's manifests: directories, files, kustomize, images."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import manifests

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: migrate, image: registry.example.com/shop/web:old}]
      containers:
        - {name: web, image: registry.example.com/shop/web:old}
        - {name: proxy, image: "envoyproxy/envoy:v1.30@sha256:abc"}
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_directory_renders_every_yaml_file_sorted_by_name(tmp_path):
    write(
        tmp_path,
        {
            "k8s/b-service.yml": SERVICE,
            "k8s/a-deployment.yaml": DEPLOYMENT,
            "k8s/notes.txt": "ignored",
        },
    )
    docs = manifests.load(tmp_path, manifests="k8s/")
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]


def test_images_are_substituted_by_image_name_or_container_name(tmp_path):
    write(tmp_path, {"deploy.yaml": DEPLOYMENT})
    docs = manifests.load(
        tmp_path,
        manifests="deploy.yaml",
        images={"web": "registry.example.com/shop/web:abc123", "envoy": "envoy:2"},
    )
    pod = docs[0]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "registry.example.com/shop/web:abc123"
    assert pod["containers"][0]["image"] == "registry.example.com/shop/web:abc123"
    assert pod["containers"][1]["image"] == "envoy:2"
    assert manifests.images_of(docs) == [
        "registry.example.com/shop/web:abc123",
        "envoy:2",
    ]


def test_kustomization_resources_namespace_labels_and_images(tmp_path):
    write(
        tmp_path,
        {
            "deploy/base/kustomization.yaml": "resources: [deployment.yaml, service.yaml]\n",
            "deploy/base/deployment.yaml": DEPLOYMENT,
            "deploy/base/service.yaml": SERVICE,
            "deploy/overlays/prod/kustomization.yaml": yaml.safe_dump(
                {
                    "resources": ["../../base"],
                    "namespace": "shop",
                    "commonLabels": {"tier": "frontend"},
                    "images": [
                        {"name": "registry.example.com/shop/web", "newTag": "v2"}
                    ],
                }
            ),
        },
    )
    docs = manifests.load(tmp_path, kustomize="deploy/overlays/prod")
    dep, svc = docs
    assert {d["metadata"]["namespace"] for d in docs} == {"shop"}
    assert dep["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "web", "tier": "frontend"}
    assert dep["spec"]["template"]["metadata"]["labels"]["tier"] == "frontend"
    assert svc["spec"]["selector"] == {"app": "web", "tier": "frontend"}
    assert (
        dep["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example.com/shop/web:v2"
    )


def test_unsupported_kustomize_features_are_refused_by_name(tmp_path):
    write(
        tmp_path,
        {"k/kustomization.yaml": "resources: []\npatches: [{path: p.yaml}]\n"},
    )
    with pytest.raises(manifests.ManifestError, match="patches not supported"):
        manifests.load(tmp_path, kustomize="k")


@pytest.mark.parametrize(
    ("files", "path", "message"),
    [
        ({}, "k8s/", "no such file or directory"),
        ({"k8s/x.yaml": "a: [1"}, "k8s/", "invalid YAML"),
        ({"k8s/x.yaml": "kind: Service\n"}, "k8s/", "needs apiVersion, kind"),
        ({"k8s/readme.md": "hi"}, "k8s/", "no .yaml or .yml files"),
        ({"x.yaml": SERVICE}, "../x.yaml", "leaves the workspace"),
    ],
)
def test_bad_manifests_fail_with_a_clear_message(tmp_path, files, path, message):
    root = tmp_path / "ws"
    root.mkdir()
    write(tmp_path if path.startswith("..") else root, files)
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.load(root, manifests=path)


def test_promotion_moves_documents_into_the_target_namespace():
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "a", "namespace": "staging"},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}},
    ]
    moved = manifests.set_namespace(docs, "prod", replace="staging")
    assert [d["metadata"].get("namespace") for d in moved] == ["prod", "prod", None]
    assert docs[0]["metadata"]["namespace"] == "staging"  # The input is not changed.


def test_the_stored_stream_round_trips():
    docs = [yaml.safe_load(DEPLOYMENT), yaml.safe_load(SERVICE)]
    assert manifests.parse(manifests.dump(docs)) == docs
