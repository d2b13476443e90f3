"""A decided record of many proposals, written by the database itself (INSERT ... SELECT over a
number series), for measuring pages that read the record: 100,000 rows in seconds, not minutes.

Used by bench/dashboard.py and by the dashboard's query-count test. Proposals only *look* decided
(statuses, outcomes, tiers and verdicts as the lifecycle leaves them, no history rows): nothing here
is a way to make a real proposal. Columns not named below get their model default, so new fields
added to Proposal keep working.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone

from approvals.models import Proposal, Review, ReviewTask

AGENTS = (("crm-assistant", "update_account", "crm"), ("deal-bot", "update_opportunity", "crm"),
          ("refund-bot", "refund", "helpdesk"), ("mail-bot", "send_email", "email"), ("ticket-bot", "close_ticket", "helpdesk"))
# Every tenth proposal is open (pending review); the rest mostly ran alone or were approved by people.
STATUS_SQL = ("CASE WHEN i %% 10 = 0 THEN 'pending_review' WHEN i %% 10 = 1 THEN 'rejected' WHEN i %% 10 = 2 THEN 'blocked' "
              "WHEN i %% 10 = 3 THEN 'triage' WHEN i %% 50 = 4 THEN 'failed' ELSE 'executed' END")
OUTCOME_SQL = ("CASE WHEN i %% 10 IN (0, 1, 5, 6) THEN 'review' WHEN i %% 10 = 2 THEN 'block' WHEN i %% 10 = 3 THEN 'triage' "
               "ELSE 'auto' END")


def _series(n: int) -> str:
    if connection.vendor == "postgresql":
        return f"generate_series(1, {int(n)}) AS seq(i)"
    return f"(WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {int(n)}) SELECT i FROM seq)"


def _days_before(now_param: str, days_sql: str) -> str:
    if connection.vendor == "postgresql":
        return f"CAST({now_param} AS timestamptz) - ({days_sql}) * interval '1 day'"
    return f"datetime({now_param}, '-' || ({days_sql}) || ' days')"


def _uuid() -> str:
    if connection.vendor == "postgresql":
        return "CAST(md5(random()::text || i::text) AS uuid)"
    return "lower(hex(randomblob(16)))"


def _case(values: list, key: str = "i") -> str:
    whens = " ".join(f"WHEN {key} %% {len(values)} = {n} THEN {v}" for n, v in enumerate(values))
    return f"CASE {whens} END"


def _insert(model, exprs: dict[str, str], expr_params: list, source: str, source_params: list = ()) -> None:
    """INSERT INTO the model's table (its concrete columns) SELECT `exprs`, or each other field's default, FROM `source`."""
    columns, values, params = [], [], []
    given = iter(expr_params)
    for field in model._meta.concrete_fields:
        if field.primary_key and field.name not in exprs:
            continue  # an auto-increment key
        columns.append(connection.ops.quote_name(field.column))
        if field.name in exprs:
            values.append(exprs[field.name])
            params += [next(given) for _ in range(exprs[field.name].count("%s"))]
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    sql = (f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({', '.join(columns)}) "
           f"SELECT {', '.join(values)} FROM {source}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *source_params])


def _minutes_after(column: str, minutes_sql: str) -> str:
    if connection.vendor == "postgresql":
        return f"{column} + ({minutes_sql}) * interval '1 minute'"
    return f"datetime({column}, '+' || ({minutes_sql}) || ' minutes')"


def insert_proposals(n: int, *, integration_id: int, connectors: dict[str, int], review_group_id: int,
                     reviewer_ids: list[int], batch: str = "bulk", now: datetime | None = None, days: int = 30) -> None:
    """`n` proposals spread over the last `days` days and five agents; 10% open with an active tier
    (due when submitted, so overdue), the reviewed ones with a satisfied or rejected tier and a verdict."""
    now = now or timezone.now()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    agents = [f"'{a}'" for a, _, _ in AGENTS]
    actions = [f"'{x}'" for _, x, _ in AGENTS]
    connector_ids = [str(connectors[c]) for _, _, c in AGENTS]
    exprs = {
        "id": _uuid(), "integration": "%s", "idempotency_key": f"'{batch}-' || i", "request_hash": "'0'",
        "agent": _case(agents), "action": _case(actions), "connector": _case(connector_ids),
        "confidence": "0.80 + (i %% 20) / 100.0", "status": STATUS_SQL, "outcome": OUTCOME_SQL,
        "edited": "i %% 10 = 6", "change_hash": "'0'", "created_at": _days_before("%s", f"i %% {int(days)}"),
        "updated_at": "%s",
    }
    _insert(Proposal, exprs, [integration_id, stamp, stamp], _series(n))
    mine = f"(SELECT id, status, outcome, created_at FROM {Proposal._meta.db_table} WHERE idempotency_key LIKE %s) AS p"
    # Tiers: active for the open ones, satisfied or rejected for those people decided.
    task_exprs = {"proposal": "p.id", "position": "0", "group": "%s", "required": "1", "mode": "'any'",
                  "bulk_allowed": "0 = 1", "sla_minutes": "240",
                  "due_at": "CASE WHEN p.status = 'pending_review' THEN p.created_at END",
                  "state": "CASE p.status WHEN 'pending_review' THEN 'active' WHEN 'rejected' THEN 'rejected' ELSE 'satisfied' END"}
    source = f"{mine} WHERE p.outcome = 'review'"
    _insert(ReviewTask, task_exprs, [review_group_id], source, [f"{batch}-%"])
    reviewer = _case([str(r) for r in reviewer_ids], key="t.id")
    review_exprs = {"proposal": "t.proposal_id", "task": "t.id", "reviewer": reviewer,
                    "verdict": "CASE t.state WHEN 'rejected' THEN 'reject' ELSE 'approve' END",
                    "change_hash": "'0'", "via": "'admin'",
                    "created_at": _minutes_after("t.created_at", "t.id %% 300")}  # 0 to 5 hours to a verdict
    tasks = (f"(SELECT t.id, t.proposal_id, t.state, p.created_at FROM {ReviewTask._meta.db_table} t "
             f"JOIN {Proposal._meta.db_table} p ON p.id = t.proposal_id WHERE p.idempotency_key LIKE %s "
             f"AND t.state IN ('satisfied', 'rejected')) AS t")
    _insert(Review, review_exprs, [], tasks, [f"{batch}-%"])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
