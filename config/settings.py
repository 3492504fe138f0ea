"""Slipway settings, read from the environment (see docs/configuration.md)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url

from .env import (
    SettingError,
    env_bool,
    env_choice,
    env_fernet_keys,
    env_int,
    env_list,
    env_str,
    raw,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SLIPWAY_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEV_SECRET_KEY = "slipway-insecure-development-key-do-not-use-in-production"
DEV_ENCRYPTION_KEY = "c2xpcHdheS1pbnNlY3VyZS1kZXZlbG9wbWVudC1rZXk="

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
# Fernet keys, newest first; older keys still decrypt (rotation).
ENCRYPTION_KEYS = env_fernet_keys("SLIPWAY_ENCRYPTION_KEY", [DEV_ENCRYPTION_KEY])
if not DEBUG:
    if SECRET_KEY == DEV_SECRET_KEY:
        raise SettingError("SECRET_KEY must be set when DEBUG is off")
    if DEV_ENCRYPTION_KEY in ENCRYPTION_KEYS:
        raise SettingError("SLIPWAY_ENCRYPTION_KEY must be set when DEBUG is off")
if len(SECRET_KEY) < 32:
    raise SettingError("SECRET_KEY must be at least 32 characters long")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SLIPWAY_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "pipelines",
    "clusters",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "core.ratelimit.RateLimitMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.slipway",
            ],
        },
    },
]

# Database: SQLite under var/ by default, PostgreSQL (or any dj-database-url URL) in
# production.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'slipway.sqlite3'}")
try:
    _db = dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0)
    )
except Exception as exc:  # dj-database-url raises several types for bad URLs.
    raise SettingError(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes share the file: WAL lets readers run beside one writer, the
    # busy timeout and IMMEDIATE transactions make writers queue instead of failing
    # with "database is locked".
    try:
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError(
            f"DATABASE_URL: cannot create the directory of {_db['NAME']}: "
            f"{exc.strerror}"
        ) from None
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _test_name = raw("SLIPWAY_TEST_DB_NAME")
    if _test_name:
        _db["TEST"] = {"NAME": _test_name}
elif _db["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_POOL", True):
    # Under ASGI every request runs in a fresh thread, so persistent connections do
    # not survive it: a pool keeps server connections open across requests. Django
    # checks each connection before lending it (dead ones after a restart).
    # A running job holds two connections (its task thread and its log writer, seen
    # in pg_stat_activity), so a threads-pool worker of -c N needs 2N plus a few for
    # its short tasks; a smaller pool stalls jobs on PoolTimeout. The Procfile's -c
    # is SLIPWAY_WORKER_CONCURRENCY; a -c given on the command line is not seen here.
    _concurrency = env_int("SLIPWAY_WORKER_CONCURRENCY", 4, minimum=1)
    _db["CONN_MAX_AGE"] = 0
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 1, minimum=0),
        "max_size": env_int(
            "DB_POOL_MAX_SIZE", max(10, 2 * _concurrency + 2), minimum=1
        ),
        "timeout": 10,
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6479/0")
if urlparse(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise SettingError(
        f"REDIS_URL must start with redis://, rediss:// or unix://: {REDIS_URL!r}"
    )

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "slipway",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # channels_redis blocks 5 s in BZPOPMIN per receive; redis-py's default
            # 5 s socket timeout would fire first and drop every idle socket.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "prefix": "slipway:layer",
            "capacity": 1000,
        },
    }
}

# Celery: Redis as the broker; results are not stored (the database is the truth).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Threads, not prefork: a job is a subprocess the worker supervises through pipes, so
# a slot spends its time waiting on I/O, and one process with N threads costs one
# Python heap instead of 1 + N (~110 MiB each). Cancel and timeouts never relied on
# Celery's time limits or revoke(terminate=True), which only prefork supports: the
# executor kills the job's process group itself. SLIPWAY_WORKER_POOL=prefork restores
# the old model (for CPU-heavy deploy steps, say).
CELERY_WORKER_POOL = env_choice(
    "SLIPWAY_WORKER_POOL", "threads", ("threads", "prefork", "solo")
)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "reap-lapsed-jobs": {"task": "pipelines.reap_lapsed_jobs", "schedule": 5.0},
    # A tick nobody picked up in time is dropped: the next one does its work.
    "tick-schedules": {
        "task": "pipelines.tick_schedules",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    "poll-repositories": {
        "task": "pipelines.poll_repositories",
        "schedule": 15.0,
        "options": {"expires": 15},
    },
    "expire-artifacts": {
        "task": "pipelines.expire_artifacts",
        "schedule": 3600.0,
        "options": {"expires": 3600},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("SLIPWAY_STATIC_ROOT", str(VAR_DIR / "staticfiles")))
MEDIA_ROOT = Path(env_str("SLIPWAY_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Serve static files straight from static/ when collectstatic has not run (tests, dev);
# otherwise serve the collected, compressed copies.
WHITENOISE_USE_FINDERS = DEBUG or not STATIC_ROOT.exists()
WHITENOISE_AUTOREFRESH = DEBUG

# Security. Cookies are secure when Slipway is served over HTTPS.
_https = SITE_URL.startswith("https://")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _https)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", _https)
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# uvicorn reads FORWARDED_ALLOW_IPS itself and takes a malformed entry for a literal
# host name that never matches: check it here, so a typo stops start-up instead of
# silently turning the client addresses into the proxy's.
for _entry in env_list("FORWARDED_ALLOW_IPS", []):
    if _entry == "*":
        continue
    try:
        ipaddress.ip_network(_entry, strict=False)
    except ValueError:
        raise SettingError(
            f"FORWARDED_ALLOW_IPS: {_entry!r} is not an IP address or network "
            "(e.g. 10.0.0.5 or 10.244.0.0/16)"
        ) from None
if env_bool("SLIPWAY_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# The REST API (docs/api.md): bearer tokens first, so an unauthenticated request
# gets 401 with WWW-Authenticate; roles and token scopes checked on every view.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "core.api_views.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "core.api.RolePermission",
        "core.api.TokenScopePermission",
    ],
    "DEFAULT_PAGINATION_CLASS": "core.api.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Slipway API",
    "DESCRIPTION": "Pipelines, runs, jobs, clusters and deployments.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["core.api.RolePermission"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Vendored Swagger UI (drf-spectacular-sidecar): no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "pipelines.models.Run.Status",
        "JobStatusEnum": "pipelines.models.Job.Status",
        "DeploymentStatusEnum": "pipelines.models.Deployment.Status",
        "DeploymentKindEnum": "pipelines.models.Deployment.Kind",
    },
}

# Slipway's own knobs.
SLIPWAY = {
    "MIRROR_DIR": Path(env_str("SLIPWAY_MIRROR_DIR", str(VAR_DIR / "mirrors"))),
    "WORKSPACE_DIR": Path(
        env_str("SLIPWAY_WORKSPACE_DIR", str(VAR_DIR / "workspaces"))
    ),
    "LOG_MAX_BYTES": env_int("SLIPWAY_LOG_MAX_BYTES", 64 * 1024 * 1024, minimum=1024),
    "ARTIFACT_MAX_BYTES": env_int(
        "SLIPWAY_ARTIFACT_MAX_BYTES", 256 * 1024 * 1024, minimum=1024
    ),
    "WEBHOOK_MAX_BYTES": env_int("SLIPWAY_WEBHOOK_MAX_BYTES", 25 * 1024 * 1024),
    "HEARTBEAT_SECONDS": env_int("SLIPWAY_HEARTBEAT_SECONDS", 10, minimum=1),
    "HEARTBEAT_LAPSE_SECONDS": env_int(
        "SLIPWAY_HEARTBEAT_LAPSE_SECONDS", 45, minimum=2
    ),
    "EXECUTORS": env_list("SLIPWAY_EXECUTORS", ["shell", "docker", "kubernetes"]),
    "METRICS_TOKEN": env_str("SLIPWAY_METRICS_TOKEN", ""),
    # The kubernetes executor runs jobs as pods in this registered cluster.
    "K8S_EXECUTOR_CLUSTER": env_str("SLIPWAY_K8S_EXECUTOR_CLUSTER", ""),
    "K8S_EXECUTOR_NAMESPACE": env_str("SLIPWAY_K8S_EXECUTOR_NAMESPACE", ""),
    "K8S_EXECUTOR_IMAGE": env_str("SLIPWAY_K8S_EXECUTOR_IMAGE", ""),
    # Fixed-window limits, "<count>/<period>" (core/ratelimit.py); "0" turns off.
    "RATELIMIT_LOGIN": env_str("SLIPWAY_RATELIMIT_LOGIN", "10/min"),
    "RATELIMIT_HOOKS": env_str("SLIPWAY_RATELIMIT_HOOKS", "600/min"),
}
for _name in ("RATELIMIT_LOGIN", "RATELIMIT_HOOKS"):
    if not re.fullmatch(
        r"\s*(0|off|(\d+)\s*/\s*(\d+|s|sec|m|min|h|hour|d))?\s*",
        SLIPWAY[_name].lower(),
    ):
        raise SettingError(
            f"SLIPWAY_{_name} must look like 10/min or 600/60, or be 0 for no limit"
        )
DATA_UPLOAD_MAX_MEMORY_SIZE = SLIPWAY["WEBHOOK_MAX_BYTES"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
