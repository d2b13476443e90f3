"""Replay stored proposals against a matrix version and print what would change. Writes no proposal."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from policies import simulation
from policies.management.commands._matrix_args import matrix_version
from policies.models import SimulationRun


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"not an ISO date or time: {text!r} (e.g. 2026-11-01 or 2026-11-01T08:00)") from None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = "Simulate a matrix version (a number, or 'live') against stored proposals and print the summary."

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument("--since", type=_moment, help="proposals created at or after (ISO 8601)")
        parser.add_argument("--until", type=_moment, help="proposals created before (ISO 8601)")
        parser.add_argument("--sample", type=int, help="a random sample of this many proposals")

    def handle(self, version, since=None, until=None, sample=None, **options):
        matrix = matrix_version(version)
        run = SimulationRun(matrix=matrix, since=since, until=until, sample_size=sample)
        try:
            run.full_clean()
        except ValidationError as exc:
            problems = (f"--{field.removesuffix('_size')}: {', '.join(text)}" for field, text in exc.message_dict.items())
            raise CommandError("; ".join(problems)) from None
        run.save()
        status = simulation.execute(run.pk)  # here, not on a worker: the command waits anyway
        run.refresh_from_db()
        if status != SimulationRun.State.DONE:
            raise CommandError(f"simulation run {run.pk} {status}: {run.error}")
        self.stdout.write(simulation.summary_text(run.result), ending="")
        self.stderr.write(f"recorded as simulation run {run.pk}")
