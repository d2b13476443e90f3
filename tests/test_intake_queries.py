"""A submission's database statements are few and do not grow with the data (issue 14).

Counted through the HTTP API as an agent submits, with Django's CaptureQueriesContext;
transaction control (BEGIN, SAVEPOINT, RELEASE, COMMIT) is not counted, every other statement
is: the key, the throttle, the connector, the sandbox's read of its record, the policy, the
agent's track record, the inserts.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Proposal, Status
from connectors.models import Connector
from tests.conftest import SMALL_REFUND, data_statements, log_event_statements, proposal_body



def throttle_statements() -> int:
    """The throttle counts in Redis when the cache is Redis, else in one database row."""
    return 0 if isinstance(caches["default"], RedisCache) else 1



# key, throttle, connector, the sandbox's record, matrix + switches, the agent's surroundings (its track
# record, its recent work with the 99th percentile of its amounts and the open proposals on the same
# record: one statement, approvals.risk),
# proposal, its history (two rows), then either its tiers, theirs and the review group's notification
# channels (review) or its outbox row (auto). Then the decision log's (log_event_statements).
REVIEW_STATEMENTS = 11
AUTO_STATEMENTS = 9


def statements(api, **overrides) -> tuple[dict, list[str]]:
    body = proposal_body(**overrides)
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.json()
    sql = data_statements(captured)
    return response.json(), sql


def long_history(integration, agent: str, rows: int) -> None:
    """`rows` decided proposals of one agent, most of them run without review, as a busy agent's would be,
    with amounts: enough for the 99th percentile, which is read in the same statement as the rest."""
    connector = Connector.objects.get(slug="helpdesk")
    start = timezone.now() - timedelta(days=30)
    Proposal.objects.bulk_create([
        Proposal(
            integration=integration, idempotency_key=f"old-{n}", agent=agent, connector=connector, action="refund",
            amount=Decimal(10 + n % 500), currency="USD", confidence=0.9, outcome="review" if n % 10 == 0 else "auto",
            status=Status.REJECTED if n % 20 == 0 else Status.EXECUTED, created_at=start + timedelta(seconds=n),
        )
        for n in range(rows)
    ], batch_size=1000)


@pytest.fixture
def one_window(monkeypatch):
    """The throttle's window pinned: one that opens mid-test costs its own statements (a new row, the old
    one deleted) once a minute, which is not what a submission costs."""
    from approvals import rate_limit

    start = rate_limit.window_start(timezone.now(), 3600)
    monkeypatch.setattr(rate_limit, "window_start", lambda now, seconds: start)


def warm_up(api) -> None:
    """A worker's first request compiles the matrix and opens the throttle's window: not every request's cost."""
    statements(api, idempotency_key="warm-up")


def test_a_submission_for_review_takes_the_same_few_statements_with_a_long_agent_history(api, demo_matrix, one_window):
    warm_up(api)
    first, before = statements(api, idempotency_key="first")
    long_history(api.integration, "refund-bot", 5000)

    body, after = statements(api, idempotency_key="after-history")

    assert first["status"] == body["status"] == "pending_review"
    assert len(before) == len(after) == REVIEW_STATEMENTS - 1 + throttle_statements() + log_event_statements(), "\n".join(after)
    assert body["review"]["tiers"][0]["group"] == "finance" and body["review"]["tiers"][0]["due_at"]


def test_an_automatic_approval_takes_fewer_statements_still(api, demo_matrix, one_window):
    warm_up(api)
    long_history(api.integration, "refund-bot", 2000)

    body, sql = statements(api, idempotency_key="small", **SMALL_REFUND)

    assert body["status"] == "approved"
    assert len(sql) == AUTO_STATEMENTS - 1 + throttle_statements() + log_event_statements(), "\n".join(sql)
    assert sum(s.startswith('INSERT INTO "approvals_outboxmessage"') for s in sql) == 1


def test_the_answer_to_a_submission_is_what_reading_it_back_gives(api, demo_matrix):
    body, _ = statements(api, idempotency_key="read-back")

    again = api.get(f"/api/v1/proposals/{body['id']}/").json()
    assert body == again


