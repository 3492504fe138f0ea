"""Shared types and helpers for the forge webhook modules.

Every forge module (``github``, ``gitlab``, ``gitea``, ``generic``) exposes the same four
functions, described by :class:`Forge`:

- ``verify(headers, body, secret)`` raises a :class:`WebhookError` subclass unless the
  request carries the right signature or token. It never parses the body.
- ``parse(headers, body)`` turns a verified request into one :class:`PushEvent`. It raises
  :class:`BadPayload` (naming the field) for malformed input. Event types Slipway does not
  act on are not errors: they normalise to ``event == "unsupported"`` with the forge's own
  event name in ``forge_event`` so the caller can record "ignored: event X not handled".
- ``delivery_id(headers, body)`` returns the forge's delivery id, stable across the
  forge's redeliveries, or ``None``. It never raises.
- ``redact_headers(headers)`` returns a copy safe to store and log.

Header lookups are case-insensitive and also accept Django's ``META`` spelling
(``HTTP_X_GITHUB_EVENT``). Nothing here imports Django.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

ZERO_SHA: Final = "0" * 40

EventType = Literal["push", "tag", "merge_request", "ping", "unsupported"]

REDACTED: Final = "[redacted]"

# Headers whose values are credentials, whatever forge the request claims to be from.
SENSITIVE_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-gitlab-token",
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-gogs-signature",
        "x-slipway-token",
    }
)

_SHA_RE: Final = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_MAX_DELIVERY_ID: Final = 200


class WebhookError(Exception):
    """Reject a webhook request; ``status`` is the HTTP status to answer with."""

    status: int = 400
    reason: str = "bad request"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.reason
        super().__init__(self.message)


class MissingSignature(WebhookError):
    """Reject a request that carries no signature or token at all."""

    status = 401
    reason = "missing signature"


class BadSignature(WebhookError):
    """Reject a request whose signature or token does not match the secret."""

    status = 401
    reason = "bad signature"


class Forbidden(WebhookError):
    """Refuse a request the repository does not accept (for example: no secret set)."""

    status = 403
    reason = "forbidden"


class BadPayload(WebhookError):
    """Reject a request whose body or headers are malformed."""

    status = 400
    reason = "bad payload"


class UnknownForge(WebhookError, LookupError):
    """Reject a request for a forge name Slipway does not know."""

    status = 404
    reason = "unknown forge"


@dataclass(frozen=True)
class Commit:
    """One commit as the forge described it in the payload (not read from git)."""

    sha: str
    message: str
    author: str
    url: str | None = None
    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushEvent:
    """A verified webhook, normalised across forges.

    ``event`` is ``push`` (a branch moved), ``tag`` (a tag was created, moved or deleted),
    ``merge_request`` (a merge/pull request was opened, reopened or got new commits),
    ``ping`` (the forge checking the hook) or ``unsupported`` (anything else; see
    ``forge_event``). ``before``/``after`` are full shas, ``ZERO_SHA`` for "none" (a new
    or deleted ref) and ``""`` when the event has no commit (ping, unsupported, a generic
    trigger that names only a ref). For merge requests ``ref``/``branch`` name the source
    branch, ``after`` its head commit and ``before`` its previous head when the forge
    says so (else ``ZERO_SHA``); ``mr_head_ref`` is the ref under which the forge
    publishes the head commit in the target repository (fetch it for forks) and
    ``mr_source_repository_urls`` where the source branch lives. ``variables`` carries
    the pipeline variables a generic trigger supplied.
    """

    forge: str
    event: EventType
    ref: str
    before: str
    after: str
    branch: str | None
    tag: str | None
    repository_urls: tuple[str, ...]
    commits: tuple[Commit, ...]
    author: str
    message: str
    delivery_id: str | None
    deleted: bool
    forge_event: str = ""
    mr_number: int | None = None
    mr_source_branch: str | None = None
    mr_target_branch: str | None = None
    mr_head_ref: str | None = None
    mr_title: str | None = None
    mr_action: str | None = None
    mr_source_repository_urls: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def ignored(self) -> bool:
        """Return whether the caller should record this delivery and do nothing."""
        return self.event == "unsupported"

    def matches_repository(self, url: str) -> bool:
        """Return whether ``url`` names the same repository as one of the payload's."""
        wanted = normalise_repo_url(url)
        return any(normalise_repo_url(u) == wanted for u in self.repository_urls)


class Forge(Protocol):
    """The interface every forge module implements (modules satisfy it structurally)."""

    NAME: str

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None: ...

    def parse(self, headers: Mapping[str, str], body: bytes) -> PushEvent: ...

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None: ...

    def redact_headers(self, headers: Mapping[str, str]) -> dict[str, str]: ...


# --- headers -------------------------------------------------------------------------


