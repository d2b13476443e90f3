"""The reviewer's inbox and decision page (approvals.inbox, approvals.admin_inbox), through the admin's real views."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.admin.templatetags.admin_list import items_for_result
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals import inbox, services
from approvals.templatetags import inbox_list
from approvals.masking import MASK
from approvals.models import OversightTask, Proposal, ReviewTask, Status
from tests.conftest import matrix_spec, reload, rule, tier

LIST = reverse("admin:approvals_proposal_changelist")
SUPPORT_TICKET = dict(connector="helpdesk", action="set_status", target={"type": "ticket", "id": "T-1001"}, amount=None,
                      currency=None, confidence=0.8, customer_impact="medium", changes={"status": "closed", "owner": "bob"})


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_of(proposal) -> str:
    return reverse("admin:approvals_proposal_change", args=[proposal.pk])


def rows(response) -> list[str]:
    """The list's rows as text, in order."""
    body = response.content.decode()
    return [re.sub(r"<[^>]+>", " ", row) for row in re.findall(r"<tr>(.*?)</tr>", body.split('id="result_list"')[1], re.S)][1:]


def due_in(proposal, minutes: float) -> None:
    """Arrange: the proposal's active tier (and so the proposal) falls due `minutes` from now."""
    due = timezone.now() + timedelta(minutes=minutes)
    ReviewTask.objects.filter(proposal=proposal, state=ReviewTask.State.ACTIVE).update(due_at=due)
    Proposal.objects.filter(pk=proposal.pk).update(due_at=due)


# ---- landing and order ----------------------------------------------------------------------------

def test_a_reviewer_lands_on_their_own_work_most_urgent_first(submit, people):
    later = submit("later", target={"type": "order", "id": "A-1001"})
    big = submit("big", amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"},
                 target={"type": "order", "id": "A-1002"})
    small = submit("small", amount="150.00", changes={"status": "refunded", "refund_amount": "150.00"},
                   target={"type": "order", "id": "A-1003"})
    overdue = submit("overdue", target={"type": "order", "id": "A-1004"})
    theirs = submit("support's", **SUPPORT_TICKET)
    due_in(later, 200), due_in(big, 60), due_in(small, 60), due_in(overdue, -30)

    client = browser(people.finance1)
    landing = client.get(LIST)
    assert landing.status_code == 302 and landing.url.endswith("?queue=mine")
    listed = rows(client.get(landing.url))

    keys = [next(key for key in ("A-1004", "A-1002", "A-1003", "A-1001") if key in row) for row in listed]
    assert keys == ["A-1004", "A-1002", "A-1003", "A-1001"]  # overdue, then due soonest, the larger amount first
    assert "overdue by 30 min" in listed[0] and "&#9888;" in client.get(landing.url).content.decode()
    assert "due in 3 h" in listed[3] and "finance (0/1)" in listed[3]
    assert "high (0.93)" in listed[3] and "refund order/A-1001: status → refunded, refund_amount → 120.00" in listed[3]
    assert not any("T-1001" in row for row in listed) and reload(theirs).active_group.name == "support"
    tabs = client.get(landing.url).content.decode()
    assert re.search(r'id="queue-mine"[^>]*>My work\s*<span class="queue-count">4</span>', tabs)


def test_operators_land_on_held_and_failed_work_and_superusers_on_everything_open(submit, people, failed):
    held = submit("held", confidence=0.5)
    broken = failed("broken", target={"type": "order", "id": "A-1002"})
    waiting = submit("waiting", target={"type": "order", "id": "A-1003"})
    assert reload(held).status == Status.TRIAGE

    operator = browser(people.operator)
    landing = operator.get(LIST)
    assert landing.url.endswith("?queue=attention")
    listed = " ".join(rows(operator.get(landing.url)))
    assert "A-1001" in listed and "A-1002" in listed and "A-1003" not in listed
    assert broken.status == Status.FAILED and waiting.status == Status.PENDING_REVIEW

    admin = get_user_model().objects.create_superuser("root", password="pw")
    landing = browser(admin).get(LIST)
    assert landing.url.endswith("?queue=open")
    listed = " ".join(rows(browser(admin).get(landing.url)))
    assert "A-1001" in listed and "A-1003" in listed and "A-1002" not in listed  # failed is not open


