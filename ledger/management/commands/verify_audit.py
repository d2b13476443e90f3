"""Verify the decision log against itself, the history tables and the anchors; exit 1 if anything is off."""

from django.core.management.base import BaseCommand, CommandError

from ledger import anchors
from ledger.verify import adopt_unrecorded, verify

SHOWN = 50


class Command(BaseCommand):
    help = ("Walk the decision log's hash chain and every history table; report the first edited, inserted or "
            "missing event or history row with its position, and a tail truncated behind an anchor. "
            "Exit status 0 only when the log is intact.")

    def add_arguments(self, parser):
        parser.add_argument("--anchor", action="store_true", help="when intact, also write the head as an anchor")
        parser.add_argument("--adopt", action="store_true",
                            help="first record, in one logged event, the history rows written before the log existed")

    def handle(self, anchor=False, adopt=False, **options):
        if adopt:
            self.stdout.write(f"adopted {adopt_unrecorded()} history rows")
        report = verify()
        self.stdout.write(f"{report.events} events, {report.history_rows} history rows; "
                          f"head position {report.head_position} hash {report.head_hash}")
        for problem in report.problems[:SHOWN]:
            self.stdout.write(str(problem))
        if not report.intact:
            more = len(report.problems) - SHOWN
            raise CommandError(f"the decision log is NOT intact: {len(report.problems)} problem(s)"
                               + (f" ({more} not shown)" if more > 0 else ""))
        if anchor:
            anchors.write_anchor()
        self.stdout.write("intact")
