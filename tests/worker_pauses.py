"""Loaded into a worker process (CONNECTOR_PLUGINS=tests.worker_pauses) to stop it at one point
between fetching an execution message and committing its claim, so a test can SIGKILL it there.

HITL_TEST_PAUSE_AT names the point:
- received: the worker has fetched the message, the task has not started (Celery `task_received`);
- started:  the task has started, nothing written yet (Celery `task_prerun`);
- claiming: the claim's approved -> executing transition is made but not committed (django-fsm
  `post_transition` of start_execution, inside the claim's transaction, holding the row lock).
At that point the worker writes its pid to HITL_TEST_PAUSE_FILE and sleeps until it is killed.
Without the variables nothing happens.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery.signals import task_prerun, task_received
from django_fsm.signals import post_transition

EXECUTE = "approvals.tasks.execute_proposal"
PAUSE_AT = os.environ.get("HITL_TEST_PAUSE_AT", "")
PAUSE_FILE = os.environ.get("HITL_TEST_PAUSE_FILE", "")


def _pause(point: str) -> None:
    if PAUSE_AT == point and PAUSE_FILE:
        Path(PAUSE_FILE).write_text(str(os.getpid()))
        time.sleep(3600)  # the test kills the worker long before this ends


@task_received.connect
def _on_received(sender=None, request=None, **kwargs) -> None:
    if request is not None and request.name == EXECUTE:
        _pause("received")


@task_prerun.connect
def _on_prerun(sender=None, **kwargs) -> None:
    if sender is not None and sender.name == EXECUTE:
        _pause("started")


@post_transition.connect
def _on_transition(sender=None, name=None, **kwargs) -> None:
    if name == "start_execution":
        _pause("claiming")
