"""Shared fixtures and builders: people and groups, sandbox systems, a published matrix, API clients,
submitting and approving proposals."""

from __future__ import annotations

import itertools
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
ALL_SCOPES = ["proposals:write", "proposals:read", "decisions:write", "killswitch:write", "audit:read"]


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


def demo_spec() -> engine.MatrixSpec:
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
def matrix(demo_matrix):
    """The published matrix `submit` is decided by: the demo's, unless a test module overrides this fixture."""
    return demo_matrix


@pytest.fixture
def submit(matrix, make_client):
    """Submit a proposal as an agent does, through approvals.services.submit_proposal, and return it.

    submit(key, **overrides) sends proposal_body(**overrides) with that idempotency key (a fresh one when none
    is given) and its amount as a Decimal (None without one), from refund-bot-integration
    (`submit.integration`) or the integration named by `integration=`.
    """
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
        data = proposal_body(idempotency_key=idempotency_key, **overrides)
        data["amount"] = Decimal(data["amount"]) if "amount" in data else None
        proposal, _ = services.submit_proposal(integration_named(integration), data)
        return proposal

    _submit.integration = integration_named("refund-bot-integration")
    return _submit


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
        """As a crash would: no chance to acknowledge or clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
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