def test_all_lists_open_work_before_finished_work(submit, executed, people):
    done = executed("done", record="A-1005")
    held = submit("held", confidence=0.5, target={"type": "order", "id": "A-1001"})  # open, no due time
    waiting = submit("waiting", target={"type": "order", "id": "A-1002"})
    listed = rows(browser(people.operator).get(LIST, {"queue": "all"}))
    order = [key for row in listed for key in ("A-1005", "A-1001", "A-1002") if key in row]
    assert order == ["A-1002", "A-1001", "A-1005"]  # due first, then open without a due time, then finished
    assert done.due_at is None and reload(held).due_at is None and reload(waiting).due_at is not None


def test_all_lists_what_my_groups_tiers_escalations_and_oversight_hold_and_nothing_else(submit, people):
    """A reviewer's "All I can see": a tier of their group, a tier escalated to it, an alert for it or escalated
    to it. On PostgreSQL that is one semi-join: an OR of two IN subqueries made it read every proposal and probe
    two hashed sets (57 ms at 100,000 proposals)."""
    finance, support = (Group.objects.get(name=name) for name in ("finance", "support"))
    own = submit("own", target={"type": "order", "id": "A-1001"})
    theirs, escalated, alert, escalated_alert, alert_not_escalated = (
        submit(f"ticket-{n}", **{**SUPPORT_TICKET, "target": {"type": "ticket", "id": f"T-100{n}"}}) for n in range(1, 6))
    ReviewTask.objects.filter(proposal=escalated).update(escalation_group=finance, escalated_at=timezone.now())
    ReviewTask.objects.filter(proposal=theirs).update(escalation_group=finance)  # not escalated (yet)
    OversightTask.objects.create(proposal=alert, kind="alert", group=finance)
    OversightTask.objects.create(proposal=escalated_alert, kind="alert", group=support, escalation_group=finance,
                                 state=OversightTask.State.ESCALATED)
    OversightTask.objects.create(proposal=alert_not_escalated, kind="alert", group=support, escalation_group=finance)

    page = browser(people.finance1).get(LIST, {"queue": "all"}).content.decode()

    shown = {p for p in (own, theirs, escalated, alert, escalated_alert, alert_not_escalated) if page_of(p) in page}
    assert shown == {own, escalated, alert, escalated_alert}
    assert re.search(r'id="queue-all"[^>]*>All I can see\s*<span class="queue-count">4</span>', page)
    if connection.vendor == "postgresql":
        sql, params = Proposal.objects.filter(inbox.visible_q(people.finance1)).values("pk").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        # A join (PostgreSQL names a nested loop without the word), never a subquery run per proposal.
        assert "SubPlan" not in plan and re.search(r"Join|Nested Loop", plan), plan


@pytest.mark.matrix(matrix_spec(rule("refunds", "review", actions=["refund"],
                                     tiers=(tier("finance", escalation_group="finance-leads", sla_minutes=10),))))
def test_an_escalated_tier_joins_the_escalation_groups_work_and_leaves_when_decided(submit, people):
    proposal = submit("late")
    lead = people.make("lead", "finance-leads")
    assert not Proposal.objects.filter(inbox.may_decide_q(lead)).exists()

    assert services.escalate_overdue(now=timezone.now() + timedelta(minutes=11)) == 1
    assert list(Proposal.objects.filter(inbox.may_decide_q(lead))) == [proposal]
    assert list(Proposal.objects.filter(inbox.may_decide_q(people.finance1))) == [proposal]

    services.record_verdict(proposal.pk, lead, "approve")
    proposal = reload(proposal)
    assert proposal.status == Status.APPROVED  # its execution is queued after commit
    assert (proposal.active_group, proposal.escalated_to, proposal.due_at) == (None, None, None)
    assert not Proposal.objects.filter(inbox.may_decide_q(lead)).exists()


@pytest.mark.matrix(matrix_spec(rule("refunds", "review", actions=["refund"], tiers=(tier("finance", required=2),))))
def test_a_row_counts_the_approvals_its_active_tier_has_of_the_change_as_it_stands(submit, people):
    halfway, untouched = submit("halfway"), submit("untouched", target={"type": "order", "id": "A-1002"})
    services.record_verdict(halfway.pk, people.finance2, "approve")

    listed = rows(browser(people.finance1).get(LIST, {"queue": "mine"}))
    assert reload(halfway).status == Status.PENDING_REVIEW
    assert [row for row in listed if "A-1001" in row][0].count("finance (1/2)") == 1
    assert [row for row in listed if "A-1002" in row][0].count("finance (0/2)") == 1
    assert untouched.status == Status.PENDING_REVIEW


