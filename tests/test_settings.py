"""Settings come from the environment; production (the default) refuses a development secret key and
sends only hardened cookies and headers."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


REAL_KEY = "a-real-secret-" + "x" * 40
# The environment a production process gets: no DEBUG (the suite sets it), no development key.
UNSET = ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS")


def production_env(**env) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if name not in UNSET}
    environment["DJANGO_SETTINGS_MODULE"] = "hitlgov.settings"
    environment.update(env)
    return environment


def run_check(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", *(args or ("--fail-level", "CRITICAL"))],
                          cwd=ROOT, env=production_env(**env), capture_output=True, text=True, timeout=120)


def settings_in_a_fresh_process(names: list[str], **env) -> dict:
    script = ("import django, json; django.setup(); from django.conf import settings; "
              f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=production_env(**env),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


HARDENING = ["DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
             "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY"]


def test_without_debug_set_the_product_runs_hardened():
    values = settings_in_a_fresh_process(HARDENING, SECRET_KEY=REAL_KEY)

    assert values == {"DEBUG": False, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
                      "SECURE_SSL_REDIRECT": True, "SECURE_HSTS_SECONDS": 365 * 24 * 3600,
                      "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_CONTENT_TYPE_NOSNIFF": True,
                      "SECURE_REFERRER_POLICY": "same-origin"}


def test_https_redirect_and_hsts_are_configurable_behind_a_proxy():
    values = settings_in_a_fresh_process(["SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER"],
                                         SECRET_KEY=REAL_KEY, SECURE_SSL_REDIRECT="False", SECURE_HSTS_SECONDS="600",
                                         SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https")

    assert values == {"SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 600,
                      "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}


def test_development_mode_is_asked_for_explicitly_and_relaxes_cookies():
    values = settings_in_a_fresh_process(["DEBUG", "SESSION_COOKIE_SECURE", "SECURE_SSL_REDIRECT"], DEBUG="True")

    assert values == {"DEBUG": True, "SESSION_COOKIE_SECURE": False, "SECURE_SSL_REDIRECT": False}


def test_djangos_deployment_checks_find_no_security_gap_in_production():
    result = run_check(SECRET_KEY=REAL_KEY)

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "(security." in line]
    # Only HSTS preload remains: submitting a domain to browsers' preload lists is the owner's choice.
    assert [line.split(")")[0] for line in warnings] == ["?: (security.W021"]


def test_production_refuses_to_start_without_a_secret_key():
    result = run_check(DEBUG="False")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_the_development_secret_key():
    result = run_check(DEBUG="False", SECRET_KEY="dev-only-secret-key-never-use-in-production")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_starts_with_a_real_secret_key():
    result = run_check(DEBUG="False", SECRET_KEY=REAL_KEY)
    assert result.returncode == 0, result.stderr


def test_the_embedded_default_needs_no_server(settings):
    assert settings.CELERY_BROKER_URL.startswith("filesystem://") or os.getenv("CELERY_BROKER_URL")
    assert settings.DATABASES["default"]["ENGINE"].endswith(("sqlite3", "postgresql"))
