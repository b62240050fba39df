"""Django settings for mgecache.

Everything that differs between a laptop and production comes from the environment
(see `.env.example` and the README). With no environment at all the service runs on
embedded defaults: SQLite under `var/`, an in-process fakeredis, and Celery tasks run
in-process. Those defaults are for development and tests only.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").exists() and not os.environ.get("MGECACHE_IGNORE_DOTENV"):
    environ.Env.read_env(BASE_DIR / ".env")


def _require(name: str, why: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set {why}.")
    return value


def _number(cast: type, name: str, default: float) -> float:
    """env.int/env.float whose error names the variable (django-environ's bare ValueError does not)."""
    raw = env.str(name, default="")
    if raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {'an integer' if cast is int else 'a number'}, got {raw!r}.")


try:
    DEBUG = env.bool("DJANGO_DEBUG", default=False)
except ValueError as exc:  # django-environ raises a bare ValueError; name the variable.
    raise ImproperlyConfigured(f"DJANGO_DEBUG is not a boolean: {exc}") from exc

if DEBUG:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key")
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
else:
    # Secrets have no production default; the embedded quickstart (make run) sets
    # DJANGO_DEBUG explicitly or provides a generated key in var/.
    SECRET_KEY = _require("DJANGO_SECRET_KEY", "when DJANGO_DEBUG is false")
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG is false.")

CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework_api_key",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "cache_app",
    "batching_app",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # API paths answer JSON even for Django's own error pages.
    "cache_app.access.errors.JSONErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Admin login brute-force protection; last, as django-axes documents.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# django-axes: after AXES_FAILURE_LIMIT failed admin logins for one (username, client IP),
# that pair is locked out for AXES_COOLOFF_MINUTES. The client IP is REMOTE_ADDR (behind a
# proxy: the proxy's address, so the lock then applies to the username).
AXES_FAILURE_LIMIT = _number(int, "AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=_number(float, "AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "mgecache_site.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "mgecache_site.wsgi.application"
ASGI_APPLICATION = "mgecache_site.asgi.application"

# --- Database ---------------------------------------------------------------------------
try:
    _database_url = env.str("DATABASE_URL", default="")
    if _database_url:
        if not _database_url.startswith(("postgres://", "postgresql://", "pgsql://", "sqlite://")):
            raise ValueError("use a postgres:// (production) or sqlite:// URL")
        DATABASES = {"default": env.db("DATABASE_URL")}
    else:
        VAR_DIR.mkdir(exist_ok=True)
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}}
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is invalid: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DATABASES["default"].setdefault("CONN_MAX_AGE", _number(int, "DATABASE_CONN_MAX_AGE", 60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A down or unreachable Postgres fails a request in seconds (503), not after the OS's TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", _number(int, "DATABASE_CONNECT_TIMEOUT", 2)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
REDIS_SENTINELS = env.list("REDIS_SENTINELS", default=[])  # "host:port,host:port"
REDIS_EMBEDDED = not REDIS_URL
# A cache must never stall the pipeline: short socket timeouts bound a hung server.
REDIS_SOCKET_TIMEOUT = _number(float, "REDIS_SOCKET_TIMEOUT", 0.25)
REDIS_SOCKET_CONNECT_TIMEOUT = _number(float, "REDIS_SOCKET_CONNECT_TIMEOUT", 0.25)

_redis_options: dict = {
    "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
    "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_CONNECT_TIMEOUT,
    # Django's own cache (sessions etc.) fails open too; the cache layers have their own breaker.
    "IGNORE_EXCEPTIONS": True,
    "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
}
EMBEDDED_REDIS_SERVER: fakeredis.FakeServer | None
if REDIS_EMBEDDED:
    import fakeredis

    # One in-process server shared by every client in this process (django-redis,
    # redis.asyncio twins, Celery's result backend is not used in embedded mode).
    EMBEDDED_REDIS_SERVER = fakeredis.FakeServer()
    _redis_location = "redis://embedded/0"
    _redis_options["CONNECTION_POOL_KWARGS"] = {
        "connection_class": fakeredis.FakeRedisConnection,
        "server": EMBEDDED_REDIS_SERVER,
    }
else:
    EMBEDDED_REDIS_SERVER = None
    _redis_location = REDIS_URL
    if REDIS_SENTINELS:
        try:
            REDIS_SENTINEL_ADDRESSES = [
                (host, int(port)) for host, port in (item.rsplit(":", 1) for item in REDIS_SENTINELS)
            ]
        except ValueError as exc:
            raise ImproperlyConfigured(f"REDIS_SENTINELS must be host:port,host:port ({exc})") from exc
        _redis_options["SENTINELS"] = REDIS_SENTINEL_ADDRESSES
        _redis_options["CLIENT_CLASS"] = "django_redis.client.SentinelClient"
        DJANGO_REDIS_CONNECTION_FACTORY = "django_redis.pool.SentinelConnectionFactory"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis_location,
        "OPTIONS": _redis_options,
        "KEY_PREFIX": "mgecache-django",
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True


def _broker_default(redis_url: str) -> str:
    """The broker lives on the same Redis server as the cache, one database number up."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(redis_url)
    path = parts.path.strip("/")
    db = int(path) if path.isdigit() else 0
    return urlunsplit((parts.scheme, parts.netloc, f"/{(db + 1) % 16}", parts.query, parts.fragment))


def _sentinel_broker_default(redis_url: str) -> tuple[str, dict]:
    """With Sentinel, Celery's kombu transport takes sentinel:// URLs and the master's name."""
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    path = parts.path.strip("/")
    db = int(path) if path.isdigit() else 0
    url = ";".join(f"sentinel://{host}:{port}/{(db + 1) % 16}" for host, port in REDIS_SENTINEL_ADDRESSES)
    return url, {"master_name": parts.hostname}


# --- Celery -----------------------------------------------------------------------------
_broker_options: dict = {}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
if not CELERY_BROKER_URL and REDIS_URL:
    if REDIS_SENTINELS:
        CELERY_BROKER_URL, _broker_options = _sentinel_broker_default(REDIS_URL)
    else:
        CELERY_BROKER_URL = _broker_default(REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL  # embedded default only: tasks run in-process
CELERY_TASK_EAGER_PROPAGATES = True
if REDIS_URL and CELERY_BROKER_URL == REDIS_URL:
    raise ImproperlyConfigured("CELERY_BROKER_URL must not be the same Redis database as REDIS_URL.")
# Results (for .get() and the health/ping check) live beside the broker; they expire in an hour.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else None
)
CELERY_RESULT_EXPIRES = 3600
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = _number(int, "CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# Redelivery of an unacked (acks_late) task happens after the visibility timeout:
# it must exceed the longest task, or a running task is delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT * 4, **_broker_options}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish inside a request is bounded (about 2 s): few, short retries, and socket timeouts on
# the broker connection. A broker that stays down then fails the request with a JSON 503.
CELERY_BROKER_CONNECTION_TIMEOUT = 1.0
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BROKER_TRANSPORT_OPTIONS.update(
    {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 0.6,
        # kombu's own reconnect loop before a publish (its default retries for ~20 s).
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
        "connect_retries_timeout": 1.5,
    }
)
# Sending a task also subscribes to its result on the Redis result backend, which by default
# retries a lost connection 20 times, 1 s apart: bound that too.
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 0.5
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
}
CELERY_BEAT_SCHEDULE = {
    "reclaim-invalidated-cache-keys": {
        "task": "cache_app.tasks.reclaim_dead_keys",
        "schedule": _number(float, "MGECACHE_RECLAIM_INTERVAL_SECONDS", 3600.0),
    },
    # The operator console's dashboard history: one snapshot a minute (a late one is dropped,
    # the next minute's replaces it), and an hourly cleanup of rows past the retention.
    "console-stats-snapshot": {
        "task": "cache_app.tasks.take_stats_snapshot",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "console-snapshot-cleanup": {
        "task": "cache_app.tasks.cleanup_stats_snapshots",
        "schedule": 3600.0,
    },
}

# --- App settings -----------------------------------------------------------------------
# Documented defaults live in cache_app/core/conf.py; system checks validate them (cache_app.E0xx).
MGECACHE = {
    "KEY_PREFIX": env.str("MGECACHE_KEY_PREFIX", default="mgecache"),
    "LLM_PROVIDER": env.str("LLM_PROVIDER", default="simulated"),
    "LLM_DEFAULT_MODEL": env.str("LLM_DEFAULT_MODEL", default="claude-3-5-sonnet"),
    "EMBEDDER": env.str("MGECACHE_EMBEDDER", default="cache_app.rag.embedders.HashedNgramEmbedder"),
    "LLM_MAX_RETRIES": _number(int, "LLM_MAX_RETRIES", 2),
    "LLM_TIMEOUT_SECONDS": _number(float, "LLM_TIMEOUT_SECONDS", 60.0),
    # "host:port,host:port": the cache layers on a Redis Cluster (docs/operations.md).
    "REDIS_CLUSTER_NODES": env.list("REDIS_CLUSTER_NODES", default=[]),
}

# LLM provider credentials and endpoints (cache_app.llm.providers). Secrets have no default:
# LLM_PROVIDER=anthropic/openai without its key is a startup error (check cache_app.E020).
# An empty base URL means the SDK's own default endpoint.
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")

# --- DRF / OpenAPI ----------------------------------------------------------------------
# The pipeline authenticates with an API key (Authorization: Bearer <key>; admin "API keys" or
# manage.py create_api_key); operators with their admin session. Access rules: cache_app.access.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "cache_app.access.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view declares its permission classes; one that forgets is closed.
    "DEFAULT_PERMISSION_CLASSES": ["cache_app.access.permissions.DenyAll"],
    "DEFAULT_PARSER_CLASSES": ["cache_app.access.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "cache_app.access.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# Django's own bound on a request body held in memory (forms); JSON bodies are bounded by the
# API's parser at MGECACHE['MAX_REQUEST_BYTES'] (the same 4 MB by default).
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
SPECTACULAR_SETTINGS = {
    "TITLE": "mgecache API",
    "DESCRIPTION": "LLM prompt cache, RAG query cache and request batching for MGE V2.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["cache_app.access.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Enums stay inline where they are used (the v2 API's fields of one name hold different sets).
    "POSTPROCESSING_HOOKS": [],
}

# --- Static files, i18n -----------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Prometheus -------------------------------------------------------------------------
# Under several gunicorn workers set PROMETHEUS_MULTIPROC_DIR (see docs/operations.md).
PROMETHEUS_EXPORT_MIGRATIONS = False
# /metrics answers only "Authorization: Bearer <METRICS_TOKEN>". No default: unset, /metrics is closed.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- HTTPS and cookies (production: see docs/operations.md, "Deploying") ------------------
# DJANGO_HTTPS=true when clients reach the service over HTTPS (directly or through a TLS proxy):
# secure cookies, a redirect to HTTPS and HSTS follow, each overridable.
HTTPS = env.bool("DJANGO_HTTPS", default=False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=HTTPS)
# Probes and scrapers inside the network may use plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = _number(int, "DJANGO_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
# Behind a TLS-terminating proxy that sets this header (and strips it from clients), e.g.
# DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https
_proxy_header = env.list("DJANGO_SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_header:
    if len(_proxy_header) != 2:
        raise ImproperlyConfigured(
            "DJANGO_SECURE_PROXY_SSL_HEADER must be HEADER,value (e.g. HTTP_X_FORWARDED_PROTO,https)."
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_header[0], _proxy_header[1])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
