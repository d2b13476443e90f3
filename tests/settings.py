"""The test suite runs the product in development mode; production settings are tested in subprocesses.

Setting DEBUG in the environment (not only here) hands it to every process the tests start:
Celery workers and manage.py commands. pytest-django still runs each test with DEBUG off.
"""

import os

os.environ.setdefault("DEBUG", "True")

from hitlgov.settings import *  # noqa: E402,F403
