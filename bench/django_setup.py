"""Start Django for a benchmark script on a fresh SQLite file (set DATABASE_URL for PostgreSQL).

Imported first by the bench scripts that need the database; they then import the app freely.
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HITL_VAR_DIR", tempfile.mkdtemp(prefix="hitl-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitlgov.settings")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "false")
os.environ.setdefault("DEBUG", "True")  # a benchmark is development: no production secret needed

import django  # noqa: E402

django.setup()