def _normalise_header_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    # Django's request.META spells headers HTTP_X_GITHUB_EVENT.
    if key.startswith("http-"):
        key = key[5:]
    return key


class Headers(Mapping[str, str]):
    """Request headers indexed once by normalised name, for repeated ``header`` calls.

    A forge module looks up several headers per request; ``header`` on a plain
    mapping normalises every name on each lookup. Wrap the mapping once with this
    class and each lookup is a dictionary access, with the same answers (including
    the refusal of a header given twice with different values).
    """

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)
        self._index: dict[str, list[object]] = {}
        for key, value in self._headers.items():
            if isinstance(key, str):
                self._index.setdefault(_normalise_header_name(key), []).append(value)

    def __getitem__(self, key: str) -> str:
        return self._headers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def lookup(self, name: str) -> list[object]:
        """Return every value given for ``name`` (case-insensitive, any spelling)."""
        return self._index.get(_normalise_header_name(name), [])


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Return the value of header ``name`` (case-insensitive), or ``None``.

    Raise :class:`BadPayload` when the mapping holds the header twice, spelled
    differently, with different values: a request must not smuggle a second signature.
    """
    if isinstance(headers, Headers):
        values = headers.lookup(name)
        if not values:
            return None
        if any(not isinstance(value, str) for value in values):
            raise BadPayload(f"header {name} is not text")
        if any(value != values[0] for value in values):
            raise BadPayload(f"header {name} is given twice with different values")
        return str(values[0])
    wanted = _normalise_header_name(name)
    found: str | None = None
    for key, value in headers.items():
        if not isinstance(key, str) or _normalise_header_name(key) != wanted:
            continue
        if not isinstance(value, str):
            raise BadPayload(f"header {name} is not text")
        if found is not None and found != value:
            raise BadPayload(f"header {name} is given twice with different values")
        found = value
    return found


def first_header(headers: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """Return ``(name, value)`` of the first of ``names`` present, or ``None``."""
    for name in names:
        value = header(headers, name)
        if value is not None:
            return name, value
    return None


def redact(headers: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """Return a copy of ``headers`` with credential values replaced by ``[redacted]``."""
    sensitive = SENSITIVE_HEADERS | {_normalise_header_name(n) for n in extra}
    out: dict[str, str] = {}
    for key, value in headers.items():
        name = str(key)
        if _normalise_header_name(name) in sensitive:
            out[name] = REDACTED
        else:
            out[name] = str(value)
    return out


# --- signatures ------------------------------------------------------------------------


def _as_bytes(value: str) -> bytes:
    # hmac.compare_digest only takes ASCII str; header values can be anything.
    return value.encode("utf-8", "surrogatepass")


def require_secret(secret: str) -> None:
    """Raise :class:`Forbidden` when no secret is configured: never accept unsigned."""
    if not secret:
        raise Forbidden("no webhook secret is configured for this repository")


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return hmac.new(_as_bytes(secret), body, "sha256").hexdigest()


def check_hmac(given: str, secret: str, body: bytes, *, prefix: str = "") -> None:
    """Raise :class:`BadSignature` unless ``given`` is ``prefix`` + the body's HMAC."""
    value = given.strip()
    if prefix:
        if not value.lower().startswith(prefix):
            raise BadSignature(f"signature must start with {prefix!r}")
        value = value[len(prefix) :]
    expected = hmac_sha256_hex(secret, body)
    if not hmac.compare_digest(_as_bytes(value.lower()), expected.encode("ascii")):
        raise BadSignature()


def check_token(given: str, secret: str) -> None:
    """Raise :class:`BadSignature` unless ``given`` equals ``secret`` (constant time)."""
    if not hmac.compare_digest(_as_bytes(given), _as_bytes(secret)):
        raise BadSignature("token does not match")


# --- payload access ----------------------------------------------------------------


