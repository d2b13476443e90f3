"""Write the oversight evidence pack for a period: evidence_pack.html plus the CSVs behind it."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from approvals import audit, evidence


class Command(BaseCommand):
    help = "Write the human-oversight evidence pack (HTML, printable to PDF, and its CSVs) for [since, until) into a directory."

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="inclusive, ISO 8601 (UTC if no offset)")
        parser.add_argument("--until", required=True, help="exclusive, ISO 8601 (UTC if no offset)")
        parser.add_argument("--out", required=True, help="directory to write into (created if missing)")

    def handle(self, since, until, out, **options):
        try:
            query = audit.parse_query(since, until, None)
        except audit.InvalidQuery as exc:
            raise CommandError(str(exc)) from None
        pack = evidence.build(query.since, query.until)
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "evidence_pack.html").write_text(evidence.html(pack), encoding="utf-8")
        for name, text in evidence.csv_files(pack).items():
            (folder / name).write_text(text, encoding="utf-8", newline="")
        self.stdout.write(f"wrote {folder / 'evidence_pack.html'} and {len(evidence.csv_files(pack))} CSV files")
