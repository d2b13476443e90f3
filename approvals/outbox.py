"""The transactional outbox: work that must run is stored with the change that demands it.

A broker publish cannot join a database transaction. So an operation that queues work (an
approval queues its execution) writes an OutboxMessage in its own transaction; the message
exists exactly when the approval committed, stored claimed by its writer, which publishes it
after the commit; a broker error is logged and the row is due again, so the client still gets
its answer. The beat
sweep (`dispatch_due`) publishes every due row still unsent.

A published message can still be lost: Celery's filesystem broker forgets a message once a
worker fetched it, so a worker killed before claiming leaves the proposal `approved`.
`resume_unstarted` sends again the execution of any proposal still `approved` a grace period
after its message went out. Duplicates are harmless: the executor's claim is a conditional
approved -> executing transition under a row lock, so only one delivery ever writes.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from approvals.models import OutboxMessage, Proposal, Status
from connectors.services import kinds_executed_by_client

logger = logging.getLogger(__name__)

EXECUTE = "approvals.tasks.execute_proposal"
# A dead broker must not hold a web request for long: three quick tries, then the row waits for the sweep.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# A publisher that died between claiming a row and recording the publish frees it after this.
CLAIM_SECONDS = 60
# A row its writer publishes after the commit is stored claimed for this long: the after-commit hook
# runs within milliseconds and its publish gives up within about a second (PUBLISH_RETRY_POLICY), so
# the sweep never sends it alongside; if the writer died before its hook, the sweep sends it after this.
FRESH_CLAIM_SECONDS = 10
SWEEP_BATCH = 1000


# ---- writing: inside the caller's transaction ----------------------------------------------------

def enqueue(task: str, args: list[Any], *, proposal: Proposal | None = None,
            due_at: datetime | None = None) -> OutboxMessage:
    """Store `task(*args)` to run; published once the caller's transaction commits, or by the
    sweep at `due_at` (a retry's later time). Never publishes before the commit."""
    now = timezone.now()
    if due_at is not None and due_at > now:
        return OutboxMessage.objects.create(task=task, args=list(args), proposal=proposal, due_at=due_at)
    # Due now: stored already claimed by this writer (one attempt), and published straight after the
    # commit, not at the next beat tick. A claim UPDATE after the commit cost every submission a write
    # transaction of its own. A lambda: robust logging needs __qualname__.
    message = OutboxMessage.objects.create(task=task, args=list(args), proposal=proposal, attempts=1,
                                           due_at=now + timedelta(seconds=FRESH_CLAIM_SECONDS))
    transaction.on_commit(lambda: _publish_claimed(message.pk, message.task, message.args, timezone.now()), robust=True)
    return message
    return message


# ---- publishing ----------------------------------------------------------------------------------

def publish(task: str, args: list[Any]) -> Exception | None:
    """Send one task message to the broker, giving up quickly. Returns the error (logged), never raises.

    For rows that are themselves the durable record (a due CallbackDelivery, an executing
    proposal whose lease ran out), the sweep finds them again, so this is all they need.
    """
    try:
        _task(task).apply_async(args=args, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except Exception as exc:  # a broker or network error must never reach the client or the hook
        logger.error("could not publish %s%s: %s: %s", task, tuple(args), type(exc).__name__, exc)
        return exc
    return None


def _task(name: str):
    module, _, function = name.rpartition(".")
    return getattr(import_module(module), function)


def dispatch(message_id: int, now: datetime | None = None) -> bool:
    """Publish one due, unsent message; True if the broker took it."""
    return _dispatch(message_id, now or timezone.now()) == SENT


SENT, NOT_DUE = "sent", "not due"
BROKER_ERRORS = (OperationalError, OSError)  # connection refused, timeouts, a missing broker folder


def _dispatch(message_id: int, now: datetime) -> str | Exception:
    """SENT, NOT_DUE (someone else has it, or it is not due) or the publish error.

    The claim (a conditional update moving `due_at` on) keeps two sweeps, or a sweep and the
    writer's after-commit hook, from publishing the same row at once; a failure makes it due again.
    """
    claimed = OutboxMessage.objects.filter(pk=message_id, sent_at__isnull=True, due_at__lte=now).update(
        attempts=F("attempts") + 1, due_at=now + timedelta(seconds=CLAIM_SECONDS),
    )
    if not claimed:
        return NOT_DUE
    message = OutboxMessage.objects.only("task", "args").get(pk=message_id)
    return _publish_claimed(message_id, message.task, message.args, now)


def _publish_claimed(message_id: int, task: str, args: list[Any], now: datetime) -> str | Exception:
    """Publish a row this process has claimed, then record the outcome: sent, or due again with the error."""
    error = publish(task, args)
    if error is not None:
        OutboxMessage.objects.filter(pk=message_id, sent_at__isnull=True).update(
            due_at=now, last_error=f"{type(error).__name__}: {error}"[:2000],
        )
        return error
    OutboxMessage.objects.filter(pk=message_id).update(sent_at=timezone.now())
    return SENT


def dispatch_due(now: datetime | None = None) -> int:
    """From the sweep: publish the due unsent messages, oldest first. Returns how many went out.

    Stops at the first broker error: the rest would only wait for the same dead broker.
    """
    now = now or timezone.now()
    due = OutboxMessage.objects.filter(sent_at__isnull=True, due_at__lte=now).order_by("due_at", "id")
    sent = 0
    for message_id in list(due.values_list("pk", flat=True)[:SWEEP_BATCH]):
        result = _dispatch(message_id, now)
        if result == SENT:
            sent += 1
        elif isinstance(result, BROKER_ERRORS):
            break
    return sent


# ---- approved work whose message was lost --------------------------------------------------------

def unstarted_approvals(now: datetime | None = None) -> list[str]:
    """Proposals still `approved` a grace period after their execution went out (or with none
    pending): the message was lost after the broker handed it to a worker."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.EXECUTION_DISPATCH_GRACE_SECONDS)
    pending_or_recent = OutboxMessage.objects.filter(proposal=OuterRef("pk"), task=EXECUTE).filter(
        Q(sent_at__isnull=True) | Q(sent_at__gt=cutoff)
    )
    lost = (Proposal.objects.filter(status=Status.APPROVED, updated_at__lt=cutoff).exclude(Exists(pending_or_recent))
            .exclude(connector__kind__in=kinds_executed_by_client()))  # those wait for the integration's report
    return [str(pk) for pk in lost.values_list("pk", flat=True)[:SWEEP_BATCH]]


def resume_unstarted(now: datetime | None = None) -> int:
    """Send the execution of every unstarted approval again, on its own outbox row. Returns how many."""
    now = now or timezone.now()
    resumed = 0
    for proposal_id in unstarted_approvals(now):
        message_id = _rearm(proposal_id, now)
        resumed += 1
        dispatch(message_id, now)
    return resumed


def _rearm(proposal_id: str, now: datetime) -> int:
    """The proposal's last execution message made unsent again, saying why (one row per execution,
    its attempts counting up for operators); a new row if it has none (approved before the outbox)."""
    latest = OutboxMessage.objects.filter(proposal_id=proposal_id, task=EXECUTE).order_by("-id").first()
    if latest is None:
        return OutboxMessage.objects.create(task=EXECUTE, args=[proposal_id], proposal_id=proposal_id, due_at=now).pk
    why = f"sent at {latest.sent_at:%Y-%m-%d %H:%M:%S}Z but never started (message lost): sent again"
    # Conditional on what was read: a sweep running alongside does not re-arm it a second time.
    OutboxMessage.objects.filter(pk=latest.pk, sent_at=latest.sent_at).update(sent_at=None, due_at=now, last_error=why)
    return latest.pk
