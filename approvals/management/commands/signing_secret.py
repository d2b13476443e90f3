"""Show an integration's callback signing secret once: when it is made, or when it is rotated."""

from django.core.management.base import BaseCommand, CommandError

from approvals.events import issue_signing_secret
from approvals.models import Integration


class Command(BaseCommand):
    help = (
        "Issue the secret that signs an integration's callback events (X-HITL-Signature). "
        "Prints it once, on the last line; --rotate replaces an existing one."
    )

    def add_arguments(self, parser):
        parser.add_argument("integration")
        parser.add_argument("--rotate", action="store_true", help="replace the secret; receivers must switch at once")

    def handle(self, integration, rotate=False, **options):
        try:
            record = Integration.objects.get(name=integration)
        except Integration.DoesNotExist:
            raise CommandError(f"no integration {integration!r}") from None
        secret = issue_signing_secret(record, rotate=rotate)
        if secret is None:
            raise CommandError(
                f"{record.name} already has a signing secret, which is not shown again. "
                "Use --rotate to issue a new one (events are signed with it from then on)."
            )
        self.stderr.write(f"{'rotated' if rotate else 'issued'} the signing secret of {record.name}; "
                          "store it now, it is not shown again")
        self.stdout.write(secret)
