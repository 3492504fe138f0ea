"""Typed helpers that read settings from the environment.

Every helper also honours a ``NAME_FILE`` variant, so a Kubernetes secret mounted as a
file can provide the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


class SettingError(ImproperlyConfigured):
    """A setting is missing or malformed; the message names it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def raw(name: str) -> str | None:
    """Return the raw value of NAME, or the contents of the file named by NAME_FILE."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise SettingError(
                f"{name}_FILE: cannot read {file_name}: {exc.strerror}"
            ) from None
    return os.environ.get(name)


def env_str(name: str, default: str | None = None) -> str:
    """Return NAME as a string; without a default it is required."""
    value = raw(name)
    if value is None or value == "":
        if default is None:
            raise SettingError(f"{name} is required but not set")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    """Return NAME as a boolean (1/0, true/false, yes/no, on/off)."""
    value = raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingError(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Return NAME as an integer, at least MINIMUM when given."""
    value = raw(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(f"{name} must be a whole number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise SettingError(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    """Return NAME as a comma-separated list with blanks removed."""
    value = raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]