def load_json(body: bytes) -> dict[str, object]:
    """Decode a JSON object body or raise :class:`BadPayload`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadPayload(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload("body must be a JSON object")
    return data


_MISSING: Final = object()


def _lookup(data: Mapping[str, object], path: str) -> object:
    value: object = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def get_str(data: Mapping[str, object], path: str) -> str:
    """Return the string at dotted ``path`` or raise :class:`BadPayload` naming it."""
    value = _lookup(data, path)
    if value is _MISSING or value is None:
        raise BadPayload(f"missing field {path}")
    if not isinstance(value, str):
        raise BadPayload(f"field {path} must be a string")
    return value


def opt_str(data: Mapping[str, object], path: str) -> str | None:
    """Return the string at ``path``, ``None`` if absent or null; reject other types."""
    value = _lookup(data, path)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, str):
        raise BadPayload(f"field {path} must be a string")
    return value


def get_int(data: Mapping[str, object], path: str) -> int:
    """Return the integer at ``path`` or raise :class:`BadPayload` naming it."""
    value = _lookup(data, path)
    if value is _MISSING or value is None:
        raise BadPayload(f"missing field {path}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadPayload(f"field {path} must be an integer")
    return value


def get_obj(data: Mapping[str, object], path: str) -> Mapping[str, object]:
    """Return the object at ``path`` or raise :class:`BadPayload` naming it."""
    value = _lookup(data, path)
    if value is _MISSING or value is None:
        raise BadPayload(f"missing field {path}")
    if not isinstance(value, Mapping):
        raise BadPayload(f"field {path} must be an object")
    return value


def opt_obj(data: Mapping[str, object], path: str) -> Mapping[str, object] | None:
    """Return the object at ``path``, ``None`` if absent or null."""
    value = _lookup(data, path)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadPayload(f"field {path} must be an object")
    return value


def opt_list(data: Mapping[str, object], path: str) -> list[object]:
    """Return the list at ``path``, ``[]`` if absent or null."""
    value = _lookup(data, path)
    if value is _MISSING or value is None:
        return []
    if not isinstance(value, list):
        raise BadPayload(f"field {path} must be a list")
    return value


def get_sha(data: Mapping[str, object], path: str) -> str:
    """Return the full commit sha at ``path`` (lower-cased) or raise BadPayload."""
    return check_sha(get_str(data, path), path)


def check_sha(value: str, path: str) -> str:
    """Return ``value`` lower-cased if it is a full sha-1/sha-256 hex id."""
    sha = value.strip().lower()
    if not _SHA_RE.match(sha):
        raise BadPayload(f"field {path} must be a full commit sha")
    return sha


def check_ref(value: str, path: str) -> str:
    """Return ``value`` if it is a plausible git ref name, else raise BadPayload."""
    if (
        not value
        or len(value) > 1024
        or value.startswith("-")
        or any(ord(c) < 32 or c in " ~^:?*[\\\x7f" for c in value)
        or ".." in value
        or "@{" in value
    ):
        raise BadPayload(f"field {path} is not a valid git ref")
    return value


def path_list(data: Mapping[str, object], path: str) -> tuple[str, ...]:
    """Return the list of strings at ``path`` as a tuple (absent means empty)."""
    items = opt_list(data, path)
    if not all(isinstance(i, str) for i in items):
        raise BadPayload(f"field {path} must be a list of strings")
    return tuple(str(i) for i in items)


def split_ref(ref: str) -> tuple[str | None, str | None]:
    """Return ``(branch, tag)`` for a full ref; both ``None`` for other refs."""
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/") :], None
    if ref.startswith("refs/tags/"):
        return None, ref[len("refs/tags/") :]
    return None, None


def unique(values: Iterable[str | None]) -> tuple[str, ...]:
    """Return the non-empty values once each, in first-seen order."""
    seen: dict[str, None] = {}
    for value in values:
        if value:
            seen.setdefault(value, None)
    return tuple(seen)


def clean_delivery_id(value: str | None) -> str | None:
    """Return a delivery id fit to store (printable, bounded), or ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_DELIVERY_ID or not value.isprintable():
        return None
    return value


def unsupported(forge: str, forge_event: str, delivery: str | None) -> PushEvent:
    """Return the event for a request Slipway records but does not act on."""
    return PushEvent(
        forge=forge,
        event="unsupported",
        ref="",
        before="",
        after="",
        branch=None,
        tag=None,
        repository_urls=(),
        commits=(),
        author="",
        message="",
        delivery_id=delivery,
        deleted=False,
        forge_event=forge_event,
    )


_SCP_RE: Final = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")


def normalise_repo_url(url: str) -> str:
    """Return a comparable form of a clone URL: ``host/path`` lower-cased, no ``.git``.

    ``https://github.com/A/B.git``, ``git@github.com:A/B.git`` and
    ``ssh://git@github.com/A/B`` all become ``github.com/a/b``; a bare ``owner/name``
    stays ``owner/name``; local paths and ``file://`` URLs become the plain path.
    """
    value = url.strip()
    lowered = value.lower()
    if lowered.startswith("file://"):
        path = value[len("file://") :]
        host = ""
    elif "://" in value:
        rest = value.split("://", 1)[1]
        netloc, _, path = rest.partition("/")
        host = netloc.rsplit("@", 1)[-1].split(":", 1)[0].lower()
    elif (m := _SCP_RE.match(value)) and not value.startswith("/"):
        host, path = m.group(1).lower(), m.group(2)
    else:
        host, path = "", value
    path = path.strip("/")
    if path.lower().endswith(".git"):
        path = path[:-4]
    path = path.rstrip("/")
    if not host:
        return (
            ("/" + path)
            if value.startswith("/") or lowered.startswith("file://")
            else path.lower()
        )
    return f"{host}/{path.lower()}"