# ---- speed: queries that do not grow with the data ------------------------------------------------

def count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_the_inbox_and_the_decision_page_answer_in_a_constant_number_of_queries(submit, people):
    first = submit("first")
    services.record_verdict(submit("decided").pk, people.finance2, "reject", "not this one")
    client = browser(people.finance1)
    inbox_url, decision_url = LIST + "?queue=mine", page_of(first)
    count_queries(client, inbox_url), count_queries(client, decision_url)  # warm: content types, the matrix
    few = count_queries(client, inbox_url), count_queries(client, decision_url)

    for n in range(25):  # more work, more on the same record, a longer track record, some in other queues
        proposal = submit(f"more-{n}", target={"type": "order", "id": "A-1001"})
        if n % 3 == 0:
            services.record_verdict(proposal.pk, people.finance2, "reject", "no")
        if n % 5 == 0:
            submit(f"support-{n}", **SUPPORT_TICKET)
    many = count_queries(client, inbox_url), count_queries(client, decision_url)

    assert many == few, f"inbox and decision page queries grew: {few} -> {many}"
    # Session, user, permissions, groups, the tabs' and list's counts in one, the page's ids, its rows,
    # bulk approval, the connector and agent filters: each once (it was 20 with each count and lookup apart).
    assert few[0] <= 11, f"the inbox ran {few[0]} queries"
    with CaptureQueriesContext(connection) as listing:
        client.get(inbox_url)
    proposal_rows = [q["sql"] for q in listing.captured_queries if '"approvals_proposal"."changes"' in q["sql"]]
    # The rows read the columns the list shows: not the evidence, the decision or what the agent observed.
    assert len(proposal_rows) == 1 and not any(f'"approvals_proposal"."{column}"' in proposal_rows[0]
                                               for column in ("evidence", "decision", "observed", "context", "preview_before"))
    assert len(rows(client.get(inbox_url))) == 1 + 25 - 9  # open finance work only


def test_the_decision_page_reads_the_proposal_its_tiers_executions_and_oversight_once(submit, people):
    """The page, its six steps, its thread, its oversight buttons and the admin's own form each read them
    again: the proposal four times, its tiers, executions and oversight task three times each (31 queries)."""
    proposal = submit("first")
    client = browser(people.finance1)
    client.get(page_of(proposal))  # warm: content types, the matrix
    with CaptureQueriesContext(connection) as page:
        assert client.get(page_of(proposal)).status_code == 200

    def reads_of(table: str) -> int:
        return sum(query["sql"].startswith(f'SELECT "{table}"."id"') for query in page.captured_queries)

    assert reads_of("approvals_reviewtask") == 1 and reads_of("connectors_execution") == 1
    assert reads_of("approvals_oversighttask") == 0  # joined to the proposal's own read
    whole_proposals = sum('"approvals_proposal"."request_hash"' in query["sql"] for query in page.captured_queries)
    assert whole_proposals == 2  # the proposal, and its branches
    assert len(page.captured_queries) <= 25, len(page.captured_queries)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="asks PostgreSQL's planner, for which the index is built; SQLite cannot match a partial index to bound parameters")
def test_my_work_is_read_in_due_order_from_the_index_of_waiting_work_not_sorted_whole(submit, people):
    """A page of my work stops after its rows: the index of waiting proposals by due time serves the list's order,
    and PostgreSQL has statistics over the groups and the status together to know a group's share of the waiting
    work. Read whole and sorted, a group's 33,000 waiting proposals took 317 ms at 1,000,000 proposals."""
    for n in range(3):
        submit(f"w{n}", target={"type": "order", "id": f"A-100{n + 1}"})
    page = inbox.urgent_first(Proposal.objects.filter(inbox.may_decide_q(people.finance1))).values_list("pk", flat=True)
    sql, params = page[:50].query.sql_with_params()
    with connection.cursor() as cursor:
        # On a test's few rows a planner reads the table whole and sorts it; without those, what the index can do shows.
        cursor.execute("ANALYZE approvals_proposal")  # a live table has statistics (autovacuum takes them)
        switched_off = ("enable_seqscan", "enable_bitmapscan", "enable_sort")
        for setting in switched_off:
            cursor.execute(f"SET {setting} = off")
        try:
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            for setting in switched_off:
                cursor.execute(f"RESET {setting}")
        cursor.execute("SELECT stxname FROM pg_statistic_ext WHERE stxname = 'proposal_inbox_groups'")
        statistics = cursor.fetchall()

    assert "Index Scan using proposal_waiting_due" in plan and re.search(r"Presorted Key: [\w.]*due_at\n", plan), plan
    assert statistics == [("proposal_inbox_groups",)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="asks PostgreSQL's planner, for which the index is built; SQLite cannot match a partial index to bound parameters")
