"""Repository access: a bare mirror cache per repository, and job workspaces.

Plain functions and classes over explicit paths (no settings, no Django), running the
``git`` command (no GitPython: its import alone costs every Slipway process ~14 MiB, and
reading a commit and a file through one ``git cat-file --batch-command`` is one process
instead of two). One :class:`Mirror` per repository lives at ``<cache_dir>/<key>.git``:

- :meth:`Mirror.fetch` creates it on first use and updates branches and tags (pruning
  deleted ones). Concurrent callers, in any process on the machine, are serialised by an
  ``flock`` on ``<cache_dir>/<key>.lock``; readers never take the lock (git updates refs
  atomically and never rewrites objects in place).
- :meth:`Mirror.resolve`, :meth:`Mirror.read_file`, :meth:`Mirror.changed_files`,
  :meth:`Mirror.commit_info`, :meth:`Mirror.read_commit`, :meth:`Mirror.has_commit`,
  :meth:`Mirror.branches` and :meth:`Mirror.tags` read it.
- :meth:`Mirror.checkout` makes a job workspace: a real git checkout (with ``.git``) of
  one commit, detached, borrowing the mirror's objects.

Credentials never touch the URL stored on disk, the command line or an error message:
:func:`credentials_env` builds the environment that carries them (an HTTP
``Authorization`` header through ``GIT_CONFIG_*`` variables, or an SSH deploy key file),
and the caller passes it as ``Mirror(..., env=...)``.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Final
from urllib.parse import urlsplit

ZERO_SHA: Final = "0" * 40

FETCH_REFSPECS: Final = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")

_SHA_RE: Final = re.compile(r"^[0-9a-f]{7,64}$")
_FULL_SHA_RE: Final = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SCP_URL_RE: Final = re.compile(
    r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/\\].*|^[A-Za-z0-9.-]+:[^/\\].*"
)
_URL_USERINFO: Final = re.compile(r"://[^/@\s]+@")
_AUTH_HEADER: Final = re.compile(r"(?i)(authorization:\s*)\S+(\s+\S+)?")

# Protocols git may use for any command we run; notably not ext:: or fd::.
_ALLOWED_PROTOCOLS: Final = "file:git:http:https:ssh"


class GitError(Exception):
    """A git operation failed; the message is safe to show (no credentials)."""


class FileTooLarge(GitError):
    """The file exists but is larger than the caller's limit."""


class UnknownCommit(GitError):
    """The mirror does not hold this commit (yet: a fetch may bring it)."""


@dataclass(frozen=True)
class CommitInfo:
    """What a run page shows about a commit."""

    sha: str
    message: str
    author_name: str
    author_email: str
    committed_at: datetime


