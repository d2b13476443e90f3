"""Shared fixtures and builders: people and groups, sandbox systems, a published matrix, API clients,
submitting and approving proposals."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from approvals import execution, services
from approvals.api_auth import create_api_key
from approvals.demo import MATRIX_FILE, PERMISSIONS, _perms
from approvals.models import Integration, Proposal, Status
from connectors.adapters.sandbox import SandboxAdapter
from connectors.models import Connector, SandboxRecord
from hitlgov.celery import app as celery_app
from policies import engine
from policies.matrix_yaml import load_matrix
from policies.services import BOARD_GROUP, new_draft, publish_matrix, submit_matrix

ROOT = Path(__file__).resolve().parent.parent
# A small, confident refund: what the board's matrix lets run without review.
SMALL_REFUND = {"amount": "45.00", "confidence": 0.95, "changes": {"status": "refunded", "refund_amount": "45.00"}}
ALL_SCOPES = ["proposals:write", "proposals:read", "decisions:write", "killswitch:write", "audit:read"]


# Property tests' example counts. `ci` (the default, what `make test` runs) is hypothesis's own default of 100
# examples per property; `thorough` (HYPOTHESIS_PROFILE=thorough) is for changes to the engine or the YAML format.
# Examples are slow to build (whole matrices), so no per-example deadline.
for _name, _examples in (("ci", 100), ("thorough", 1000)):
    hypothesis_settings.register_profile(_name, max_examples=_examples, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config) -> None:
    # Django's default PBKDF2 (a million iterations) made hashing test users' passwords most of the
    # suite's time; no test is about password strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# ---- builders ---------------------------------------------------------------------------

def tier(group: str, required: int = 1, **kwargs) -> engine.Tier:
    return engine.Tier(group=group, required=required, **kwargs)


def rule(name: str, outcome: str, **kwargs) -> engine.Rule:
    if outcome == "review" and "tiers" not in kwargs:
        kwargs["tiers"] = (tier("support"),)
    for key in ("connectors", "actions", "agents", "target_types", "impacts", "fields_any"):
        if isinstance(kwargs.get(key), (list, tuple, set)):
            kwargs[key] = frozenset(kwargs[key])
    return engine.Rule(name=name, outcome=outcome, **kwargs)


def matrix_spec(*rules: engine.Rule, default: str = "review", **kwargs) -> engine.MatrixSpec:
    kwargs.setdefault("default_tiers", (tier("triage"),))
    return engine.MatrixSpec(version=0, default_outcome=default, rules=tuple(rules), **kwargs)


@functools.cache
def demo_spec() -> engine.MatrixSpec:
    """The demo matrix, parsed once: a MatrixSpec is frozen, and parsing its YAML took a tenth of a
    second of almost every test's set-up."""
    return load_matrix(MATRIX_FILE.read_text())