def test_whether_bulk_approval_is_offered_is_read_from_the_tiers_that_allow_it_alone(submit, people):
    """Every inbox page asks whether any active tier of the person's groups allows bulk approval: answered from
    the few tiers that do, not by reading all of the groups' active tiers to find none (14-49 ms at 1,000,000)."""
    submit("first")
    with CaptureQueriesContext(connection) as asked:
        assert inbox.bulk_possible(people.finance1) is False
    plan = plan_without_seqscan(asked.captured_queries[-1]["sql"], analyzed="approvals_reviewtask")

    assert "tier_bulk" in plan, plan


def plan_without_seqscan(sql: str, analyzed: str) -> str:
    """PostgreSQL's plan for `sql` with sequential scans off (a test's few rows are otherwise read whole) and
    fresh statistics of the table `analyzed` (left from earlier tests, they made the plan depend on test order)."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {analyzed}")
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute("EXPLAIN " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")


def test_queue_counts_are_capped_rather_than_counted_to_the_end(submit, people):
    for n in range(4):
        submit(f"w{n}", target={"type": "order", "id": f"A-100{n + 1}"})
    visible = Proposal.objects.all()
    assert inbox.capped_count(visible, cap=2) == 3  # "2+": counting stopped after cap + 1
    assert inbox.capped_count(visible, cap=10) == 4
    with CaptureQueriesContext(connection) as counting:
        counts = inbox.capped_counts([(visible, 2), (visible.filter(target_id="A-1001"), 10), (visible, 2)])
    assert counts == [3, 1, 3] and len(counting) == 1  # every count in one statement, the repeated one once
    assert counting[0]["sql"].count("COUNT(*)") == 2


def test_a_count_of_parts_adds_them_up_and_stops_at_its_cap(submit, people):
    for n in range(4):
        submit(f"w{n}", target={"type": "order", "id": f"A-100{n + 1}"})
    one, others = Proposal.objects.filter(target_id="A-1001"), Proposal.objects.exclude(target_id="A-1001")

    assert inbox.capped_counts([((one, others), 10), ((one, others), 2), ((one, Proposal.objects.none()), 10)]) == [4, 3, 1]


def test_my_work_counts_each_proposal_once_whichever_way_it_is_the_persons(submit, people):
    """My work's count adds its two conditions counted apart: a proposal of the person's group that is also
    escalated to it is counted once, escalated work of another group's is counted too."""
    finance, support = Group.objects.get(name="finance"), Group.objects.get_or_create(name="support")[0]
    own, both, escalated, not_mine = (submit(f"c{n}", target={"type": "order", "id": f"A-100{n + 1}"}) for n in range(4))
    Proposal.objects.filter(pk=both.pk).update(escalated_to=finance)
    Proposal.objects.filter(pk__in=[escalated.pk, not_mine.pk]).update(active_group=support)
    Proposal.objects.filter(pk=escalated.pk).update(escalated_to=finance)

    response = browser(people.finance1).get(LIST + "?queue=mine")

    expected = {own.pk, both.pk, escalated.pk}
    assert set(Proposal.objects.filter(inbox.may_decide_q(people.finance1)).values_list("pk", flat=True)) == expected
    counts = {queue.key: count for queue, count in response.context["cl"].queue_counts}
    assert counts["mine"] == 3 and response.context["cl"].result_count == 3
    assert len(rows(response)) == 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="asks PostgreSQL's planner")
