"""Settings for the team chat product, all read from the environment.

With nothing set the product runs *embedded*: SQLite under ``var/``, an in-memory
channel layer, an in-process Celery worker and the built-in emulator as the model.
``DATABASE_URL`` and ``REDIS_URL`` switch to the real topology.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from chatsite.dbpool import web_pool_size
from chatsite.env import (
    ImproperlyConfiguredEnv,
    check_redis_url,
    env_bool,
    env_choice,
    env_decimal,
    env_int,
    env_list,
    env_secret,
    env_str,
    parse_database_url,
    parse_site_url,
)
from chatsite.static_vendor import vendor_static_dirs

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

# --- Core -----------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)
_secret = env_secret("SECRET_KEY")
if not _secret:
    # No key configured: generate a random one per installation (never a shared default)
    # and keep it under var/ so sessions survive restarts. Deployments should set SECRET_KEY.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    _secret = _key_file.read_text().strip()
# The placeholder in .env.example must never sign a production session.
PLACEHOLDER_SECRET_KEYS = {"change-me-to-a-long-random-string"}
if _secret in PLACEHOLDER_SECRET_KEYS:
    raise ImproperlyConfiguredEnv(
        "SECRET_KEY is still the placeholder from .env.example; set it to 50 or more random "
        "characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
SECRET_KEY = _secret

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "django_ratelimit",
    # Diffs of model profiles, org settings and roles for the audit log (accounts/audit.py).
    "auditlog",
    "llm",
    "accounts",
    "billing",
    "conversations",
    "answers",
    "realtime",
    "sharing",
    # System checks of the settings (chatsite/checks.py).
    "chatsite.apps.ChatsiteConfig",
]

MIDDLEWARE = [
    # /metrics for Prometheus, answered before the host check and the HTTPS redirect.
    "chatsite.middleware.MetricsEndpoint",
    "django.middleware.security.SecurityMiddleware",
    "chatsite.middleware.ContentSecurityPolicyMiddleware",
    "chatsite.middleware.RejectNullCharactersMiddleware",
    "chatsite.middleware.NotFoundAs404Middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The request audit entries are about: its person and client address.
    "accounts.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
# The websocket routes (``websocket_urlpatterns``), as ROOT_URLCONF is to HTTP.
WEBSOCKET_URLCONF = "realtime.routing"
ASGI_APPLICATION = "chatsite.asgi.application"
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
                "chatsite.context_processors.product",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL")
EMBEDDED = not DATABASE_URL
if DATABASE_URL:
    _db = parse_database_url(DATABASE_URL)
    _options: dict[str, object] = dict(_db.options)
    if env_bool("DB_PREPARED_STATEMENTS", True):
        # Parameters bound by the server, and a statement run 5 times on one pooled
        # connection prepared there: PostgreSQL then plans a turn's statements once per
        # connection instead of on every call (docs/decisions.md#0033). Set
        # DB_PREPARED_STATEMENTS=false behind a pooler that cannot keep prepared
        # statements (PgBouncer before 1.21 in transaction mode).
        _options.setdefault("server_side_binding", True)
        _options.setdefault("prepare_threshold", 5)
    if env_bool("DB_POOL", True):
        # Celery threads and Channels executors each hold a connection only while they
        # run a query (never across a provider call); a bounded pool keeps 200 concurrent
        # answers under max_connections. Unset, DB_POOL_MAX follows the process's role:
        # this default fits a web process (its threads that touch the database: 8 turn
        # threads, Channels' one database thread and asyncio's default executor, plus 2);
        # a Celery worker resizes it to its --concurrency at start (chatsite/celery.py).
        _options["pool"] = {
            "min_size": 1,
            "max_size": env_int("DB_POOL_MAX", web_pool_size(), minimum=2),
            "timeout": 30,
        }
    DATABASES = {
        "default": {
            "ENGINE": _db.engine,
            "NAME": _db.name,
            "USER": _db.user,
            "PASSWORD": _db.password,
            "HOST": _db.host,
            "PORT": _db.port,
            "OPTIONS": _options,
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": env_str("TEST_DATABASE_NAME") or None},
        }
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "conversations:home"
LOGOUT_REDIRECT_URL = "accounts:login"

# django-axes first: it refuses a locked-out account or client before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Redis: channel layer, Celery broker, cache -------------------------------------------

REDIS_URL = check_redis_url(env_str("REDIS_URL")) if env_str("REDIS_URL") else ""

if REDIS_URL:
    # The pub/sub layer publishes a group message with one PUBLISH and has no per-channel
    # capacity that silently drops deltas; gaps after a Redis blip are closed by `resume`.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # Pub/sub channels ignore the Redis database number: a prefix per database
            # keeps two deployments (or tests and a dev server) on one Redis apart.
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env_str("CHANNEL_PREFIX")
                or "teamchat" + (urlsplit(REDIS_URL).path.strip("/") or "0"),
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "chatsite.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "teamchat",
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# A reply task is redelivered if its worker dies; the conditional claim in
# generation.claim() makes the second delivery a no-op instead of a second bill.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The in-memory broker of embedded mode polls; 1 s (its default) would delay every answer.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": 3600} if REDIS_URL else {"polling_interval": 0.02}
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Side calls to the provider (a new conversation's title) go to a queue of their own,
# consumed by a pool of their own (SIDE_CALL_CONCURRENCY threads: runstack's side process,
# embedded mode's side pool), never by the threads that claim answers: a title that takes
# seconds delays no answer (docs/decisions.md#0044).
SIDE_CALL_QUEUE = "side"
# Answers' queue (Celery's default name): the only one the claim threads consume (-Q).
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"conversations.tasks.generate_title": {"queue": SIDE_CALL_QUEUE}}
CELERY_BEAT_SCHEDULE = {
    "reap-stale-replies": {"task": "conversations.tasks.reap_stale_replies", "schedule": 30.0},
    "refresh-shutdown-dates": {
        "task": "conversations.tasks.refresh_shutdown_dates", "schedule": 6 * 3600.0,
    },
    # Daily: an org moves to its default model's successor the day before the shutdown.
    "move-orgs-off-retiring-models": {
        "task": "conversations.tasks.move_orgs_off_retiring_models", "schedule": 24 * 3600.0,
    },
    # Expired exports and leftover uploads deleted; jobs whose worker died marked failed.
    "clean-data-jobs": {"task": "conversations.tasks.clean_data_jobs", "schedule": 3600.0},
    # Daily: audit entries older than AUDIT_RETENTION_DAYS deleted, each org's count audited.
    "prune-audit-log": {"task": "accounts.tasks.prune_audit_log", "schedule": 24 * 3600.0},
    # Daily: conversations untouched for their org's retention period deleted in batches.
    "apply-retention": {"task": "conversations.tasks.apply_retention", "schedule": 24 * 3600.0},
    # Search vectors of messages whose text became final, off the turn's path (one that
    # waited longer than a pass is dropped: the next pass takes its messages).
    "index-messages": {"task": "conversations.tasks.index_messages", "schedule": 2.0,
                       "options": {"expires": 10.0}},
}

# --- Model providers ---------------------------------------------------------------------
# Credentials are read here and only handed to the provider layer; they never reach a
# template, a websocket frame or a log line.

OPENAI_API_KEY = env_secret("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_ORGANIZATION = env_str("OPENAI_ORGANIZATION")
OPENAI_PROJECT = env_str("OPENAI_PROJECT")
AZURE_OPENAI_ENDPOINT = env_str("AZURE_OPENAI_ENDPOINT")
AZURE_OPENAI_API_KEY = env_secret("AZURE_OPENAI_API_KEY")
AZURE_OPENAI_API_VERSION = env_str("AZURE_OPENAI_API_VERSION", "2024-12-01-preview")
AZURE_OPENAI_DEPLOYMENT = env_str("AZURE_OPENAI_DEPLOYMENT")
# The catalog model behind AZURE_OPENAI_DEPLOYMENT (e.g. gpt-5-4): its limits and prices.
AZURE_OPENAI_MODEL = env_str("AZURE_OPENAI_MODEL")
# A profile name, catalog name or model id. Empty: the Azure deployment above, else the
# newest catalog model the OpenAI key lists, else (offline demo) the demo model's own.
CHAT_MODEL = env_str("CHAT_MODEL")
EMULATOR_URL = env_str("EMULATOR_URL", "http://127.0.0.1:8001")
LLM_READ_TIMEOUT = env_int("LLM_READ_TIMEOUT", 600, minimum=5)
LLM_MAX_ATTEMPTS = env_int("LLM_MAX_ATTEMPTS", 3, minimum=1)
LLM_MAX_RETRY_WAIT = env_int("LLM_MAX_RETRY_WAIT", 30, minimum=0)
# Reasoning efforts whose Responses-API answers run in background mode (stored upstream,
# resumed by another worker if theirs dies mid-answer); empty: none.
BACKGROUND_EFFORTS = env_list("BACKGROUND_EFFORTS", ["high", "xhigh", "max"])
# A background response we come back to (after a dropped connection or a worker restart)
# that the provider still has `queued` this long is stuck (a provider bug, community
# thread 1382584): it is cancelled and the answer fails rather than wait out the ~10
# minutes the provider keeps it. Healthy ones leave the queue within seconds.
BACKGROUND_QUEUED_DEADLINE_SECONDS = env_int("BACKGROUND_QUEUED_DEADLINE_SECONDS", 60, minimum=5)

# --- Streaming ------------------------------------------------------------------------------

# Deltas of one answer coalesce for this long: with the first delta, the thinking
# heartbeats and the final frame, a tab gets at most 20 frames per answer per second
# (docs/decisions.md#0037).
STREAM_FLUSH_MS = env_int("STREAM_FLUSH_MS", 60, minimum=1)
STREAM_CHECKPOINT_SECONDS = env_int("STREAM_CHECKPOINT_SECONDS", 3, minimum=1)
STREAM_LEASE_SECONDS = env_int("STREAM_LEASE_SECONDS", 60, minimum=10)
# A queued answer no worker claimed within this long fails as `queue_timeout` at $0.
PENDING_TIMEOUT_SECONDS = env_int("PENDING_TIMEOUT_SECONDS", 600, minimum=10)
STREAM_IDLE_TIMEOUT = env_int("STREAM_IDLE_TIMEOUT", 90, minimum=5)
STREAM_MAX_CHECKPOINTS = env_int("STREAM_MAX_CHECKPOINTS", 20, minimum=1)
# SIGTERM on a worker stops new claims and lets live answers finish for this long; the
# ones still running then are ended `interrupted` with their partial text. Compose's
# stop_grace_period for the worker matches it.
WORKER_DRAIN_SECONDS = env_int("WORKER_DRAIN_SECONDS", 120, minimum=0)
# How many uvicorn and Celery worker processes `manage.py runstack` (make run, and each
# compose container) starts in the full topology. One process per core by default: a
# process streams on one core (the GIL), so more processes use more cores. Embedded mode
# is always one process (its in-memory broker and channel layer cannot be shared).
WEB_PROCESSES = env_int("WEB_PROCESSES", os.cpu_count() or 1, minimum=1)
WORKER_PROCESSES = env_int("WORKER_PROCESSES", os.cpu_count() or 1, minimum=1)
# Answers one worker process streams at once on its event loop (answers.engine);
# a turn beyond it stays queued for any worker with room ("Queued (n ahead)").
WORKER_LIVE_ANSWERS = env_int("WORKER_LIVE_ANSWERS", 200, minimum=1)
# Side calls (titles) one side pool makes at once: one side process per runstack worker
# role (each compose `worker` container), and embedded mode's own pool.
SIDE_CALL_CONCURRENCY = env_int("SIDE_CALL_CONCURRENCY", 2, minimum=1)
MAX_TOOL_ROUNDS = env_int("MAX_TOOL_ROUNDS", 4, minimum=0)
REPLAY_TTL_SECONDS = env_int("REPLAY_TTL_SECONDS", 600, minimum=30)
MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 32_000, minimum=100)
# ChatGPT imports: the upload, the sum of a ZIP's unpacked sizes (also the most
# conversations.json may inflate to) and a ZIP's file count are bounded before any parsing.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 50 * 1024 * 1024, minimum=1024)
IMPORT_MAX_UNCOMPRESSED_BYTES = env_int("IMPORT_MAX_UNCOMPRESSED_BYTES", 200 * 1024 * 1024, minimum=1024)
IMPORT_MAX_ZIP_MEMBERS = env_int("IMPORT_MAX_ZIP_MEMBERS", 10_000, minimum=1)
# Imports and "Export my data" run as background jobs (conversations/datajobs.py): one at a
# time per person and kind, at most this many started per person in 24 hours. Uploads and
# finished exports are private files under DATA_JOBS_DIR (shared by web and worker
# processes); an export's download link works for DATA_EXPORT_TTL_HOURS.
IMPORTS_PER_DAY = env_int("IMPORTS_PER_DAY", 5, minimum=1)
EXPORTS_PER_DAY = env_int("EXPORTS_PER_DAY", 5, minimum=1)
DATA_EXPORT_TTL_HOURS = env_int("DATA_EXPORT_TTL_HOURS", 24, minimum=1)
DATA_JOBS_DIR = Path(env_str("DATA_JOBS_DIR", str(VAR_DIR / "jobs")))

# --- Accounts, sign-in protection and abuse limits ----------------------------------------

# "invite": only the first account of a fresh install, then only people holding an
# invitation (or an address in an org's allowed email domains). "open": anyone; each new
# account owns a new org that starts with a monthly budget of NEW_ORG_BUDGET_USD.
SIGNUP = env_choice("SIGNUP", "invite", ("invite", "open"))
NEW_ORG_BUDGET_USD = env_decimal("NEW_ORG_BUDGET_USD", "5", minimum=Decimal(0))
# Joining through an org's allowed email domain with a plus-address of an existing account
# (alice+2@ beside alice@) would give one person a second budget; False refuses it.
ALLOW_PLUS_ADDRESSES = env_bool("ALLOW_PLUS_ADDRESSES", False)
# Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For / -Proto headers are
# believed; every launcher passes this to uvicorn's --forwarded-allow-ips. Empty: none.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])

# Sign-in lockout (django-axes, accounts/lockout.py), within LOGIN_LOCKOUT_MINUTES: 10
# failures for one account from one client pause that client for that account; 50 from one
# client pause it for every account; 20 for one account from all clients pause clients that
# never signed in to it (a device that did still signs in). Each pause lasts 15 minutes
# from the failure that caused it; refused attempts are not counted and do not extend it.
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 10, minimum=1)
LOGIN_FAILURES_PER_CLIENT = env_int("LOGIN_FAILURES_PER_CLIENT", 50, minimum=1)
LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS = env_int("LOGIN_FAILURES_PER_ACCOUNT_ALL_CLIENTS", 20,
                                                 minimum=1)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
AXES_HANDLER = "accounts.lockout.LockoutHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_FAILURE_LIMIT = LOGIN_FAILURES_PER_ACCOUNT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_RESET_ON_SUCCESS = False
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.lockout.username_from_request"
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.locked_out_response"
AXES_VERBOSE = False

# The org audit log (accounts/audit.py): entries older than this many days are deleted.
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 365, minimum=1)
# Retention (conversations/retention.py) deletes this many conversations per transaction:
# each batch holds its rows' locks only for as long as it takes.
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 500, minimum=1)
# django-auditlog: foreign keys by name ("o3-mini", not 7); its middleware is replaced by
# accounts.audit.AuditContextMiddleware, which reads the client address our way.
AUDITLOG_USE_FK_STRING_REPRESENTATION = True

# django-ratelimit counts in the default cache (Redis in the full topology).
RATELIMIT_IP_META_KEY = "REMOTE_ADDR"
# Django's own RedisCache increments atomically (INCR) but is not on django-ratelimit's
# list; embedded mode is one process, so its local-memory cache is the shared one.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001", *(["django_ratelimit.E003"] if EMBEDDED else [])]
SIGNUPS_PER_HOUR = env_int("SIGNUPS_PER_HOUR", 20, minimum=1)
PASSWORD_RESETS_PER_HOUR = env_int("PASSWORD_RESETS_PER_HOUR", 10, minimum=1)
SHARE_LOOKUPS_PER_MINUTE = env_int("SHARE_LOOKUPS_PER_MINUTE", 60, minimum=1)
INVITATIONS_PER_HOUR = env_int("INVITATIONS_PER_HOUR", 30, minimum=1)
MAX_LIVE_ANSWERS_PER_USER = env_int("MAX_LIVE_ANSWERS_PER_USER", 3, minimum=1)
# Chat websockets one person may hold open at once (every tab holds one); the next one is
# closed with 4429 and its page says why.
MAX_SOCKETS_PER_USER = env_int("MAX_SOCKETS_PER_USER", 20, minimum=1)
# Answers waiting for a worker in the whole instance beyond which a send is refused
# (`busy`) instead of joining a queue nobody will reach soon.
MAX_QUEUED_TURNS = env_int("MAX_QUEUED_TURNS", 500, minimum=1)
SENDS_PER_MINUTE = env_int("SENDS_PER_MINUTE", 20, minimum=1)
# Environment variables a model profile may name as its key, besides any LLM_KEY_* name.
PROFILE_KEY_ENVS = env_list("PROFILE_KEY_ENVS", [])

# --- HTTP, security ------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Behind a TLS proxy, plain HTTP that reaches the app is redirected to HTTPS, except the
# container healthcheck, which calls /healthz over plain HTTP from inside the container.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", BEHIND_TLS_PROXY)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)

# The base of every emailed link (password reset, invitation, sign-up, notifications),
# never the Host header a client sends. Required in production (`check --deploy` fails
# without it); embedded or with DEBUG it defaults to where `make run` serves (runstack
# passes its actual --port to its children).
_site_url = env_str("SITE_URL")
SITE_URL = parse_site_url(_site_url) if _site_url else f"http://127.0.0.1:{env_int('PORT', 8000, minimum=1)}"
SITE_URL_CONFIGURED = bool(_site_url)

# Embedded or DEBUG: mail (with its links) is printed to the console, and `make run` says
# so; otherwise SMTP. `check --deploy` refuses the console and locmem backends without DEBUG.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG or EMBEDDED
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
# Where django.core.mail.backends.filebased.EmailBackend writes each message.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "teamchat@localhost")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
NODE_MODULES_DIR = BASE_DIR / "node_modules"
STATICFILES_DIRS = [BASE_DIR / "static", *vendor_static_dirs(NODE_MODULES_DIR)]

# --- Operations: metrics and logs ----------------------------------------------------------

# The bearer secret Prometheus sends to /metrics (web) and to WORKER_METRICS_PORT (each
# worker); unset, neither serves metrics (/metrics answers 404). chatsite/metrics.py.
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# Where each Celery worker process serves its metrics (every interface); 0: it does not.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)
# "text": one readable line per record (a terminal); "json": one JSON object per line with
# the request's and the answer's ids (a log pipeline; docker-compose sets it).
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "json": {"()": "chatsite.logs.JSONFormatter"}},
    # Links that carry a secret (reset, invitation, sign-up, share) are masked in every
    # line: access and 404 logs print request paths. So are the configured secrets' values.
    "filters": {"mask_tokens": {"()": "chatsite.logs.MaskTokens"}},
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if LOG_FORMAT == "json" else "plain",
                             "filters": ["mask_tokens"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}