def proposal_body(**overrides) -> dict:
    """The contract's example proposal (CONTRACT.md), with overrides.

    Without a callback_url: tests never call hosts off this machine (test_callbacks serves its own).
    """
    body = {
        "idempotency_key": "refund-bot:order-A-1001:refund",
        "agent": "refund-bot",
        "connector": "helpdesk",
        "action": "refund",
        "target": {"type": "order", "id": "A-1001"},
        "changes": {"status": "refunded", "refund_amount": "120.00"},
        "amount": "120.00",
        "currency": "USD",
        "confidence": 0.93,
        "customer_impact": "low",
        "evidence": [{"title": "Order A-1001", "url": "https://shop.example/orders/A-1001", "excerpt": "Delivered damaged"}],
        "rationale": "Photo shows a broken item; refund is within policy.",
        "context": {"ticket": "Z-88"},
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def approve_all(proposal: Proposal, people) -> None:
    """Approve every tier the proposal waits on, each with as many fresh reviewers of its group as it asks for."""
    while reload(proposal).status == Status.PENDING_REVIEW:
        task = services.active_task(proposal)
        reviewer = people.make(f"reviewer-{task.pk}-{proposal.reviews.count()}", task.group.name)
        services.record_verdict(proposal.pk, reviewer, "approve")


# ---- statement budgets (tests/test_*_queries.py) --------------------------------------------

STATEMENT_CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT", "ROLLBACK")


def data_statements(captured) -> list[str]:
    """The SQL a CaptureQueriesContext saw, without transaction control."""
    return [q["sql"] for q in captured.captured_queries if not q["sql"].lstrip().upper().startswith(STATEMENT_CONTROL)]


def log_event_statements() -> int:
    """One decision-log event: one insert that reads the head, and on PostgreSQL the advisory lock
    that keeps concurrent commits from forking the chain, taken first (ledger.chain)."""
    from django.db import connection
    return 2 if connection.vendor == "postgresql" else 1


def sandbox_record(record_id: str, type: str = "order") -> SandboxRecord:
    """A sandbox system's record as it is stored now."""
    return SandboxRecord.objects.get(type=type, record_id=record_id)


# ---- people, systems, policy --------------------------------------------------------------

@pytest.fixture
def people(db):
    """Board members, finance/support/sales reviewers and an operator, as the demo has them."""
    def user(name: str, *groups: str):
        account = get_user_model().objects.create_user(name, password="pw", is_staff=True)
        for group_name in groups:
            group, _ = Group.objects.get_or_create(name=group_name)
            group.permissions.add(*_perms(PERMISSIONS.get(group_name, PERMISSIONS["reviewer"])))
            account.groups.add(group)
        return account

    return SimpleNamespace(
        board1=user("board1", BOARD_GROUP), board2=user("board2", BOARD_GROUP),
        finance1=user("finance1", "finance"), finance2=user("finance2", "finance"),
        support1=user("support1", "support"), sales1=user("sales1", "sales"),
        triager=user("triager", "triage"), operator=user("operator", "operators", "triage"),
        make=user,
    )


@pytest.fixture
def sandbox(db):
    """Sandbox CRM, helpdesk and email connectors with a few records."""
    crm = Connector.objects.create(slug="crm", name="CRM", kind="sandbox",
                                   config={"actions": ["update_opportunity", "update_account", "delete_record"]})
    helpdesk = Connector.objects.create(slug="helpdesk", name="Helpdesk", kind="sandbox", config={
        "actions": ["refund", "credit", "discount", "set_status", "close_ticket", "public_reply", "delete_record"]})
    email = Connector.objects.create(slug="email", name="Email", kind="sandbox", config={"actions": ["send_email"]})
    for n in range(1001, 1006):
        SandboxRecord.objects.create(connector=helpdesk, type="order", record_id=f"A-{n}",
                                     data={"status": "delivered", "refund_amount": "0.00", "total": "300.00"})
        SandboxRecord.objects.create(connector=helpdesk, type="ticket", record_id=f"T-{n}", data={"status": "open"})
        SandboxRecord.objects.create(connector=email, type="customer", record_id=f"C-{n}", data={"last_email_subject": ""})
    SandboxRecord.objects.create(connector=crm, type="opportunity", record_id="O-1",
                                 data={"stage": "Proposal", "amount": "5000", "owner": "sue"})
    return SimpleNamespace(crm=crm, helpdesk=helpdesk, email=email)


@pytest.fixture
def publish(people):
    """Publish a spec the way a board does: one member authors and submits, another publishes."""
    def _publish(spec: engine.MatrixSpec):
        draft = new_draft(spec, people.board1)
        submit_matrix(draft, people.board1)
        return publish_matrix(draft, people.board2)

    return _publish


@pytest.fixture
def demo_matrix(publish, sandbox):
    return publish(demo_spec())


# ---- outbound calls ------------------------------------------------------------------------

LOOPBACK = "127.0.0.1,localhost,::1"


@pytest.fixture
def allow_loopback(settings):
    """Outbound calls may reach this machine: for tests that serve a callback receiver or a vendor API locally.

    The default stays strict (public addresses only); connectors.outbound is tested with it.
    """
    settings.OUTBOUND_ALLOWLIST = LOOPBACK


@pytest.fixture(autouse=True)
def _loopback_for_local_servers(request):
    """A test that starts a local HTTP server means to call it."""
    if {"httpserver", "live_server"} & set(request.fixturenames):
        request.getfixturevalue("allow_loopback")


# ---- integrations and the API ---------------------------------------------------------------

@pytest.fixture
def make_client(db):
    def _client(name: str = "refund-bot-integration", scopes=ALL_SCOPES, acts_for=None):
        integration, _ = Integration.objects.get_or_create(name=name, defaults={"acts_for": acts_for})
        key, raw = create_api_key(integration, list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        client.integration, client.key, client.raw_key = integration, key, raw
        return client

    return _client


@pytest.fixture
def api(make_client):
    return make_client()


@pytest.fixture
def matrix(request, publish, sandbox):
    """The published matrix `submit` is decided by.

    The demo's, unless the module or test names another with `@pytest.mark.matrix(spec)`;
    `@pytest.mark.matrix(None)` publishes none (each test publishes the one it is about).
    """
    marker = request.node.get_closest_marker("matrix")
    if marker is None:
        return request.getfixturevalue("demo_matrix")
    spec = marker.args[0]
    return None if spec is None else publish(spec)


@pytest.fixture
def submit(request, matrix, make_client):
    """Submit a proposal as an agent does, through approvals.services.submit_proposal, and return it.

    submit(key, **overrides) sends proposal_body(**overrides) with that idempotency key (a fresh one when none
    is given) and its amount as a Decimal (None without one), from refund-bot-integration
    (`submit.integration`) or the integration named by `integration=`. A module or test can change the
    defaults it sends with `@pytest.mark.proposal(**overrides)`; a call's own overrides win.
    """
    marker = request.node.get_closest_marker("proposal")
    defaults = marker.kwargs if marker else {}
    integrations: dict[str, Integration] = {}
    keys = itertools.count(1)

    def integration_named(name: str) -> Integration:
        if name not in integrations:
            integrations[name] = make_client(name).integration
        return integrations[name]

    def _submit(idempotency_key: str | None = None, *, integration: str = "refund-bot-integration",
                **overrides) -> Proposal:
        if idempotency_key is None:
            idempotency_key = f"submitted-{next(keys)}"
        data = proposal_body(idempotency_key=idempotency_key, **{**defaults, **overrides})
        data["amount"] = Decimal(data["amount"]) if "amount" in data else None
        proposal, _ = services.submit_proposal(integration_named(integration), data)
        return proposal

    _submit.integration = integration_named("refund-bot-integration")
    return _submit


@pytest.fixture
def post_proposal(api, django_capture_on_commit_callbacks):
    """Submit through the HTTP API as an agent does and return the stored proposal.

    post_proposal(**overrides) posts proposal_body(**overrides) as refund-bot-integration (the `api` client);
    the commit hooks it queues (callbacks, and execution as eager tasks) run before it returns.
    """
    def _post(**overrides) -> Proposal:
        body = proposal_body(**overrides)
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 201, response.json()
        return Proposal.objects.get(pk=response.json()["id"])

    return _post


@pytest.fixture
def approved(submit, people):
    """approved(key=None, **overrides): a submitted proposal every reviewer it waits on approved, not yet executed."""
    def _approved(key: str | None = None, **overrides) -> Proposal:
        proposal = submit(key, **overrides)
        approve_all(proposal, people)
        proposal = reload(proposal)
        assert proposal.status == Status.APPROVED, proposal.status_reason
        return proposal

    return _approved


@pytest.fixture
def executed(submit, people):
    """A refund submitted, approved and executed on the sandbox.

    executed(key=None, record="A-1001", approver=None, reason="", ends=EXECUTED, **overrides) refunds order
    `record`; `approver` approves it with `reason` when given, else approve_all's fresh reviewers approve
    every tier. `ends` is the status the execution must end in (dry_run on a dry-run connector).
    """
    def _executed(key: str | None = None, *, record: str = "A-1001", approver=None, reason: str = "",
                  ends: str = Status.EXECUTED, **overrides) -> Proposal:
        proposal = submit(key, target={"type": "order", "id": record}, **overrides)
        if approver is None:
            approve_all(proposal, people)
        else:
            services.record_verdict(proposal.pk, approver, "approve", reason)
        execution.run(proposal.pk)
        proposal = reload(proposal)
        assert proposal.status == ends, proposal.status_reason
        return proposal

    return _executed


def reload(obj):
    obj.refresh_from_db()
    return obj


# ---- Celery -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _celery_mode(request):
    """Outside worker tests, tasks run in the test process when their transaction commits."""
    eager = request.node.get_closest_marker("worker") is None
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = eager
    yield
    celery_app.conf.task_always_eager = previous


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A real Celery worker process on the configured broker, sharing the test database."""

    def __init__(self, extra_env: dict[str, str] | None = None, beat: bool = False):
        env = {**os.environ, "DATABASE_URL": _database_url(), "CELERY_TASK_ALWAYS_EAGER": "false",
               "HITL_BROKER_DIR": str(settings.BROKER_DIR), "OUTBOUND_ALLOWLIST": settings.OUTBOUND_ALLOWLIST,
               **(extra_env or {})}
        self.log = open(settings.VAR_DIR / f"worker-{os.getpid()}-{time.monotonic_ns()}.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hitlgov", "worker", "--pool=solo", "--loglevel=info",
             "--without-heartbeat", "--without-mingle", "--without-gossip", *(["--beat"] if beat else [])],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `--beat` forks a child that must die with it
        )
        self._wait_for("ready")

    def _wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"worker not {text} after {timeout}s: {self.output()[-3000:]}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        """As a crash would: no chance to acknowledge or clean up. The whole process group, or the
        embedded beat would live on, orphaned, sweeping into later tests."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """At the end of a test: nothing depends on a graceful shutdown by then, and a warm one waits out
        the broker's 2-second drain timeout (about 4 s a worker). clear_broker() drops what it left."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # also after the main process died: its beat may not have
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.log.close()


def clear_broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for sub in ("in", "processed"):
            shutil.rmtree(settings.BROKER_DIR / sub, ignore_errors=True)
            (settings.BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    else:
        celery_app.control.purge()


@pytest.fixture
def start_worker(transactional_db):
    workers: list[Worker] = []
    clear_broker()

    def _start(beat: bool = False, **extra_env) -> Worker:
        worker = Worker({key: str(value) for key, value in extra_env.items()}, beat=beat)
        workers.append(worker)
        return worker

    yield _start
    for worker in workers:
        worker.stop()
    clear_broker()


def wait_until(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def failed(submit, people, monkeypatch):
    """A proposal whose execution failed on an adapter bug (the bug is fixed again afterwards)."""
    def _failed(key: str = "failed", **overrides) -> Proposal:
        proposal = submit(key, **overrides)
        approve_all(proposal, people)
        with monkeypatch.context() as patch:
            patch.setattr(SandboxAdapter, "execute", lambda *args, **kwargs: 1 / 0)
            execution.run(proposal.pk)
        assert reload(proposal).status == Status.FAILED
        return reload(proposal)

    return _failed


# ---- one of every governed object, for walking the admin -----------------------------------------

@pytest.fixture
def governed(submit, people, sandbox, failed, matrix):
    """One (or, where visibility or frozenness differ, two) of every model the admin governs.

    finance_proposal waits for finance, support_proposal for support; `published` and its rule are
    frozen, `draft` and its rule are editable; `failed_proposal` has executions.
    """
    from django.contrib.auth import get_user_model

    from approvals.models import (
        BreakGlass, CallbackDelivery, Notification, NotificationChannel, OutboxMessage, OversightTask, SlackIdentity,
    )
    from connectors.models import RollbackBatch
    from ledger.models import Event, ExceptionCategory
    from policies.models import CircuitBreaker, SimulationRun
    from policies.services import engage_switch

    draft = new_draft(matrix, people.board1, notes="being edited")
    finance_proposal = submit("walk-finance")
    support_proposal = submit("walk-support", connector="email", action="send_email", amount=None, currency=None,
                              target={"type": "customer", "id": "C-1001"}, confidence=0.91, customer_impact="medium",
                              changes={"last_email_subject": "About your order"})
    failed_proposal = failed("walk-failed")
    alert_proposal = submit("walk-alert", connector="crm", action="flag_deal_risk", amount=None, currency=None,
                            target={"type": "opportunity", "id": "O-1"}, changes={"risk": "high"}, customer_impact="none")
    world = SimpleNamespace(
        admin=get_user_model().objects.create_superuser("admin", password="pw"),
        finance_proposal=finance_proposal, support_proposal=support_proposal, failed_proposal=failed_proposal,
        integration=submit.integration, published=matrix, draft=draft,
        published_rule=matrix.rules.order_by("pk").first(), draft_rule=draft.rules.order_by("pk").first(),
        switch=engage_switch(scope="agent", value="no-such-agent", mode="block", reason="walk", user=people.board1),
        breaker=CircuitBreaker.objects.create(name="walk", threshold=0.5),
        connector=sandbox.helpdesk, record=sandbox_record("A-1002"),
        execution=failed_proposal.executions.order_by("pk").first(),
        batch=RollbackBatch.objects.create(requested_by=people.operator, reason="walk", proposal_ids=[]),
        run=SimulationRun.objects.create(matrix=matrix, created_by=people.board1),
        outbox=OutboxMessage.objects.filter(proposal=failed_proposal).order_by("pk").first(),
        break_glass=BreakGlass.objects.create(proposal=failed_proposal, requested_by=people.operator, reason="walk",
                                              confirmed_by=people.triager, confirmation="walk", status_before="failed"),
        oversight=OversightTask.objects.get_or_create(  # the demo matrix made it (an alert for sales); others did not
            proposal=alert_proposal, defaults={"kind": "alert", "group": Group.objects.get_or_create(name="sales")[0]})[0],
        delivery=CallbackDelivery.objects.create(proposal=finance_proposal, event="proposal.created",
                                                 url="https://agent.example/hook", payload={"id": str(finance_proposal.pk)}),
        category=ExceptionCategory.objects.create(slug="walk", label="Walk"),
        delegation=_next_weeks_delegation(people),
        channel=(channel := NotificationChannel.objects.create(group=Group.objects.get(name="finance"), emails="f@example.com")),
        slack_identity=SlackIdentity.objects.create(slack_user_id="U0FINANCE1", user=people.finance1),
        notification=Notification.objects.create(proposal=finance_proposal, channel=channel, event="assigned", key="walk",
                                                  recipient="f@example.com", subject="walk", text="walk"),
    )
    world.event = Event.objects.order_by("-position").first()
    for obj in vars(world).values():  # rows made in bulk (a matrix's rules) have no version yet: give each one
        if hasattr(type(obj), "history") and not type(obj).history.filter(id=obj.pk).exists():
            obj.save()
    return world


def _next_weeks_delegation(people):
    """finance1 away next week (not now, so no other walk sees a stand-in), finance2 standing in."""
    from datetime import timedelta

    from django.utils import timezone

    from approvals.delegation import set_delegation

    starts = timezone.now() + timedelta(days=7)
    return set_delegation(people.finance1, people.finance2, starts, starts + timedelta(days=5), "walk", by=people.finance1)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


# ---- a real browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module: starting it is most of a browser test's time. Each test gets a fresh
    context (its own cookies and storage), so no login or page state carries over."""
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    page.screenshot(path=str(settings.VAR_DIR / "last-admin-screen.png"), full_page=True)
    context.close()


def log_in(page, username: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


# ---- audit: the decision log and its exports ------------------------------------------------------

@pytest.fixture
def story(submit, people):
    """A refund submitted, edited by finance1 (category wrong_amount), approved by finance2, executed,
    then rolled back by the operator: every kind of step an auditor follows. Returns the proposal."""
    from approvals import rollback

    proposal = submit(target={"type": "order", "id": "A-1001"}, changes={"status": "refunded", "refund_amount": "120.00"})
    services.record_verdict(proposal.pk, people.finance1, "approve", "only half was damaged",
                            changes={"status": "refunded", "refund_amount": "60.00"}, category="wrong_amount")
    services.record_verdict(proposal.pk, people.finance2, "approve", "half refund is right")
    execution.run(proposal.pk)
    rollback.rollback_proposal(proposal.pk, people.operator, "customer returned the goods")
    proposal = reload(proposal)
    assert proposal.status == Status.ROLLED_BACK, proposal.status_reason
    return proposal


# ---- notifications (approvals.notifications) ----------------------------------------------------

@pytest.fixture
def channel(db):
    """channel(group, kind="email", **fields): a review group's notification channel, saved as the admin does."""
    from approvals.models import NotificationChannel

    def _channel(group: str, kind: str = NotificationChannel.Kind.EMAIL, **fields) -> NotificationChannel:
        fields.setdefault("emails", f"{group}@example.com" if kind == NotificationChannel.Kind.EMAIL else "")
        return NotificationChannel.objects.create(group=Group.objects.get_or_create(name=group)[0], kind=kind, **fields)

    return _channel


# ---- SDK and MCP gateway (issue 12) ---------------------------------------------------------

def tools_spec() -> engine.MatrixSpec:
    """A board's matrix for agents' tools: look-ups run alone, invoices go to support, wiping is blocked."""
    return matrix_spec(
        rule("wiping-is-blocked", "block", actions=["wipe_customer"], description="never from an agent"),
        rule("look-ups-run-alone", "auto", actions=["lookup_invoice", "echo"]),
        rule("invoices-need-support", "review", actions=["send_invoice"], tiers=(tier("support"),)),
        default="review",
    )


@pytest.fixture
def agent_tools(db):
    """A connector whose actions the integration carries out itself (the SDK's @governed functions)."""
    return Connector.objects.create(slug="agent-tools", name="Agent tools", kind="client", config={
        "actions": {"send_invoice": "send", "lookup_invoice": "read", "wipe_customer": "delete"}})


@pytest.fixture
def upstream(allow_loopback, monkeypatch):
    """A real MCP server (tests/mcp_upstream.py) on a local port; its token is in HITL_SECRET_UPSTREAM_TOKEN."""
    from tests.mcp_upstream import TOKEN, Upstream

    monkeypatch.setenv("HITL_SECRET_UPSTREAM_TOKEN", TOKEN)
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def ticket_tools(upstream, db):
    """An `mcp` connector for the upstream, its tools listed: create_ticket undone by delete_ticket, get_ticket read-only."""
    from connectors.services import adapter_for

    connector = Connector.objects.create(
        slug="tickets", name="Upstream tickets", kind="mcp", credentials={"token": "env:HITL_SECRET_UPSTREAM_TOKEN"},
        config={"url": upstream.url, "read_only_tools": ["get_ticket"], "compensating_tools": {"create_ticket": "delete_ticket"}},
    )
    connector.config = {**connector.config, "tools": adapter_for(connector).list_tools()}
    connector.save()
    return connector


# ---- board room (dashboard numbers): decided proposals in bulk ---------------------------------

@pytest.fixture
def decided_record(sandbox, make_client, people):
    """decided_record(n, agent=, action=, connector=, confidence=, status=, outcome=, edited=, canary=, open_group=):
    `n` proposals as the record holds them once decided, written in bulk (the dashboard only reads them).
    With `open_group` they are pending review, their active tier in that group, due an hour ago."""
    from datetime import timedelta

    from django.utils import timezone

    from approvals.models import ReviewTask

    integration = make_client("board-record").integration
    serial = itertools.count()

    def _record(n: int, *, agent: str = "crm-assistant", action: str = "update_account", connector: str = "crm",
                confidence: float = 0.97, status: str = Status.EXECUTED, outcome: str = "review", edited: bool = False,
                canary: bool = False, open_group: str = "") -> list[Proposal]:
        target = Connector.objects.get(slug=connector)
        batch = next(serial)
        rows = Proposal.objects.bulk_create([Proposal(
            integration=integration, idempotency_key=f"record-{batch}-{i}", request_hash="0" * 64, agent=agent,
            connector=target, action=action, confidence=confidence, outcome=outcome, edited=edited, canary=canary,
            status=Status.PENDING_REVIEW if open_group else status, change_hash="0" * 64,
        ) for i in range(n)], batch_size=2000)
        if open_group:
            group, _ = Group.objects.get_or_create(name=open_group)
            due = timezone.now() - timedelta(hours=1)
            ReviewTask.objects.bulk_create([ReviewTask(proposal=p, position=0, group=group, state=ReviewTask.State.ACTIVE,
                                                       due_at=due) for p in rows], batch_size=2000)
        return rows

    return _record


# ---- approval models and the seeds' stories (issue 13) ----------------------------------------

@pytest.fixture
def story_systems(sandbox, people):
    """`sandbox` plus what the demo's stories need: the CRM's story actions and deals, the order-management
    sandbox with shipments and documents, and reviewers for dispatch, management and sales managers."""
    from approvals import demo_stories

    demo_stories.seed_story_systems()
    return SimpleNamespace(
        orders=Connector.objects.get(slug="orders"), dispatcher=people.make("dispatcher", "dispatch"),
        manager=people.make("manager", "management", "sales-managers"),
        sales_manager=people.make("sales-manager", "sales-managers"), sales2=people.make("sales2", "sales"),
    )