def test_my_work_is_counted_by_walking_each_index_to_the_cap_not_by_a_bitmap_of_all_the_groups_work(submit, people):
    """Counted as one OR, PostgreSQL built a bitmap of every waiting row of the person's groups (33,000 at
    1,000,000 proposals, 14-47 ms) before it counted the first; each condition apart is an index walk that stops."""
    submit("first")
    apart = tuple(Proposal.objects.filter(part) for part in inbox.may_decide_apart(people.finance1))
    with CaptureQueriesContext(connection) as counting:
        inbox.capped_counts([(apart, inbox.COUNT_CAP)])
    plan = plan_without_seqscan(counting.captured_queries[-1]["sql"], analyzed="approvals_proposal")

    # Two capped walks (one per condition); counted as one OR, it is one scan, whose plan at scale is the bitmap.
    assert "Bitmap" not in plan and plan.count("Index Scan") + plan.count("Index Only Scan") == 2, plan


def test_the_rows_are_written_cell_for_cell_as_the_admins_own_renderer_writes_them(submit, people):
    """The inbox writes its rows itself (approvals.templatetags.inbox_list), each column looked up once a page:
    what it writes is what Django's items_for_result writes, for held, overdue, escalated and masked rows."""
    held, overdue, plain = (submit(name, target={"type": "order", "id": f"A-100{n}"})
                            for n, name in enumerate(("held", "overdue", "plain"), start=1))
    ticket = submit("ticket", **SUPPORT_TICKET)  # its owner is sensitive: masked for support, shown to operators
    browser(people.finance2).get(page_of(held))
    due_in(overdue, -30)
    ReviewTask.objects.filter(proposal=plain).update(escalation_group=Group.objects.get(name="support"),
                                                    escalated_at=timezone.now())
    Proposal.objects.filter(pk=plain.pk).update(escalated_to=Group.objects.get(name="support"))

    for user, queue, shown in ((people.finance1, "mine", 3), (people.support1, "all", 2), (people.operator, "all", 4)):
        listing = browser(user).get(LIST, {"queue": queue}).context["cl"]
        write = inbox_list.row_writer(listing)
        assert write is not None and len(listing.result_list) == shown
        for row in listing.result_list:
            assert write(row) == "".join(items_for_result(listing, row, None))
    assert reload(ticket).status == Status.PENDING_REVIEW and reload(held).held_by == people.finance2


# ---- the decision page ----------------------------------------------------------------------------

def test_the_decision_page_shows_the_agents_record_and_other_open_work_on_the_record(submit, people):
    services.record_verdict(submit("rejected-before").pk, people.finance2, "reject", "wrong order")
    services.record_verdict(submit("approved-before").pk, people.finance2, "approve")
    sibling = submit("sibling", integration="other-bot-integration", agent="other-bot")
    proposal = submit("this-one")

    page = browser(people.finance1).get(page_of(proposal)).content.decode()
    record = re.sub(r"\s+", " ", page.split('id="agent-record"')[1].split("</div>")[0])
    assert "last 2 reviewed refund proposals" in record
    assert "1 approved as proposed (50%)" in record and "0 edited (0%)" in record and "1 rejected (50%)" in record
    same = page.split('id="same-record"')[1].split("</div>")[0]
    assert page_of(sibling) in same and "other-bot: refund" in same
    assert page.index('id="approve-button"') < page.index('id="proposal-diff"')  # the actions come first
    assert 'id="approve-next-button"' in page and 'id="reject-next-button"' in page


def test_approve_and_next_opens_the_next_most_urgent_work_not_held_by_someone_else(submit, people):
    first, held, following = (submit(key, target={"type": "order", "id": record})
                              for key, record in (("first", "A-1001"), ("held", "A-1002"), ("following", "A-1003")))
    due_in(first, 10), due_in(held, 20), due_in(following, 30)
    browser(people.finance2).get(page_of(held))  # finance2 is working on it

    client = browser(people.finance1)
    response = client.post(reverse("admin:approvals_proposal_decide", args=[first.pk]) + "?next=1",
                           {"verdict": "approve", "reason": ""})
    assert response.status_code == 302 and response.url == page_of(following)
    assert reload(first).status == Status.APPROVED

    response = client.post(reverse("admin:approvals_proposal_decide", args=[following.pk]) + "?next=1",
                           {"verdict": "reject", "reason": "duplicate"}, follow=True)
    assert response.redirect_chain[0][0] == LIST  # only work someone else holds is left
    assert "Nothing else is waiting for you." in [str(message) for message in response.context["messages"]]


