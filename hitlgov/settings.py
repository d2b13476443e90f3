"""Settings, all from environment variables with safe development defaults.

The embedded default needs no server: SQLite and Celery's filesystem broker under var/.
Scale out by setting DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("HITL_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def envbool(name: str, default: str = "False") -> bool:
    return os.getenv(name, default).lower() in ("1", "true", "yes", "on")


# Production unless told otherwise: `make run` and the test suite (tests/settings.py) set DEBUG=True.
DEBUG = envbool("DEBUG", "False")
DEVELOPMENT_SECRET_KEY = "dev-only-secret-key-never-use-in-production"
SECRET_KEY = os.getenv("SECRET_KEY", DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not DEBUG and SECRET_KEY in ("", DEVELOPMENT_SECRET_KEY):
    raise ImproperlyConfigured("Set SECRET_KEY: production refuses to start with the development key.")

ALLOWED_HOSTS = os.getenv("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
SITE_ROOT = os.getenv("SITE_ROOT", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "hitlgov.apps.HitlAdminConfig",  # django.contrib.admin with the board dashboard (hitlgov.admin_site)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served by the app itself: no outside network
    "simple_history",
    "django_fsm",
    "csp",
    "axes",
    "ledger",
    "policies",
    "connectors",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "approvals.api_errors.ApiErrorMiddleware",
    "approvals.api_errors.ApiBodyLimitMiddleware",
    "approvals.api_input.RequestTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "approvals.printable.PrintableTemplateMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: it answers locked-out logins
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out usernames and addresses
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "hitlgov.urls"
WSGI_APPLICATION = "hitlgov.wsgi.application"

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
            "libraries": {"board": "hitlgov.templatetags.board"},  # the dashboard's formats (hitlgov is no app)
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{VAR_DIR / 'hitlgov.sqlite3'}"),
        # Persistent connections: opening one per request cost PostgreSQL intake half its speed.
        # Health checks replace a connection the server closed; 0 turns persistence off.
        conn_max_age=int(os.getenv("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web server, a worker and beat share one file. WAL lets readers go on while one writer
    # commits; IMMEDIATE takes the write lock when a transaction starts, so two writers queue
    # on the busy timeout instead of one failing with "database is locked" when it upgrades a
    # read lock; synchronous=NORMAL is durable in WAL mode except on power loss of the host.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": float(os.getenv("SQLITE_BUSY_TIMEOUT_SECONDS", "30")),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=%d;"
                        % int(float(os.getenv("SQLITE_BUSY_TIMEOUT_SECONDS", "30")) * 1000),
    }
    DATABASES["default"]["TEST"] = {"NAME": os.getenv("TEST_SQLITE_NAME", str(VAR_DIR / "test.sqlite3"))}
# The same databases, through backends that write each transaction's decision-log event as it commits.
AUDITED_BACKENDS = {
    "django.db.backends.sqlite3": "ledger.backends.sqlite3",
    "django.db.backends.postgresql": "ledger.backends.postgresql",
}
DATABASES["default"]["ENGINE"] = AUDITED_BACKENDS.get(DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [] if DEBUG else [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.getenv("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "hitlgov@localhost")

# Notifications (docs/notifications.md). Slack's Web API (a test points it at a local server), and the
# signing secret of the Slack app whose buttons call /notifications/slack/actions/ (a reference, like
# connector credentials: env:HITL_SECRET_... or file:...).
SLACK_API_URL = os.getenv("SLACK_API_URL", "https://slack.com/api/")
SLACK_SIGNING_SECRET_REF = os.getenv("SLACK_SIGNING_SECRET_REF", "")

# The integration API (see ../shared/CONTRACT.md).
API_MAX_BODY_BYTES = int(os.getenv("API_MAX_BODY_BYTES", str(1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, 2_621_440)
API_RATE_LIMIT = os.getenv("API_RATE_LIMIT", "600/min")
# Deeper JSON bodies get a 400 (deep nesting is only ever an attack on the parser).
API_MAX_JSON_DEPTH = int(os.getenv("API_MAX_JSON_DEPTH", "32"))

# Outbound calls (callbacks, connector base URLs) reach public addresses only, unless listed here:
# comma-separated hostnames, addresses or CIDRs, e.g. "billing.internal,10.1.0.0/16".
OUTBOUND_ALLOWLIST = os.getenv("OUTBOUND_ALLOWLIST", "")

# Connector credential references may read only environment variables with this prefix and files
# inside this directory (a mounted Docker/Kubernetes secrets directory by default).
CREDENTIAL_ENV_PREFIX = os.getenv("CREDENTIAL_ENV_PREFIX", "HITL_SECRET_")
CREDENTIAL_FILE_DIR = Path(
    os.getenv("CREDENTIAL_FILE_DIR") or ("/run/secrets" if Path("/run/secrets").is_dir() else VAR_DIR / "secrets")
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["approvals.api_auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["approvals.api_auth.HasScope"],
    "DEFAULT_PARSER_CLASSES": [
        "approvals.api_input.JSONParser", "approvals.api_input.FormParser", "approvals.api_input.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["approvals.printable.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["approvals.api_auth.IntegrationRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"integration": API_RATE_LIMIT},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "approvals.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "HITL Gov integration API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "approvals.api_schema.document_errors"],
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "cache"),
    }
}
if os.getenv("CACHE_URL"):
    CACHES["default"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}

# Celery: the filesystem broker needs no server; set CELERY_BROKER_URL=redis://... to scale out.
BROKER_DIR = Path(os.getenv("HITL_BROKER_DIR", VAR_DIR / "broker"))
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("in", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "in"),
        "data_folder_out": str(BROKER_DIR / "in"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.getenv("CELERY_VISIBILITY_TIMEOUT", "3600"))}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message per free slot: with late acknowledgement a prefetched message waits behind a busy slot.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# An execution mostly waits (on the database, on a connector's API), so a worker process can run
# several at once in threads: CELERY_WORKER_POOL=threads, CELERY_WORKER_CONCURRENCY=8, one such
# worker per core (compose.yaml; docs/benchmarks.md has the figures). The default stays prefork:
# the embedded SQLite database takes one writer at a time, so threads would only queue on its lock.
CELERY_WORKER_POOL = os.getenv("CELERY_WORKER_POOL", "prefork")
if os.getenv("CELERY_WORKER_CONCURRENCY"):
    CELERY_WORKER_CONCURRENCY = int(os.environ["CELERY_WORKER_CONCURRENCY"])
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER")
# Celery's Django fixup closes every database connection before and after each task unless this is
# set, so each execution paid for a new PostgreSQL connection. Set, the fixup only recycles a
# connection every this many tasks; in between, hitlgov.celery treats each task as Django treats a
# request (CONN_MAX_AGE and the health check decide).
CELERY_DB_REUSE_MAX = 10_000
CELERY_BEAT_SCHEDULE_FILENAME = os.getenv("CELERY_BEAT_SCHEDULE_FILENAME", str(VAR_DIR / "celerybeat-schedule"))
SWEEP_INTERVAL_SECONDS = float(os.getenv("SWEEP_INTERVAL_SECONDS", "30"))
# Database connections a sweep works on side by side once more than one batch (2,000 rows) is due,
# on PostgreSQL (approvals.sweeps; SQLite has one writer). Two overlap the database's half of a batch
# with this process's half; more add little on two cores.
SWEEP_CONNECTIONS = int(os.getenv("SWEEP_CONNECTIONS", "2"))
# The decision log (docs/audit.md): how often beat anchors its head, how long evidence payloads are kept.
AUDIT_ANCHOR_INTERVAL_SECONDS = float(os.getenv("AUDIT_ANCHOR_INTERVAL_SECONDS", "3600"))
AUDIT_ANCHOR_FILE = Path(os.getenv("AUDIT_ANCHOR_FILE", VAR_DIR / "audit-anchors.log"))
EVIDENCE_RETENTION_DAYS = int(os.getenv("EVIDENCE_RETENTION_DAYS", "730"))
# The demo's simulated agents submit a few proposals this often (0: never; `make run` turns it on).
DEMO_TRICKLE_SECONDS = float(os.getenv("DEMO_TRICKLE_SECONDS", "0"))
# How long a worker may write before another may assume it died and resume (re-reading first).
EXECUTION_LEASE_SECONDS = float(os.getenv("EXECUTION_LEASE_SECONDS", "120"))
EXECUTION_MAX_ATTEMPTS = int(os.getenv("EXECUTION_MAX_ATTEMPTS", "5"))
EXECUTION_RESUME_GRACE_SECONDS = float(os.getenv("EXECUTION_RESUME_GRACE_SECONDS", "30"))
# How long an approved proposal may wait after its execution message went out before the sweep
# assumes the message was lost (a worker fetched it and died) and sends it again.
EXECUTION_DISPATCH_GRACE_SECONDS = float(os.getenv("EXECUTION_DISPATCH_GRACE_SECONDS", "300"))
BOARD_GROUP = os.getenv("BOARD_GROUP", "governance-board")
# Operations: beat's heartbeat (see /healthz), and what /metrics reports on (its window; its token if set).
HEARTBEAT_INTERVAL_SECONDS = float(os.getenv("HEARTBEAT_INTERVAL_SECONDS", "30"))
# How often beat rolls up the board's finished days again (only the changed ones): how long a change to
# an older proposal (a late verdict, a rollback) takes to reach the dashboard; today's figures are live.
BOARD_REFRESH_SECONDS = float(os.getenv("BOARD_REFRESH_SECONDS", "300"))
METRICS_WINDOW_SECONDS = int(os.getenv("METRICS_WINDOW_SECONDS", "3600"))
METRICS_TOKEN = os.getenv("METRICS_TOKEN", "")
# Modules that register more connector adapter kinds (connectors.adapters.base.register) at start-up.
CONNECTOR_PLUGINS = [name.strip() for name in os.getenv("CONNECTOR_PLUGINS", "").split(",") if name.strip()]

# ---- hardening of the web side

# Browsers get these headers in development too, so a page that breaks under them shows at once.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        # The admin and a few of our templates set style attributes; scripts stay strict.
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}
if not DEBUG:
    SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "True")
    CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", "True")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP inside the network
    SECURE_HSTS_SECONDS = int(os.getenv("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "True")
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "False")
    SESSION_COOKIE_HTTPONLY = True
if os.getenv("SECURE_PROXY_SSL_HEADER"):  # behind a TLS-terminating proxy, e.g. "HTTP_X_FORWARDED_PROTO,https"
    SECURE_PROXY_SSL_HEADER = tuple(os.environ["SECURE_PROXY_SSL_HEADER"].split(",", 1))

# Admin logins: after LOGIN_FAILURE_LIMIT failures for one username or from one address, refuse
# both for LOGIN_LOCKOUT_MINUTES (django-axes; counted in the database, so every web process agrees).
AXES_FAILURE_LIMIT = int(os.getenv("LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.getenv("LOGIN_LOCKOUT_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = envbool("AXES_VERBOSE")  # lockouts are still logged as warnings

# Audit: reverting through django-simple-history would bypass the lifecycle's transitions.
SIMPLE_HISTORY_REVERT_DISABLED = True
# Change reasons carry reviewers' full explanations.
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    # django-axes logs every login at INFO; its lockouts come as warnings.
    "loggers": {"axes": {"level": os.getenv("AXES_LOG_LEVEL", "WARNING")}},
}
