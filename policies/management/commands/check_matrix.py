"""Validate a YAML matrix and run its embedded test cases, e.g. in CI before a board imports it."""

from django.core.management.base import BaseCommand, CommandError

from policies.management.commands._matrix_args import read_text
from policies.matrix_io import check_yaml


class Command(BaseCommand):
    help = "Validate a YAML matrix and run its embedded tests. Exit code 0 only if it is valid and every test passes."

    def add_arguments(self, parser):
        parser.add_argument("file")

    def handle(self, file, **options):
        report = check_yaml(read_text(file))
        for error in report.errors:
            self.stderr.write(f"{error.path or '(file)'}: {error.message}")
        if report.errors:
            raise CommandError(f"{file}: {len(report.errors)} error(s); tests not run")
        for case in report.cases:
            (self.stdout if case.passed else self.stderr).write(case.describe())
        failed = len(report.failed)
        if failed:
            raise CommandError(f"{file}: {failed} of {len(report.cases)} embedded tests fail")
        self.stdout.write(f"{file}: valid; {len(report.cases)} embedded tests pass")
