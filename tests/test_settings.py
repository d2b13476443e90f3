"""Settings come from the environment; production refuses a development secret key."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_check(**env) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if name != "SECRET_KEY"}
    environment.update(env)
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "CRITICAL"],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_production_refuses_to_start_without_a_secret_key():
    result = run_check(DEBUG="False")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_the_development_secret_key():
    result = run_check(DEBUG="False", SECRET_KEY="dev-only-secret-key-never-use-in-production")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_starts_with_a_real_secret_key():
    result = run_check(DEBUG="False", SECRET_KEY="a-real-secret-" + "x" * 40)
    assert result.returncode == 0, result.stderr


def test_the_embedded_default_needs_no_server(settings):
    assert settings.CELERY_BROKER_URL.startswith("filesystem://") or os.getenv("CELERY_BROKER_URL")
    assert settings.DATABASES["default"]["ENGINE"].endswith(("sqlite3", "postgresql"))