def _redact(text: str, secrets: Sequence[str] = ()) -> str:
    text = _URL_USERINFO.sub("://[redacted]@", text)
    text = _AUTH_HEADER.sub(r"\1[redacted]", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def validate_url(url: str) -> str:
    """Return ``url`` if it is a clone URL Slipway accepts, else raise GitError.

    Accepted: ``https://``, ``http://``, ``ssh://``, ``git://``, ``file://``, scp-like
    ``git@host:path`` and absolute local paths. Rejected: credentials in the URL (pass
    them through :func:`credentials_env`), option-like values and other transports.
    """
    value = url.strip()
    if not value or value.startswith("-") or any(ord(c) < 32 for c in value):
        raise GitError("repository URL is empty or malformed")
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("https", "http", "ssh", "git", "file"):
            raise GitError(f"unsupported URL scheme {parts.scheme!r}")
        if parts.password is not None:
            raise GitError("credentials must not be part of the repository URL")
        if parts.scheme.lower() in ("https", "http") and parts.username:
            raise GitError("credentials must not be part of the repository URL")
        return value
    if value.startswith("/"):
        return value
    if _SCP_URL_RE.match(value) and "::" not in value:
        return value
    raise GitError("repository URL must be https://, ssh://, git@host:path or a path")


def split_credentials(url: str) -> tuple[str, str | None]:
    """Return ``(url without userinfo, password or None)`` for an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=host).geturl(), parts.password or parts.username


def credentials_env(
    token: str | None,
    ssh_key: str | None,
    tmpdir: Path,
    *,
    username: str = "x-access-token",
) -> dict[str, str]:
    """Return environment variables that authenticate git without touching the URL.

    ``token`` becomes an ``http.extraHeader`` (Basic ``username:token``, which GitHub,
    GitLab and Gitea all accept for tokens) set through ``GIT_CONFIG_COUNT`` /
    ``GIT_CONFIG_KEY_n`` / ``GIT_CONFIG_VALUE_n``, so it is neither written to any
    config file nor visible in the command line. ``ssh_key`` (a private key's text) is
    written to a 0600 file in ``tmpdir`` and used through ``GIT_SSH_COMMAND``. The caller
    owns ``tmpdir`` and deletes it afterwards.
    """
    env: dict[str, str] = {"GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}
    if token:
        basic = base64.b64encode(f"{username}:{token}".encode()).decode("ascii")
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    if ssh_key:
        tmpdir.mkdir(parents=True, exist_ok=True)
        key_path = tmpdir / "deploy_key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # OpenSSH rejects a key file without the final newline.
            fh.write(ssh_key.strip() + "\n")
        os.chmod(key_path, 0o600)
        env["GIT_SSH_COMMAND"] = " ".join(
            [
                "ssh",
                "-i",
                shlex.quote(str(key_path)),
                "-o IdentitiesOnly=yes",
                "-o StrictHostKeyChecking=accept-new",
                "-o BatchMode=yes",
            ]
        )
    return env


class Mirror:
    """A bare mirror of one repository in a local cache directory."""

    def __init__(
        self,
        cache_dir: Path,
        key: str,
        url: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> None:
        """Describe the mirror ``<cache_dir>/<key>.git`` of ``url``; touch nothing yet.

        ``key`` names the mirror on disk (letters, digits, ``._-``; e.g. the repository
        id). ``env`` holds credentials from :func:`credentials_env`; ``timeout`` bounds
        each network command in seconds.
        """
        if not _KEY_RE.match(key) or ".." in key:
            raise ValueError(f"invalid mirror key {key!r}")
        self.cache_dir = Path(cache_dir)
        self.key = key
        self.url = validate_url(url)
        self.path = self.cache_dir / f"{key}.git"
        self.lock_path = self.cache_dir / f"{key}.lock"
        self.env = dict(env or {})
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Mirror({str(self.path)!r}, url={_redact(self.url)!r})"

    # --- running git --------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        return {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": _ALLOWED_PROTOCOLS,
            **self.env,
        }

    def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = None,
        strip: bool = True,
    ) -> str:
        """Run ``git args...`` and return stdout; raise GitError with stderr redacted.

        The command runs in its own process group, so a timeout also ends the helpers
        git started (``git-remote-https``, ``ssh``).
        """
        name = next((a for a in args if not a.startswith("-") and "=" not in a), "")
        try:
            proc = subprocess.Popen(
                ["git", *args],
                cwd=str(cwd or self.path),
                env={**os.environ, **self._environment()},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise GitError(f"git {name} failed: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise GitError(f"git {name} timed out after {timeout:.0f} s") from None
        except BaseException:
            _kill_group(proc)
            raise
        if proc.returncode:
            stderr = err.decode("utf-8", "replace").strip()
            secrets = [
                v for k, v in self.env.items() if k.startswith("GIT_CONFIG_VALUE")
            ]
            raise GitError(
                f"git {name} failed: "
                f"{_redact(stderr, secrets) or 'exit ' + str(proc.returncode)}"
            )
        text = out.decode("utf-8", "replace")
        if strip and text.endswith("\n"):
            text = text[:-1]
        return text

    def _require(self) -> None:
        if not (self.path / "HEAD").exists():
            raise GitError(f"mirror {self.key} has not been fetched yet")

    @contextmanager
    def _objects(self) -> Iterator[_ObjectReader]:
        """Yield a reader over one ``git cat-file --batch-command`` process."""
        self._require()
        proc = subprocess.Popen(
            ["git", "cat-file", "--batch-command"],
            cwd=str(self.path),
            env={**os.environ, **self._environment()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield _ObjectReader(proc)
        except BrokenPipeError:
            raise GitError(f"git cat-file failed in mirror {self.key}") from None
        finally:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                _kill_group(proc)

    @contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise GitError(
                            f"timed out waiting for the lock on mirror {self.key}"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            # Closing the descriptor releases the lock, also when the process dies.
            os.close(fd)

    # --- writing ------------------------------------------------------------------

    def fetch(self, extra_refspecs: Sequence[str] = ()) -> None:
        """Create the mirror if missing, then fetch branches and tags, pruning deleted.

        Safe to call from many processes at once: they take turns on the lock file.
        ``extra_refspecs`` fetches more refs in the same round trip (for example
        ``+refs/pull/7/head:refs/pull/7/head`` for a merge request from a fork).
        """
        for spec in extra_refspecs:
            if spec.startswith("-") or any(ord(c) < 33 for c in spec):
                raise GitError(f"invalid refspec {spec!r}")
        with self._locked(self.timeout + 60):
            if not (self.path / "HEAD").exists():
                self._create(extra_refspecs)
                return
            if self._git("config", "--get", "remote.origin.url") != self.url:
                self._git("config", "remote.origin.url", self.url)
            self._fetch(self.path, extra_refspecs)

    def _fetch(self, repo: Path, extra_refspecs: Sequence[str]) -> None:
        self._git(
            "fetch",
            "--prune",
            "--force",
            "--quiet",
            "--no-write-fetch-head",
            "origin",
            *FETCH_REFSPECS,
            *extra_refspecs,
            cwd=repo,
            timeout=self.timeout,
        )

    def _create(self, extra_refspecs: Sequence[str]) -> None:
        # Build and fill the mirror in a temporary directory, then rename it into
        # place: a failed or interrupted first fetch never leaves a half-made mirror.
        # We init + fetch rather than `clone --mirror`: the result is the same bare
        # repository without refs/pull/* and refs/merge-requests/* (thousands on busy
        # forges), and one fetch code path serves both cases.
        tmp = self.cache_dir / f".{self.key}.git.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._git("init", "--bare", "--quiet", str(tmp), cwd=self.cache_dir)
            for key, value in (
                ("remote.origin.url", self.url),
                ("remote.origin.fetch", FETCH_REFSPECS[0]),
                ("gc.autoDetach", "false"),
            ):
                self._git("config", key, value, cwd=tmp)
            self._git(
                "config", "--add", "remote.origin.fetch", FETCH_REFSPECS[1], cwd=tmp
            )
            self._fetch(tmp, extra_refspecs)
            os.rename(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # --- reading ------------------------------------------------------------------

    def _rev_parse(self, expr: str) -> str | None:
        try:
            out = self._git(
                "rev-parse", "--verify", "--quiet", "--end-of-options", expr
            )
        except GitError:
            return None
        return out.strip() or None

    def resolve(self, ref: str) -> str:
        """Return the full commit sha for a branch, tag, ``refs/...`` name or sha.

        A bare name is looked up as a branch first, then as a tag (CI users mean the
        branch when both exist). Revision expressions (``main~1``, ``@{u}``) are refused.
        """
        self._require()
        name = ref.strip()
        if (
            not name
            or name.startswith("-")
            or ".." in name
            or "@{" in name
            or any(ord(c) < 33 or c in "~^:?*[\\\x7f" for c in name)
        ):
            raise GitError(f"invalid ref {ref[:100]!r}")
        if name.startswith("refs/"):
            candidates = [name]
        else:
            candidates = [f"refs/heads/{name}", f"refs/tags/{name}"]
            if _SHA_RE.match(name.lower()):
                candidates.insert(0, name.lower())
        for candidate in candidates:
            sha = self._rev_parse(f"{candidate}^{{commit}}")
            if sha:
                return sha
        raise GitError(f"unknown ref {name!r}")

    def _commit_sha(self, sha: str) -> str:
        value = sha.strip().lower()
        if not _FULL_SHA_RE.match(value):
            raise GitError(f"not a full commit sha: {sha[:80]!r}")
        return value

    def read_file(self, sha: str, path: str, max_bytes: int) -> str | None:
        """Return the UTF-8 text of ``path`` at commit ``sha``, or None if it is absent.

        Raise :class:`FileTooLarge` above ``max_bytes`` and GitError for an unknown
        commit or a file that is not UTF-8. A directory or submodule at ``path`` counts
        as absent.
        """
        commit_sha = self._commit_sha(sha)
        clean = _clean_path(path)
        with self._objects() as objects:
            found = objects.info(commit_sha)
            if found is None or found[1] != "commit":
                raise UnknownCommit(f"unknown commit {commit_sha}")
            return objects.text(f"{commit_sha}:{clean}", clean, max_bytes)

    def changed_files(self, base: str | None, head: str) -> list[str]:
        """Return the paths that differ between ``base`` and ``head``, sorted.

        ``base`` None, all zeros (a new branch) or not in the mirror (a force push whose
        old head was never fetched) means: ``head`` against its first parent, or every
        file of ``head`` for a root commit. Renames count as a deletion plus an addition.
        """
        head_sha = self._commit_sha(head)
        diff = (
            "diff-tree",
            "-r",
            "-z",
            "--no-commit-id",
            "--name-only",
            "--no-renames",
        )
        if base and base.strip("0"):
            # The usual push: both commits are here, one process answers.
            candidate = self._commit_sha(base)
            try:
                out = self._git(
                    *diff,
                    f"{candidate}^{{commit}}",
                    f"{head_sha}^{{commit}}",
                    strip=False,
                )
                return sorted({p for p in out.split("\0") if p})
            except GitError:
                pass  # Either is unknown: find out which below.
        if not self._rev_parse(f"{head_sha}^{{commit}}"):
            raise GitError(f"unknown commit {head_sha}")
        base_sha: str | None = None
        if base and base.strip("0"):
            candidate = self._commit_sha(base)
            base_sha = self._rev_parse(f"{candidate}^{{commit}}")
        if base_sha is None:
            base_sha = self._rev_parse(f"{head_sha}^1")
        if base_sha is None:
            out = self._git("ls-tree", "-r", "-z", "--name-only", head_sha, strip=False)
        else:
            out = self._git(*diff, base_sha, head_sha, strip=False)
        return sorted({p for p in out.split("\0") if p})

    def _refs(self, prefix: str) -> dict[str, str]:
        self._require()
        out = self._git(
            "for-each-ref",
            "--format=%(objectname) %(*objectname) %(refname)",
            prefix,
        )
        refs: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split(" ", 2)
            if len(parts) != 3:
                continue
            obj, peeled, refname = parts
            # For annotated tags %(*objectname) is the tagged commit.
            refs[refname[len(prefix) :]] = peeled or obj
        return refs

    def branches(self) -> dict[str, str]:
        """Return ``{branch name: commit sha}`` for every branch in the mirror."""
        return self._refs("refs/heads/")

    def tags(self) -> dict[str, str]:
        """Return ``{tag name: commit sha}`` (annotated tags peeled to their commit)."""
        return self._refs("refs/tags/")

    def commit_info(self, sha: str) -> CommitInfo:
        """Return message, author and commit time of ``sha``; GitError if unknown."""
        commit_sha = self._commit_sha(sha)
        with self._objects() as objects:
            return objects.commit(commit_sha)

    def read_commit(
        self, sha: str, path: str, max_bytes: int
    ) -> tuple[CommitInfo, str | None]:
        """Return :meth:`commit_info` and :meth:`read_file` of ``sha`` from one process.

        Starting a run needs both; one ``cat-file`` saves a process per run. Raise
        :class:`UnknownCommit` when the mirror lacks the commit (fetch, then ask again).
        """
        commit_sha = self._commit_sha(sha)
        clean = _clean_path(path)
        if not (self.path / "HEAD").exists():
            raise UnknownCommit(f"mirror {self.key} has not been fetched yet")
        with self._objects() as objects:
            info = objects.commit(commit_sha)
            return info, objects.text(f"{commit_sha}:{clean}", clean, max_bytes)

    def has_commit(self, sha: str) -> bool:
        """Return whether the mirror holds commit ``sha`` (a full sha), without a fetch.

        A commit never changes, so a run whose commit is here already needs no fetch.
        """
        try:
            commit_sha = self._commit_sha(sha)
        except GitError:
            return False
        if not (self.path / "HEAD").exists():
            return False
        with self._objects() as objects:
            found = objects.info(commit_sha)
        return found is not None and found[1] == "commit"

    # --- workspaces ---------------------------------------------------------------

    def checkout(self, sha: str, dest: Path, *, self_contained: bool = False) -> None:
        """Create a detached git checkout of commit ``sha`` in ``dest``.

        ``dest`` must not exist or be empty. The workspace is a real repository
        (``.git``, remote-tracking branches as of now, origin pointing at the mirror)
        that borrows the mirror's objects through ``objects/info/alternates``: measured
        fastest of clone --shared, a hard-linked local clone, init+fetch and a worktree.
        Later fetches do not disturb it: they only move refs, and git keeps unreferenced
        objects for ``gc.pruneExpire`` (two weeks). Pass ``self_contained=True`` when the
        workspace must work without the mirror (for example mounted alone into a
        container); that copies the objects (``--dissociate``) and costs more.
        """
        commit_sha = self._commit_sha(sha)
        self._require()
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise GitError(f"checkout destination {dest} is not empty")
        # No template (sample hooks, description) and no reflogs: a third of the
        # files, so both the checkout and the removal after the job are quicker.
        quiet = ("-c", "core.logAllRefUpdates=false")
        args = [*quiet, "clone", "--quiet", "--template=", "--shared", "--no-checkout"]
        if self_contained:
            args.append("--dissociate")
        self._git(*args, "--", str(self.path), str(dest), cwd=self.cache_dir)
        try:
            self._git(*quiet, "checkout", "--quiet", "--detach", commit_sha, cwd=dest)
        except GitError:
            shutil.rmtree(dest, ignore_errors=True)
            raise GitError(f"commit {commit_sha} is not in the mirror") from None

    def workspace(
        self,
        sha: str,
        dest: Path,
        cache_dir: Path,
        *,
        max_age: float = 300.0,
        keep: int = 4,
    ) -> None:
        """Create a workspace like :meth:`checkout`, copied from a cached checkout.

        The parallel jobs of a run (and runs of the same commit) all want the same
        tree: the first one checks it out into ``cache_dir`` (two git processes), the
        others copy that pristine checkout, which for a small repository costs no
        process at all. An entry is used for ``max_age`` seconds (its remote-tracking
        branches are as of its creation); ``keep`` entries per mirror are kept. A
        copy that fails (the entry was replaced meanwhile) falls back to a checkout.
        """
        commit_sha = self._commit_sha(sha)
        dest = Path(dest)
        entry = Path(cache_dir) / f"{self.key}-{commit_sha}"
        try:
            fresh = time.time() - entry.stat().st_mtime < max_age
        except FileNotFoundError:
            fresh = False
        if not fresh:
            self._cache_checkout(commit_sha, entry, keep)
        try:
            _copy_tree(entry, dest)
        except OSError:
            shutil.rmtree(dest, ignore_errors=True)
            self.checkout(commit_sha, dest)

    def _cache_checkout(self, sha: str, entry: Path, keep: int) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{threading.get_ident()}"
        tmp = entry.parent / f".{entry.name}.tmp-{tag}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.checkout(sha, tmp)
        try:
            os.rename(tmp, entry)
        except OSError:
            # A stale entry (or one another worker just made): move it aside, then
            # take its place; a reader copying from it falls back to a checkout.
            trash = entry.parent / f".{entry.name}.old-{tag}"
            try:
                os.rename(entry, trash)
                os.rename(tmp, entry)
            except OSError:
                pass  # Another worker won the race: use its entry.
            shutil.rmtree(trash, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
        entries = sorted(
            (p for p in entry.parent.glob(f"{self.key}-*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in entries[keep:]:
            shutil.rmtree(old, ignore_errors=True)


# A pristine checkout whose git index is below this size (~700 files) is copied in
# Python; a larger one by `cp -a` (one process, reflinks where the disk has them).
_PYTHON_COPY_MAX_INDEX = 64 * 1024


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy the checkout SRC to DEST (which must not exist); OSError on failure."""
    index = src / ".git" / "index"
    if index.stat().st_size <= _PYTHON_COPY_MAX_INDEX:
        shutil.copytree(src, dest, symlinks=True)
        return
    done = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(src), str(dest)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if done.returncode:
        raise OSError(done.stderr.decode("utf-8", "replace").strip() or "cp failed")


def _clean_path(path: str) -> str:
    clean = path.strip().strip("/")
    if (
        not clean
        or any(part in ("", ".", "..") for part in clean.split("/"))
        or any(ord(c) < 32 for c in clean)
    ):
        raise GitError(f"invalid path {path[:200]!r}")
    return clean


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


_IDENT_RE: Final = re.compile(rb"^(.*?) <(.*)> (\d+) ([+-])(\d\d)(\d\d)$")


class _ObjectReader:
    """Ask one ``git cat-file --batch-command`` process for objects, one at a time.

    Each question is answered before the next is asked, so a file's size is known
    before its content is requested: a huge blob is never read into memory.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._stdin: IO[bytes] = proc.stdin
        self._stdout: IO[bytes] = proc.stdout

    def _ask(self, command: str) -> tuple[str, str, int] | None:
        self._stdin.write(command.encode() + b"\n")
        self._stdin.flush()
        header = self._stdout.readline().decode("utf-8", "replace").split()
        if len(header) != 3 or not header[2].isdigit():
            return None  # "<name> missing" or "<name> ambiguous"
        return header[0], header[1], int(header[2])

    def info(self, name: str) -> tuple[str, str, int] | None:
        """Return (oid, type, size) of NAME, or None if the mirror lacks it."""
        return self._ask(f"info {name}")

    def contents(self, name: str) -> tuple[str, bytes] | None:
        """Return (type, bytes) of NAME, or None if the mirror lacks it."""
        header = self._ask(f"contents {name}")
        if header is None:
            return None
        data = self._stdout.read(header[2])
        self._stdout.read(1)  # The newline after every object.
        return header[1], data

    def text(self, name: str, clean: str, max_bytes: int) -> str | None:
        """Return the UTF-8 text of blob NAME; None if absent or not a file."""
        found = self.info(name)
        if found is None or found[1] != "blob":
            return None  # Absent, or a directory (tree) or submodule (commit).
        if found[2] > max_bytes:
            raise FileTooLarge(f"{clean} is {found[2]} bytes; the limit is {max_bytes}")
        blob = self.contents(found[0])
        if blob is None:
            return None
        try:
            return blob[1].decode("utf-8-sig")
        except UnicodeDecodeError:
            raise GitError(f"{clean} is not UTF-8 text") from None

    def commit(self, sha: str) -> CommitInfo:
        """Return what a run page shows about commit SHA; GitError if unknown."""
        found = self.contents(sha)
        if found is None or found[0] != "commit":
            raise UnknownCommit(f"unknown commit {sha}")
        head, _, body = found[1].partition(b"\n\n")
        encoding = "utf-8"
        author = committer = None
        for line in head.split(b"\n"):
            if line.startswith(b"author "):
                author = _IDENT_RE.match(line[7:])
            elif line.startswith(b"committer "):
                committer = _IDENT_RE.match(line[10:])
            elif line.startswith(b"encoding "):
                encoding = line[9:].decode("ascii", "replace").strip() or "utf-8"
        try:
            message = body.decode(encoding, "replace")
        except LookupError:
            message = body.decode("utf-8", "replace")
        committed_at = datetime.now(UTC)
        if committer is not None:
            sign = 1 if committer.group(4) == b"+" else -1
            offset = timedelta(
                hours=int(committer.group(5)), minutes=int(committer.group(6))
            )
            committed_at = datetime.fromtimestamp(
                int(committer.group(3)), timezone(sign * offset)
            )
        return CommitInfo(
            sha=sha,
            message=message,
            author_name=author.group(1).decode("utf-8", "replace") if author else "",
            author_email=author.group(2).decode("utf-8", "replace") if author else "",
            committed_at=committed_at,
        )
