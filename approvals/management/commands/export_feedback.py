"""Export every proposal with the people's verdict, edits, reasons and exception category, as JSON Lines."""

from django.core.management.base import BaseCommand, CommandError

from approvals import audit, feedback


class Command(BaseCommand):
    help = "Stream one JSON line per proposal submitted in [since, until): verdict, edit before/after, reasons, category."

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="inclusive, ISO 8601 (UTC if no offset)")
        parser.add_argument("--until", required=True, help="exclusive, ISO 8601 (UTC if no offset)")
        parser.add_argument("--out", help="file to write; default standard output")

    def handle(self, since, until, out=None, **options):
        try:
            query = audit.parse_query(since, until, None)
        except audit.InvalidQuery as exc:
            raise CommandError(str(exc)) from None
        rows = feedback.feedback_rows(query.since, query.until)
        if out:
            with open(out, "w", encoding="utf-8") as stream:
                count = audit.write_jsonl(rows, stream)
        else:
            count = audit.write_jsonl(rows, self.stdout)
        self.stderr.write(f"exported {count} proposals")
