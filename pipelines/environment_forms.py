"""Forms of the environment pages."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import Environment


class EnvironmentForm(forms.ModelForm):
    """Create or edit a repository's environment (admins)."""

    class Meta:
        model = Environment
        fields = [
            "name",
            "cluster",
            "namespace",
            "url",
            "protected",
            "deploy_role",
            "deploy_group",
        ]
        labels = {
            "deploy_role": "Who may deploy",
            "deploy_group": "Only members of",
            "url": "URL",
        }

    def __init__(self, *args: Any, repository: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repository = repository
        self.fields["cluster"].required = True
        self.fields["cluster"].empty_label = "Choose a cluster"

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        taken = Environment.objects.filter(repository=self.repository, name=name)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError("This repository has an environment so named.")
        return name

    def save(self, commit: bool = True) -> Environment:
        environment = super().save(commit=False)
        environment.repository = self.repository
        if commit:
            environment.save()
        return environment


class PromoteForm(forms.Form):
    """Choose the environment whose current version to deploy here."""

    source = forms.ChoiceField(label="Promote from")

    def __init__(self, *args: Any, choices: list[tuple[str, str]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = choices
