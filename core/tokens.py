"""Personal API tokens: create, look up, revoke. The only write path for ApiToken.

A token is ``slp_`` followed by 43 URL-safe characters from ``secrets`` (256 bits).
Only its SHA-256 is stored. A password hash (PBKDF2, Argon2) exists to slow down
guessing a *low-entropy* secret from a stolen hash; a 256-bit random secret cannot
be guessed however fast the hash is, so the slow hash would only make every API
request pay tens of milliseconds for nothing. A fast, unsalted digest also lets the
database find the row by an index on the hash, without a prefix scan.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import audit
from .models import ApiToken

TOKEN_PREFIX = "slp_"
# last_used_at is a hint for "is this token still in use?", not an access log: write
# it at most once a minute per token, so a busy script does not write on every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    """A freshly created token and its secret (shown to the user once, never stored)."""

    token: ApiToken
    secret: str


def hash_secret(secret: str) -> str:
    """Return the stored form of SECRET (the whole ``slp_...`` string)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    user: Any,
    *,
    name: str,
    scope: str = ApiToken.Scope.READ,
    expires_at: datetime | None = None,
    request: Any = None,
) -> NewToken:
    """Create a token for USER; return it with its secret (the only time it exists)."""
    body = secrets.token_urlsafe(32)
    secret = TOKEN_PREFIX + body
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=body[:8],
            key_hash=hash_secret(secret),
            scope=scope,
            expires_at=expires_at,
        )
        audit.record(
            "token.create",
            actor=user,
            target=token,
            request=request,
            details={
                "scope": scope,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return NewToken(token, secret)


def revoke_token(token: ApiToken, *, user: Any = None, request: Any = None) -> bool:
    """Revoke TOKEN; return False when it was revoked already (nothing changes)."""
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        if revoked:
            token.refresh_from_db(fields=["revoked_at"])
            audit.record("token.revoke", actor=user, target=token, request=request)
    return bool(revoked)


def authenticate(secret: str) -> ApiToken | None:
    """Return the usable token whose secret is SECRET (with its user), or None."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.usable()
        .select_related("user")
        .filter(key_hash=hash_secret(secret))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
