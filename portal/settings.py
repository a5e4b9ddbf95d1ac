"""Vireo settings. Everything that differs between a laptop and production comes from the
environment (see README, "Production"); the defaults give the embedded first run: SQLite in
var/, Redis on 127.0.0.1:6379, DEBUG on, bound to 127.0.0.1."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VIREO_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("VIREO_DEBUG", True)
SECRET_KEY = os.environ.get(
    "VIREO_SECRET_KEY", "insecure-development-key-change-me" if DEBUG else ""
)
if not SECRET_KEY:
    raise RuntimeError("VIREO_SECRET_KEY must be set when VIREO_DEBUG is off")
ALLOWED_HOSTS = os.environ.get("VIREO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("VIREO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "guardian",
    "django_rq",
    "django_htmx",
    "channels",
    "portal",
    "accounts",
    "vms",
    "storage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.PermissionCacheMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"

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
                "portal.context.portal_nav",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'vireo.sqlite3'}"),
        conn_max_age=int(os.environ.get("VIREO_DB_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and monitor share the file: wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}}
# Services enqueue from their own on-commit callback (portal.tasks), so RQ enqueues at once.
RQ = {"COMMIT_MODE": "auto"}
# Each consumer blocks on Redis for channels-redis's 5 s pop; redis-py 8 defaults the socket
# timeout to the same 5 s, which killed every socket (channels_redis#422). A read timeout well
# above the pop keeps a dead Redis detectable without cutting the blocking read.
LIVE_REDIS_SOCKET_TIMEOUT = 20
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": LIVE_REDIS_SOCKET_TIMEOUT,
                    "socket_connect_timeout": 5,
                    "health_check_interval": 30,
                }
            ],
            "prefix": os.environ.get("VIREO_CHANNEL_PREFIX", "vireo"),
        },
    }
}
# How often an open websocket re-checks that its session is still valid (logout elsewhere,
# password change, account disabled).
VIREO_LIVE_SESSION_CHECK_SECONDS = float(os.environ.get("VIREO_LIVE_SESSION_CHECK_SECONDS", "60"))

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("VIREO_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
]

# How often the monitor polls every host as a fallback to libvirt events, in seconds.
VIREO_MONITOR_POLL_SECONDS = float(os.environ.get("VIREO_MONITOR_POLL_SECONDS", "5"))
# A queued or running job older than this with no live RQ job behind it is failed by the monitor.
VIREO_JOB_STALE_SECONDS = float(os.environ.get("VIREO_JOB_STALE_SECONDS", "30"))
VIREO_VMS_PER_PAGE = 50

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("VIREO_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
WHITENOISE_USE_FINDERS = DEBUG
