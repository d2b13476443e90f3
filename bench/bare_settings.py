"""Settings of bench/intake.py's reference: the product's settings, with a bare DRF create endpoint as the
only URL and no authentication or throttle. The same middleware, database and gunicorn: the
difference in the benchmark is the product's own work."""

from hitlgov.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_AUTHENTICATION_CLASSES": [], "DEFAULT_PERMISSION_CLASSES": [],  # noqa: F405
                  "DEFAULT_THROTTLE_CLASSES": []}
