"""Vireo settings. Everything that differs between a laptop and production comes from the
environment (see README, "Production"); the defaults give the embedded first run: SQLite in
var/, Redis on 127.0.0.1:6379, DEBUG on, bound to 127.0.0.1."""

import os
from datetime import timedelta
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
if not DEBUG and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise RuntimeError(
        "VIREO_SECRET_KEY must be set, at least 50 random characters, when VIREO_DEBUG is off "
        "(for example: python -c 'import secrets; print(secrets.token_urlsafe(50))')"
    )
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
    "django.forms",  # the widget templates, for FORM_RENDERER on the project's template engine
    "guardian",
    "django_rq",
    "django_htmx",
    "channels",
    "axes",
    "portal",
    "accounts",
    "vms",
    "storage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.shell.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.PermissionCacheMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
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
                "portal.shell.context.portal_nav",
            ],
        },
    },
]

# Every form field renders as one field group, templates/portal/_field.html.
FORM_RENDERER = "portal.shell.forms.FormRenderer"

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
# Services enqueue from their own on-commit callback (portal.kernel.tasks), so RQ enqueues at once.
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
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out login before the others
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes): after VIREO_LOGIN_FAILURE_LIMIT wrong passwords for one user
# name from one address, logins of that name from there are refused, even with the right
# password, for VIREO_LOGIN_LOCKOUT_MINUTES (each new try during the lockout restarts it).
# `manage.py axes_reset_username NAME` lifts it early.
AXES_FAILURE_LIMIT = int(os.environ.get("VIREO_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("VIREO_LOGIN_LOCKOUT_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "portal.shell.security.lockout_response"
AXES_VERBOSE = False

# HTTPS (README, "Running in production"): each on by default when debug is off.
SECURE_SSL_REDIRECT = env_bool("VIREO_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("VIREO_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("VIREO_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("VIREO_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Asking browsers' preload lists to carry the domain is the operator's own decision.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("VIREO_SECURE_COOKIES", not DEBUG)
# The header the TLS proxy in front sets on HTTPS requests, "Name: value" ("" for none). Only
# behind a proxy that always sets (or strips) it: otherwise a client could claim HTTPS.
_proxy_header = os.environ.get(
    "VIREO_PROXY_SSL_HEADER", "" if DEBUG else "X-Forwarded-Proto: https"
)
if _proxy_header.strip():
    _name, _, _value = _proxy_header.partition(":")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip())
# Content-Security-Policy (portal.shell.security): scripts and styles from the portal only, never
# inline script; style attributes are allowed (the progress bars' widths).
CONTENT_SECURITY_POLICY = os.environ.get(
    "VIREO_CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("VIREO_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/novnc", BASE_DIR / "node_modules" / "@novnc" / "novnc"),
]

# How often the monitor polls every host as a fallback to libvirt events, in seconds.
VIREO_MONITOR_POLL_SECONDS = float(os.environ.get("VIREO_MONITOR_POLL_SECONDS", "5"))
# A queued or running job older than this with no live RQ job behind it is failed by the monitor.
VIREO_JOB_STALE_SECONDS = float(os.environ.get("VIREO_JOB_STALE_SECONDS", "30"))
# How often the monitor asks the guest agents of each host's running VMs, in seconds, and how
# many VMs of one host at most in one pass (those asked longest ago first).
VIREO_AGENT_POLL_SECONDS = float(os.environ.get("VIREO_AGENT_POLL_SECONDS", "30"))
# How often the monitor reads each Up host's devices (pci, usb_device, scsi), in seconds; it also
# reads them whenever it (re)connects to the host.
VIREO_HOST_DEVICES_POLL_SECONDS = float(os.environ.get("VIREO_HOST_DEVICES_POLL_SECONDS", "300"))
VIREO_AGENT_POLL_BATCH = int(os.environ.get("VIREO_AGENT_POLL_BATCH", "200"))
# How often the monitor's load balancer (vms/balancing.py) runs, in seconds.
VIREO_BALANCE_SECONDS = float(os.environ.get("VIREO_BALANCE_SECONDS", "60"))
# A host that has not answered a connection attempt within this many seconds is Non Responsive.
VIREO_HOST_CONNECT_TIMEOUT = float(os.environ.get("VIREO_HOST_CONNECT_TIMEOUT", "10"))
# Power Management: how long one run of a host's fence agent may take, and how long after a
# failed fence the monitor tries again (the host still Non Responsive).
VIREO_FENCE_TIMEOUT_SECONDS = float(os.environ.get("VIREO_FENCE_TIMEOUT_SECONDS", "60"))
VIREO_FENCE_RETRY_SECONDS = float(os.environ.get("VIREO_FENCE_RETRY_SECONDS", "300"))
# Where each host mounts an NFS storage domain: <root>/<pool name> (made by the pool's build).
VIREO_NFS_MOUNT_ROOT = os.environ.get("VIREO_NFS_MOUNT_ROOT", "/var/lib/vireo/mnt")
# How each host mounts an NFS domain (vdsm's defaults): a soft mount whose requests time out
# (timeo in tenths of a second, retrans tries) instead of hanging, and a mount that fails at
# its first failure (retry=0), so an NFS server that doesn't answer leaves the domain Inactive
# on that host with the error within seconds, never a job stuck in the mount.
VIREO_NFS_MOUNT_OPTIONS = tuple(
    os.environ.get(
        "VIREO_NFS_MOUNT_OPTIONS", "soft,nosharecache,timeo=100,retrans=3,retry=0"
    ).split(",")
)
# ISO uploads: the browser (or manage.py iso_upload) sends an ISO in chunks of
# VIREO_UPLOAD_CHUNK_BYTES, appended to a staging file named by a uuid in VIREO_UPLOAD_DIR (the web
# processes and the workers must share it: the upload job streams it to the hosts' pools). A
# staged upload untouched for VIREO_UPLOAD_EXPIRY_HOURS is taken away at the next upload.
VIREO_UPLOAD_DIR = Path(os.environ.get("VIREO_UPLOAD_DIR", VAR_DIR / "uploads"))
VIREO_UPLOAD_CHUNK_BYTES = int(os.environ.get("VIREO_UPLOAD_CHUNK_BYTES", str(8 << 20)))
VIREO_UPLOAD_EXPIRY_HOURS = float(os.environ.get("VIREO_UPLOAD_EXPIRY_HOURS", "24"))
# Rows a page in every list of the portal (VMs, hosts, clusters, storage, disks, events, tasks).
VIREO_PAGE_SIZE = 50
# Default quota of each user (SuperUsers excepted): VMs they create and the disk space of those
# VMs' disks. Empty: no limit. A per-user quota (Configure > Quota) overrides either.
VIREO_QUOTA_MAX_VMS = (
    int(os.environ["VIREO_QUOTA_MAX_VMS"]) if os.environ.get("VIREO_QUOTA_MAX_VMS") else None
)
VIREO_QUOTA_MAX_DISK_GIB = (
    int(os.environ["VIREO_QUOTA_MAX_DISK_GIB"])
    if os.environ.get("VIREO_QUOTA_MAX_DISK_GIB")
    else None
)
# A reboot shows Reboot In Progress for at least this long (the guest restarts meanwhile).
VIREO_REBOOT_HOLD_SECONDS = float(os.environ.get("VIREO_REBOOT_HOLD_SECONDS", "2"))
# The demo (`make run`): users may add libvirt test-driver hosts, only the demo's own node
# files under VAR_DIR/demo (vms.host_address). On by default with debug, off in production.
VIREO_DEMO = env_bool("VIREO_DEMO", DEBUG)
# Hosts by qemu+tcp:// (unencrypted, unauthenticated unless SASL is set up): off by default.
VIREO_ALLOW_TCP_HOSTS = env_bool("VIREO_ALLOW_TCP_HOSTS", False)

# Consoles (docs/console.md): how long a console ticket (a one-time graphics password) is
# valid, in seconds; the address the graphics of the VMs Vireo defines listen on ("": 127.0.0.1,
# which the web process reaches on a local host directly and on a qemu+ssh host through an SSH
# tunnel it opens; an address of the host, or 0.0.0.0: reached directly, by remote-viewer too).
VIREO_CONSOLE_TICKET_SECONDS = int(os.environ.get("VIREO_CONSOLE_TICKET_SECONDS", "120"))
VIREO_CONSOLE_LISTEN = os.environ.get("VIREO_CONSOLE_LISTEN", "")
# A console lock whose websocket has not said it is alive for this long is free for the next.
VIREO_CONSOLE_LOCK_STALE_SECONDS = 90

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("VIREO_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
WHITENOISE_USE_FINDERS = DEBUG

# How often a migration job reads libvirt's job statistics (progress, policy steps) and looks
# for Cancel Migration, in seconds.
VIREO_MIGRATION_POLL_SECONDS = float(os.environ.get("VIREO_MIGRATION_POLL_SECONDS", "0.5"))
