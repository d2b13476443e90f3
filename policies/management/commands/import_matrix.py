"""Store a YAML matrix as a new draft version; nothing is stored if the file has any error."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from policies.management.commands._matrix_args import read_text
from policies.matrix_io import MatrixImportError, import_yaml, run_cases
from policies.matrices import to_spec
from policies.services import is_board_member


class Command(BaseCommand):
    help = "Import a YAML matrix as a new draft version authored by --author (a governance board member)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--author", required=True, help="username of the board member the draft is by")
        parser.add_argument("--notes", default="", help="notes stored with the draft (default: imported from FILE)")

    def handle(self, file, author, notes="", **options):
        user = self._author(author)
        text = read_text(file)
        try:
            matrix = import_yaml(text, user, notes=notes or f"imported from {file}")
        except MatrixImportError as exc:
            for error in exc.errors:
                self.stderr.write(f"{error.path or '(file)'}: {error.message}")
            raise CommandError(f"{file}: {len(exc.errors)} error(s); nothing was stored") from None
        self.stdout.write(f"imported {file} as draft v{matrix.version}")
        failing = [case for case in run_cases(to_spec(matrix)) if not case.passed]
        for case in failing:
            self.stderr.write(f"warning: {case.describe()}")
        if failing:
            self.stderr.write(f"warning: {len(failing)} embedded test(s) fail; the draft cannot be submitted until they pass")

    def _author(self, username: str):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}") from None
        if not is_board_member(user):
            raise CommandError(f"{username} is not an active governance board member; only they author matrices")
        return user
