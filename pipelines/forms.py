"""Forms of the pipeline pages: repositories, manual runs, schedules, variables."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from .models import VARIABLE_NAME_VALIDATOR, Repository, Schedule, Variable

# Names that a repository page's own URLs use (repos/new/).
RESERVED_NAMES = {"new"}
REF_RE = re.compile(r"^[A-Za-z0-9._/+@-]{1,255}$")


def parse_variables(text: str) -> dict[str, str]:
    """Parse KEY=value lines; raise ValidationError naming the bad line."""
    variables: dict[str, str] = {}
    errors = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        name = name.strip()
        if not sep:
            errors.append(f"Line {number}: expected KEY=value, got {stripped[:40]!r}.")
            continue
        try:
            VARIABLE_NAME_VALIDATOR(name)
        except ValidationError:
            errors.append(
                f"Line {number}: {name[:40]!r} is not a valid variable name "
                "(letters, digits and underscores, not starting with a digit)."
            )
            continue
        variables[name] = value
    if errors:
        raise ValidationError(errors)
    return variables


def format_variables(variables: dict[str, Any] | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (variables or {}).items())


def _formfield(field: Any, **kwargs: Any) -> Any:
    # URLs without a scheme are https:// (Django 6's default; silences its warning).
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class RepositoryForm(forms.ModelForm):
    """Create or edit a repository; credentials are write-only."""

    https_token = forms.CharField(
        label="HTTPS token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Token for HTTPS clones and commit statuses.",
    )
    ssh_private_key = forms.CharField(
        label="SSH deploy key (private)",
        required=False,
        widget=forms.Textarea(
            attrs={
                "rows": 4,
                "class": "mono",
                "autocomplete": "off",
                "spellcheck": "false",
                "placeholder": "-----BEGIN OPENSSH PRIVATE KEY-----",
            }
        ),
    )
    clear_https_token = forms.BooleanField(label="Remove the token", required=False)
    clear_ssh_private_key = forms.BooleanField(
        label="Remove the SSH key", required=False
    )

    class Meta:
        model = Repository
        formfield_callback = _formfield
        fields = [
            "name",
            "description",
            "clone_url",
            "default_branch",
            "forge",
            "branch_filter",
            "tag_filter",
            "concurrency_limit",
            "cancel_superseded",
            "poll_interval",
            "forge_api_url",
            "forge_project",
        ]
        widgets = {
            "clone_url": forms.TextInput(
                attrs={"placeholder": "https://github.com/acme/web.git"}
            ),
            "branch_filter": forms.TextInput(attrs={"placeholder": "main, release/*"}),
            "tag_filter": forms.TextInput(attrs={"placeholder": "v*"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        editing = self.instance.pk is not None
        for secret in ("https_token", "ssh_private_key"):
            has_value = editing and bool(getattr(self.instance, secret))
            if has_value:
                self.fields[
                    secret
                ].help_text = "A value is stored. Leave empty to keep it."
                self.fields[secret].widget.attrs["placeholder"] = "•••••••• (stored)"
            elif secret == "ssh_private_key":
                self.fields[
                    secret
                ].help_text = (
                    "Private part of a deploy key, for ssh:// and git@ clone URLs."
                )
            if not has_value:
                del self.fields[f"clear_{secret}"]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name.lower() in RESERVED_NAMES:
            raise ValidationError(f"{name!r} is reserved; choose another name.")
        return name

    def clean_clone_url(self) -> str:
        url = self.cleaned_data["clone_url"].strip()
        if any(c.isspace() for c in url):
            raise ValidationError("A clone URL cannot contain spaces.")
        if url.startswith("-"):
            raise ValidationError("A clone URL cannot start with a dash.")
        return url

    def clean_ssh_private_key(self) -> str:
        key = self.cleaned_data.get("ssh_private_key", "").strip()
        if key and "PRIVATE KEY" not in key:
            raise ValidationError(
                "This does not look like a private key (expected a "
                "-----BEGIN … PRIVATE KEY----- block)."
            )
        return key + "\n" if key else ""

    def _clean_glob_list(self, field: str) -> str:
        value = self.cleaned_data.get(field, "")
        parts = [p.strip() for p in value.split(",") if p.strip()]
        return ", ".join(parts)

    def clean_branch_filter(self) -> str:
        return self._clean_glob_list("branch_filter")

    def clean_tag_filter(self) -> str:
        return self._clean_glob_list("tag_filter")

    def save(self, commit: bool = True) -> Repository:
        repository = super().save(commit=False)
        for secret in ("https_token", "ssh_private_key"):
            value = self.cleaned_data.get(secret, "")
            if self.cleaned_data.get(f"clear_{secret}"):
                setattr(repository, secret, "")
            elif value:
                setattr(repository, secret, value)
        if commit:
            repository.save()
        return repository


class TriggerForm(forms.Form):
    """Start a run by hand: a branch, tag or commit and extra variables."""

    ref = forms.CharField(
        label="Branch, tag or commit",
        max_length=255,
        widget=forms.TextInput(attrs={"placeholder": "main", "class": "mono"}),
    )
    variables = forms.CharField(
        label="Variables",
        required=False,
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "class": "mono",
                "placeholder": "DEPLOY=1\nLOG_LEVEL=debug",
            }
        ),
        help_text="One KEY=value per line; added to the pipeline's variables.",
    )

    def clean_ref(self) -> str:
        ref = self.cleaned_data["ref"].strip()
        if not REF_RE.match(ref) or ".." in ref or ref.startswith("-"):
            raise ValidationError("Enter a branch name, tag or commit SHA.")
        return ref

    def clean_variables(self) -> dict[str, str]:
        return parse_variables(self.cleaned_data.get("variables", ""))


class ScheduleForm(forms.ModelForm):
    """Create a cron schedule; the expression is checked and its next time computed."""

    variables_text = forms.CharField(
        label="Variables",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "mono"}),
        help_text="One KEY=value per line.",
    )

    class Meta:
        model = Schedule
        fields = ["description", "cron", "branch", "enabled"]
        widgets = {
            "cron": forms.TextInput(
                attrs={"placeholder": "0 3 * * *", "class": "mono"}
            ),
            "description": forms.TextInput(attrs={"placeholder": "Nightly build"}),
        }

    def __init__(self, *args: Any, repository: Repository, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repository = repository
        if not self.is_bound and not self.instance.pk:
            self.initial.setdefault("branch", repository.default_branch)

    def clean_cron(self) -> str:
        from croniter import croniter

        cron = " ".join(self.cleaned_data["cron"].split())
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValidationError(
                "Enter a five-field cron expression: minute hour day-of-month month "
                "day-of-week, e.g. 0 3 * * * (every day at 03:00)."
            )
        return cron

    def clean_branch(self) -> str:
        branch = self.cleaned_data["branch"].strip()
        if not REF_RE.match(branch) or ".." in branch or branch.startswith("-"):
            raise ValidationError("Enter a branch name.")
        return branch

    def clean_variables_text(self) -> dict[str, str]:
        return parse_variables(self.cleaned_data.get("variables_text", ""))

    def save(self, commit: bool = True) -> Schedule:
        from .schedules import compute_next

        schedule = super().save(commit=False)
        schedule.repository = self.repository
        schedule.variables = self.cleaned_data.get("variables_text") or {}
        # The cron expression is read in settings.TIME_ZONE, as the beat tick does.
        schedule.next_run_at = compute_next(schedule) if schedule.enabled else None
        if commit:
            schedule.save()
        return schedule


class VariableForm(forms.ModelForm):
    """Add a variable or secret to a repository (replace by adding it again)."""

    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 2, "class": "mono", "autocomplete": "off"}
        ),
    )

    class Meta:
        model = Variable
        fields = ["name", "value", "is_secret"]
        labels = {"is_secret": "Secret (masked in logs, never shown again)"}
        widgets = {
            "name": forms.TextInput(attrs={"placeholder": "API_TOKEN", "class": "mono"})
        }

    def __init__(self, *args: Any, repository: Repository, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repository = repository

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if (
            Variable.objects.filter(repository=self.repository, name=name)
            .exclude(pk=self.instance.pk)
            .exists()
        ):
            raise ValidationError(
                f"{name} already exists. Delete it first to replace its value."
            )
        return name

    def save(self, commit: bool = True) -> Variable:
        variable = super().save(commit=False)
        variable.repository = self.repository
        if commit:
            variable.save()
        return variable
