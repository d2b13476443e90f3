"""Show what changes between two matrix versions, rule by rule."""

from django.core.management.base import BaseCommand

from policies.management.commands._matrix_args import matrix_version
from policies.matrices import to_spec
from policies.matrix_diff import as_text, compare


class Command(BaseCommand):
    help = "Compare matrix version V1 with V2 (numbers, or 'live'), rule by rule."

    def add_arguments(self, parser):
        parser.add_argument("v1")
        parser.add_argument("v2")

    def handle(self, v1, v2, **options):
        old, new = matrix_version(v1), matrix_version(v2)
        self.stdout.write(f"v{old.version} ({old.status}) -> v{new.version} ({new.status})")
        self.stdout.write(as_text(compare(to_spec(old), to_spec(new))), ending="")
