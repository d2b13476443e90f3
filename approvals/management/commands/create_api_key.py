"""Make an API key for an integration; the key is printed once, on the last line."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals.api_auth import create_api_key
from approvals.models import Integration


class Command(BaseCommand):
    help = "Create an API key for an integration (created if new). Prints the key once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("integration")
        parser.add_argument("--scopes", default="proposals:write,proposals:read")
        parser.add_argument("--acts-for", help="username whose review rights decisions made with this key use")

    def handle(self, integration, scopes, acts_for=None, **options):
        acts_for_user = None
        if acts_for:
            try:
                acts_for_user = get_user_model().objects.get(username=acts_for)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no user {acts_for!r}") from None
        record, created = Integration.objects.get_or_create(name=integration)
        if acts_for_user:
            record.acts_for = acts_for_user
            record.save()
        try:
            key, raw = create_api_key(record, [s.strip() for s in scopes.split(",") if s.strip()])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if created:
            self.stderr.write(f"created integration {record.name}")
        self.stderr.write(f"scopes: {key.scopes}; store this key now, it is not shown again")
        self.stdout.write(raw)
