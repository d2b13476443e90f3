"""Loaded into a worker process (CONNECTOR_PLUGINS=tests.worker_connections): as each execution task
starts, it appends to HITL_TEST_CONNECTIONS_FILE whether the worker's database connection is already
open ("open") or the task must connect ("closed"). Without the variable nothing happens."""

from __future__ import annotations

import os

from celery.signals import task_prerun
from django.db import connection

EXECUTE = "approvals.tasks.execute_proposal"
CONNECTIONS_FILE = os.environ.get("HITL_TEST_CONNECTIONS_FILE", "")


@task_prerun.connect
def note_the_connection(task=None, **kwargs) -> None:
    if CONNECTIONS_FILE and task is not None and task.name == EXECUTE:
        with open(CONNECTIONS_FILE, "a") as notes:
            notes.write("open\n" if connection.connection is not None else "closed\n")
