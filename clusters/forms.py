"""Forms for registering a cluster; the kubeconfig is parsed safely and checked."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from . import kube
from .models import Cluster, validate_namespaces

MAX_KUBECONFIG_BYTES = 256 * 1024


class ClusterForm(forms.ModelForm):
    """Add or edit a cluster: kubeconfig (uploaded or pasted) + context, or token + CA.

    Secrets are never echoed back into the form: leaving the kubeconfig or token
    empty on edit keeps the stored one.
    """

    kubeconfig_file = forms.FileField(
        required=False,
        label="Kubeconfig file",
        help_text="Or paste it below. `kubectl config view --raw --minify` gives one.",
    )
    kubeconfig = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 6, "class": "mono", "spellcheck": "false"}
        ),
        label="Kubeconfig",
    )
    context = forms.CharField(
        required=False,
        help_text="Empty: the kubeconfig's current-context.",
    )
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="A ServiceAccount token (kubectl create token …).",
    )

    namespaces = forms.CharField(
        required=False,
        label="Namespaces",
        help_text=(
            "Separate with commas or spaces. Empty: watch all namespaces (needs a "
            "ClusterRole). Set: watch only these, for an identity that a Role "
            "allows into some namespaces only; cluster-wide kinds it may not read "
            "(nodes, PersistentVolumes, StorageClasses) are shown as not permitted."
        ),
    )

    class Meta:
        model = Cluster
        fields = [
            "name",
            "description",
            "auth_mode",
            "kubeconfig",
            "context",
            "api_server",
            "token",
            "ca_cert",
            "verify_tls",
            "monitored",
            "namespaces",
        ]
        widgets = {
            "ca_cert": forms.Textarea(attrs={"rows": 4, "class": "mono"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts: list[str] = []
        if self.instance.pk:
            self.initial["kubeconfig"] = ""
            self.fields["kubeconfig"].help_text = "Leave empty to keep the stored one."
            self.fields["token"].help_text = "Leave empty to keep the stored one."
        if not self.is_bound:
            self.initial["namespaces"] = ", ".join(self.instance.namespaces or [])

    def clean_namespaces(self) -> list[str]:
        """Return the namespaces as a list: split on commas and spaces, sorted."""
        text = self.cleaned_data.get("namespaces") or ""
        names = [n for n in re.split(r"[\s,]+", text.strip()) if n]
        validate_namespaces(names)
        return sorted(names)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        mode = data.get("auth_mode")
        upload = data.get("kubeconfig_file")
        text = (data.get("kubeconfig") or "").strip()
        if upload is not None:
            if upload.size > MAX_KUBECONFIG_BYTES:
                self.add_error(
                    "kubeconfig_file", "This file is too large for a kubeconfig."
                )
                return data
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("kubeconfig_file", "The kubeconfig must be UTF-8 text.")
                return data
        if mode == Cluster.AuthMode.KUBECONFIG:
            if not text and self.instance.pk and self.instance.kubeconfig:
                text = self.instance.kubeconfig
            if not text:
                self.add_error("kubeconfig", "Upload or paste a kubeconfig.")
                return data
            try:
                parsed = kube.parse_kubeconfig(text)
            except kube.CredentialsError as exc:
                self.add_error("kubeconfig", str(exc))
                return data
            self.contexts = kube.kubeconfig_contexts(parsed)
            context = (data.get("context") or "").strip()
            if context and context not in self.contexts:
                self.add_error(
                    "context",
                    f"No context {context!r} in this kubeconfig; it has: "
                    + ", ".join(self.contexts),
                )
            elif not context and not parsed.get("current-context"):
                if len(self.contexts) == 1:
                    data["context"] = self.contexts[0]
                else:
                    self.add_error(
                        "context",
                        "The kubeconfig has no current-context; choose one of: "
                        + ", ".join(self.contexts),
                    )
            data["kubeconfig"] = text
            if not data.get("api_server"):
                server = kube.kubeconfig_server(parsed, data.get("context") or None)
                if not server:
                    self.add_error("context", "This context names no cluster server.")
        elif mode == Cluster.AuthMode.TOKEN:
            token = (data.get("token") or "").strip()
            if not token and self.instance.pk:
                token = self.instance.token
            if not data.get("api_server"):
                self.add_error("api_server", "Token auth needs the API server URL.")
            if not token:
                self.add_error("token", "Paste a ServiceAccount token.")
            data["token"] = token
            ca = (data.get("ca_cert") or "").strip()
            if ca and "BEGIN CERTIFICATE" not in ca:
                self.add_error(
                    "ca_cert", "Paste the CA as PEM (-----BEGIN CERTIFICATE-----)."
                )
        return data

    def save(self, commit: bool = True) -> Cluster:
        cluster = super().save(commit=False)
        cluster.kubeconfig = self.cleaned_data.get("kubeconfig") or cluster.kubeconfig
        cluster.token = self.cleaned_data.get("token") or cluster.token
        if cluster.auth_mode != Cluster.AuthMode.KUBECONFIG:
            cluster.kubeconfig, cluster.context = "", ""
        if cluster.auth_mode != Cluster.AuthMode.TOKEN:
            cluster.token = ""
        if commit:
            cluster.save()
        return cluster


class ApplyForm(forms.Form):
    """Apply a YAML stream with server-side apply."""

    yaml = forms.CharField(
        widget=forms.Textarea(
            attrs={"rows": 18, "class": "mono", "spellcheck": "false"}
        )
    )
    namespace = forms.CharField(
        required=False, help_text="Default for namespaced objects."
    )
    force = forms.BooleanField(
        required=False, help_text="Take ownership of fields another manager owns."
    )