# ---- concurrent writers -------------------------------------------------------------------------

def post(url: str, key: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_simultaneous_submissions_all_succeed_none_sees_a_locked_database(transactional_db, live_server, make_client,
                                                                          demo_matrix):
    """Writers released together through a threaded server: on SQLite they queue on the write lock
    (immediate transactions, busy timeout) instead of one failing with "database is locked"."""
    client, calls = make_client(), 12
    start = threading.Barrier(calls)
    codes: list[int] = []

    def one(n: int) -> None:
        start.wait()
        codes.append(post(f"{live_server.url}/api/v1/proposals/", client.raw_key, proposal_body(idempotency_key=f"c{n}")))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)

    assert codes == [201] * calls
    assert Proposal.objects.filter(idempotency_key__startswith="c").count() == calls


def test_a_submission_announces_its_first_tier_without_looking_for_an_earlier_announcement(api, demo_matrix, one_window,
                                                                                             channel):
    """The tier is new in the submission's transaction: nothing can have announced it, so the review group's
    message is stored without a read of the notifications (the one-per-event constraint still holds)."""
    channel("finance")
    warm_up(api)

    body, sql = statements(api, idempotency_key="announced")

    assert body["status"] == "pending_review"
    assert sum(s.startswith('INSERT INTO "approvals_notification"') for s in sql) == 1
    assert not any(s.startswith("SELECT") and 'FROM "approvals_notification"' in s for s in sql), "\n".join(sql)


def test_the_connector_a_submission_names_is_read_as_the_orm_reads_it(db, sandbox):
    """hitlgov.raw_rows.first writes the read once per process instead of compiling it per request
    (989 -> 169 us on SQLite): the same row, every value as the ORM converts it, or nothing."""
    from hitlgov import raw_rows

    Connector.objects.create(slug="off", name="Off", kind="sandbox", enabled=False, config={"connector_slug": "off"},
                             credentials={"token": "env:HITL_SECRET_OFF_TOKEN"})
    read = lambda slug: raw_rows.first(Connector, "slug = %s AND enabled = %s", [slug, True])  # noqa: E731

    for slug in [*Connector.objects.values_list("slug", flat=True), "nowhere"]:
        expected = Connector.objects.filter(slug=slug, enabled=True).first()
        got = read(slug)
        assert (got is None) == (expected is None), slug
        if expected is not None:
            assert {f.attname: getattr(got, f.attname) for f in Connector._meta.concrete_fields} == \
                   {f.attname: getattr(expected, f.attname) for f in Connector._meta.concrete_fields}
            assert got._state.adding is False and got.health_checked_at == expected.health_checked_at
    assert read("off") is None


def test_the_sandbox_reads_a_record_as_the_orm_reads_it_and_only_its_own(db, sandbox):
    """The preview's read of a sandbox record is a statement written once per process (hitlgov.raw_rows):
    the same data the ORM's join gives, nothing of another sandbox's records, a 404 for a missing one."""
    from connectors.adapters.base import RecordNotFound, Target
    from connectors.models import SandboxRecord
    from connectors.services import adapter_for

    SandboxRecord.objects.create(connector=sandbox.crm, type="order", record_id="A-1001", data={"status": "crm's own"})
    helpdesk, crm = adapter_for(sandbox.helpdesk), adapter_for(sandbox.crm)

    for record in SandboxRecord.objects.filter(connector=sandbox.helpdesk):
        assert helpdesk.read(Target(record.type, record.record_id)) == record.data
    assert crm.read(Target("order", "A-1001")) == {"status": "crm's own"}
    with pytest.raises(RecordNotFound, match="no order A-9999 in sandbox helpdesk") as missing:
        helpdesk.read(Target("order", "A-9999"))
    assert missing.value.status == 404
    with pytest.raises(RecordNotFound):
        crm.read(Target("ticket", "T-1001"))  # the helpdesk's, not the CRM's
