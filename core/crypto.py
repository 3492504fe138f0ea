"""Encrypt and decrypt secrets at rest with the keys from SLIPWAY_ENCRYPTION_KEY."""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from config.env import SettingError


class DecryptionError(Exception):
    """The stored value cannot be decrypted with any configured key."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise SettingError(
            "SLIPWAY_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None


def fernet() -> MultiFernet:
    """Return the MultiFernet for the configured keys (the first one encrypts)."""
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """Return the token for PLAINTEXT."""
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Return the plaintext of TOKEN, or raise DecryptionError."""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("cannot decrypt a stored secret: wrong key?") from None
