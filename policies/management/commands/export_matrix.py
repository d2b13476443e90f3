"""Write a matrix version as canonical YAML, to keep and review in version control."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policies.management.commands._matrix_args import matrix_version
from policies.matrix_io import export_yaml


class Command(BaseCommand):
    help = "Export a matrix version (a number, or 'live') as YAML, to stdout or --out FILE."

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument("--out", help="write to this file instead of stdout")

    def handle(self, version, out=None, **options):
        matrix = matrix_version(version)
        text = export_yaml(matrix)
        if not out:
            self.stdout.write(text, ending="")
            return
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {out}: {exc.strerror}") from None
        self.stderr.write(f"wrote v{matrix.version} ({matrix.status}) to {out}")
