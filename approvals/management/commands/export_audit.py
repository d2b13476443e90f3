"""Export the audit trail (the rows of GET /api/v1/audit/) as JSON Lines or CSV, streamed in flat memory."""

from django.core.management.base import BaseCommand, CommandError

from approvals import audit


class Command(BaseCommand):
    help = (
        "Stream every history row of proposals, matrices, connectors and kill switches in [since, until) "
        "as JSON Lines (one row a line) or CSV (one changed field a line; old/new as JSON)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="inclusive, ISO 8601 (UTC if no offset)")
        parser.add_argument("--until", required=True, help="exclusive, ISO 8601 (UTC if no offset)")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--object", help=f"comma-separated of {', '.join(audit.FAMILIES)}; default all")
        parser.add_argument("--out", help="file to write; default standard output")
        parser.add_argument("--mask-sensitive", action="store_true",
                            help="mask the values of connector-declared sensitive fields (for readers without see_sensitive)")

    def handle(self, since, until, format, object=None, out=None, mask_sensitive=False, **options):
        try:
            query = audit.parse_query(since, until, object, mask_sensitive=mask_sensitive)
        except audit.InvalidQuery as exc:
            raise CommandError(str(exc)) from None
        rows = (row for _, row in audit.audit_rows(query))
        write = audit.write_csv if format == "csv" else audit.write_jsonl
        if out:
            with open(out, "w", encoding="utf-8", newline="") as stream:
                count = write(rows, stream)
        else:
            count = write(rows, self.stdout)  # every write ends its line, so OutputWrapper adds nothing
        self.stderr.write(f"exported {count} history rows")