def test_opening_a_proposal_holds_it_for_a_few_minutes_and_others_see_who(submit, people):
    proposal = submit("held")
    browser(people.finance1).get(page_of(proposal))
    held = reload(proposal)
    assert held.held_by == people.finance1 and held.held_until > timezone.now() + timedelta(minutes=4)

    other = browser(people.finance2)
    assert "finance1 (for 5 min)" in " ".join(rows(other.get(LIST, {"queue": "mine"})))
    assert "finance1 is working on this proposal" in other.get(page_of(proposal)).content.decode()
    assert reload(proposal).held_by == people.finance1  # looking did not take it

    later = timezone.now() + timedelta(minutes=inbox.HOLD_MINUTES + 1)
    assert inbox.hold(proposal.pk, people.finance2, now=later) == ""  # a hold runs out
    assert reload(proposal).held_by == people.finance2


# ---- bulk approval -------------------------------------------------------------------------------

BULK = matrix_spec(
    rule("small-refunds", "review", actions=["refund"], currency="USD", amount_max=Decimal("500"),
         tiers=(tier("finance", bulk_allowed=True),)),
    rule("big-refunds", "review", actions=["refund"], currency="USD", amount_min=Decimal("500"), tiers=(tier("finance"),)),
)


def test_bulk_approve_is_not_offered_where_no_tier_of_my_work_allows_it(submit, people):
    submit("one")
    page = browser(people.finance1).get(LIST, {"queue": "mine"}).content.decode()
    assert 'value="reject_selected"' in page and 'value="approve_selected"' not in page


@pytest.mark.matrix(BULK)
def test_bulk_approve_approves_what_tiers_allow_and_says_why_the_rest_was_left(submit, people):
    small = submit("small")
    big = submit("big", amount="900.00", changes={"status": "refunded", "refund_amount": "900.00"},
                 target={"type": "order", "id": "A-1002"})
    client = browser(people.finance1)
    page = client.get(LIST, {"queue": "mine"}).content.decode()
    assert 'value="approve_selected"' in page and "bulk allowed" in page

    response = client.post(LIST + "?queue=mine", {"action": "approve_selected", "_selected_action": [small.pk, big.pk]},
                           follow=True)
    notes = [str(message) for message in response.context["messages"]]
    assert reload(small).status == Status.APPROVED and reload(big).status == Status.PENDING_REVIEW
    assert notes == ["Approved 1 proposal(s).",
                     "Left 1 proposal(s) as they were: 1 because tier finance does not allow bulk approval."]


# ---- sensitive values -----------------------------------------------------------------------------

def test_without_see_sensitive_the_values_of_sensitive_fields_are_masked_everywhere(submit, people, make_client):
    proposal = submit("ticket", **SUPPORT_TICKET)  # owner is a sensitive field of the sandbox helpdesk
    support, operator = browser(people.support1), browser(people.operator)
    version = proposal.history.order_by("history_id").first()
    version_url = reverse("admin:approvals_proposal_simple_history", args=[proposal.pk, version.history_id])

    listed = " ".join(rows(support.get(LIST, {"queue": "mine"})))
    assert f"owner → {MASK}" in listed and "bob" not in listed and "status → closed" in listed
    page = support.get(page_of(proposal)).content.decode()
    assert "bob" not in page and MASK in page and 'id="masked-note"' in page and 'id="edit-button"' not in page
    assert "bob" not in support.get(version_url).content.decode()

    assert "owner → bob" in " ".join(rows(operator.get(LIST, {"queue": "all"})))
    assert "bob" in operator.get(page_of(proposal)).content.decode()
    assert "bob" in operator.get(version_url).content.decode()

    as_support = make_client("support-auditor", scopes=["audit:read"], acts_for=people.support1)
    exported = json.dumps(as_support.get("/api/v1/audit/", {"object": "proposal"}).json())
    assert "bob" not in exported and MASK in exported
    as_operator = make_client("operator-auditor", scopes=["audit:read"], acts_for=people.operator)
    assert "bob" in json.dumps(as_operator.get("/api/v1/audit/", {"object": "proposal"}).json())
