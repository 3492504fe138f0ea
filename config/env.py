"""Typed helpers that read settings from the environment.

Every helper also honours a ``NAME_FILE`` variant, so a Kubernetes secret mounted as a
file can provide the value.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


class SettingError(ImproperlyConfigured):
    """A setting is missing or malformed; the message names it."""


# Exit status of a process stopped by a bad setting (manage.py uses the same).
SETTING_ERROR_STATUS = 2

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


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """Return NAME, which must be one of CHOICES (compared in lower case)."""
    value = env_str(name, default).strip().lower()
    if value not in choices:
        raise SettingError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def env_fernet_keys(name: str, default: list[str]) -> list[str]:
    """Return NAME as comma-separated Fernet keys, each checked now.

    Fernet's own check, without importing cryptography here: a key is 32 bytes in
    url-safe base64. A bad key would otherwise surface on the first secret a worker
    decrypts, long after start-up. The message never repeats a key (it is a secret).
    """
    keys = env_list(name, default)
    if not keys:
        raise SettingError(f"{name} is set but holds no key")
    for position, key in enumerate(keys, start=1):
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            which = f"key {position} of {len(keys)}" if len(keys) > 1 else "the key"
            raise SettingError(
                f"{name}: {which} is not a Fernet key (32 url-safe base64 bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )
    return keys


@contextmanager
def exit_on_setting_error() -> Iterator[None]:
    """Turn a SettingError inside the block into one line on stderr and exit 2.

    A bad setting is an operator's mistake, not a bug: the entry points (ASGI, Celery,
    the container's preflight) print the line that names it instead of a traceback.
    """
    try:
        yield
    except SettingError as exc:
        print(f"slipway: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(SETTING_ERROR_STATUS) from None


def check_settings() -> None:
    """Load Django's settings now, or stop the process with one line naming the bad one.

    ``django.conf.settings`` is lazy: without this, the first attribute read anywhere
    (deep in Celery's or uvicorn's start-up) raises, under a wall of their frames.
    """
    with exit_on_setting_error():
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018 - the first read loads the module
