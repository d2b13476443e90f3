"""Load the demo: groups, users, sandbox systems, a published matrix and a simulated agent's proposals."""

from django.conf import settings
from django.core.management.base import BaseCommand

from approvals.demo import DEMO_PASSWORD, USERS, seed_demo


class Command(BaseCommand):
    help = "Load demo data (safe to run again)."

    def add_arguments(self, parser):
        parser.add_argument("--proposals", type=int, default=36)

    def handle(self, proposals, **options):
        result = seed_demo(proposals=proposals)
        self.stdout.write(f"Demo loaded: {result['proposals']} proposals.")
        self.stdout.write(f"Admin: {settings.SITE_ROOT}/admin/")
        self.stdout.write("Logins: admin/admin; " + ", ".join(f"{u}/{DEMO_PASSWORD}" for u in USERS if u != "admin"))
        self.stdout.write("Demo agent API key (shown once):")
        self.stdout.write(result["api_key"])
