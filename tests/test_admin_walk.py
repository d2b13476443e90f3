"""Every admin page of every governed model, as every demo role, with real forms.

For each object the superuser's change page is rendered and its form read as a browser would
(tests.test_matrix_admin.form_data); one field is changed and the form is posted, as each role,
to the change page, the history version page and the delete page. Only the writes the demo's
permissions allow may land, and only pages of objects the role may see may answer 200.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.apps import apps
from django.contrib import admin
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from approvals.models import Delegation, Integration, NotificationChannel, OversightTask, Proposal, SlackIdentity
from connectors.models import Connector, RollbackBatch, SandboxRecord
from ledger.models import ExceptionCategory
from policies.models import ApprovalMatrix, CircuitBreaker, KillSwitch, Rule, SimulationRun
from tests.test_matrix_admin import form_data

GOVERNED_APPS = ("approvals", "policies", "connectors", "ledger")
ROLES = ["board1", "finance1", "support1", "sales1", "triager", "operator", "admin"]
# The one field each page's form gets changed in, and to what.
CHANGE = {
    "proposal": ("rationale", "rewritten through the admin"), "integration": ("description", "rewritten"),
    "callbackdelivery": ("url", "https://attacker.example/hook"), "approvalmatrix": ("notes", "rewritten"),
    "rule": ("description", "rewritten"), "killswitch": ("reason", "rewritten"), "circuitbreaker": ("threshold", "0.05"),
    "simulationrun": ("sample_size", "3"), "connector": ("name", "Rewritten"), "sandboxrecord": ("record_id", "Z-9"),
    "execution": ("error", "rewritten"), "rollbackbatch": ("reason", "rewritten"), "breakglass": ("reason", "rewritten"),
    "outboxmessage": ("last_error", "rewritten"), "event": ("reason", "rewritten"),
    "exceptioncategory": ("label", "Rewritten"), "delegation": ("reason", "rewritten"),
    "notificationchannel": ("emails", "walk@example.com"), "slackidentity": ("slack_user_id", "U0WALK"),
    "notification": ("last_error", "rewritten"), "oversighttask": ("reason", "rewritten"),
}
# Models whose admin edits rows (through services); every other governed model changes only through buttons.
EDITABLE = {Integration, Connector, ApprovalMatrix, Rule, CircuitBreaker, SandboxRecord, ExceptionCategory,
            NotificationChannel, SlackIdentity}
DELETABLE = {ApprovalMatrix, Rule, SandboxRecord}
ADDABLE = {Integration, Connector, ApprovalMatrix, Rule, KillSwitch, CircuitBreaker, SimulationRun, SandboxRecord,
           RollbackBatch, ExceptionCategory, Delegation, NotificationChannel, SlackIdentity}


def governed_admins() -> list[admin.ModelAdmin]:
    return [ma for model, ma in admin.site._registry.items() if model._meta.app_label in GOVERNED_APPS]


def test_every_registered_governed_model_is_walked(governed):
    names = {ma.model._meta.model_name for ma in governed_admins()}
    assert names == set(CHANGE)


def objects_of(governed) -> list[Model]:
    """Rules before their matrices: a role allowed to delete a draft deletes its rules with it."""
    return [governed.finance_proposal, governed.support_proposal, governed.integration, governed.delivery,
            governed.published_rule, governed.draft_rule, governed.published, governed.draft, governed.switch,
            governed.breaker, governed.run, governed.connector, governed.record, governed.execution, governed.batch,
            governed.break_glass, governed.outbox, governed.event, governed.category, governed.delegation,
            governed.channel, governed.slack_identity, governed.notification, governed.oversight]


# ---- what the demo's permissions allow, said independently of the admin code -------------------

def perm(user, action: str, model) -> bool:
    return user.has_perm(f"{model._meta.app_label}.{action}_{model._meta.model_name}")


def is_operator(user) -> bool:
    return user.has_perm("approvals.operate_proposal")


def may_list(user, model) -> bool:
    if model is RollbackBatch:
        return is_operator(user)
    return perm(user, "view", model) or perm(user, "change", model)


def may_view(user, obj) -> bool:
    model = type(obj)
    if model is RollbackBatch:
        return is_operator(user)
    if not (perm(user, "view", model) or perm(user, "change", model)):
        return False
    if model is Proposal and not is_operator(user):
        groups = set(user.groups.values_list("name", flat=True))
        return obj.review_tasks.filter(group__name__in=groups).exists()
    if model is OversightTask and not is_operator(user):  # an alert or after-the-fact review: its group's
        return obj.group.name in set(user.groups.values_list("name", flat=True))
    return True


def frozen(obj) -> bool:
    matrix = obj if isinstance(obj, ApprovalMatrix) else getattr(obj, "matrix", None)
    return matrix is not None and matrix.status != "draft"


def may_change(user, obj) -> bool:
    return type(obj) in EDITABLE and perm(user, "change", type(obj)) and not frozen(obj)


def may_delete(user, obj) -> bool:
    return type(obj) in DELETABLE and perm(user, "delete", type(obj)) and not frozen(obj)


# ---- evidence ------------------------------------------------------------------------------------

def history_rows() -> int:
    return sum(m.objects.count() for m in apps.get_models() if m.__name__.startswith("Historical"))


# Opening a proposal to decide it holds it for a few minutes (approvals.inbox.hold): a viewer's mark, not a write.
FLEETING = {"held_by_id", "held_until"}


def snapshot(model) -> tuple[list[dict], int]:
    rows = [{k: v for k, v in row.items() if k not in FLEETING} for row in model.objects.order_by("pk").values()]
    return rows, history_rows()


@dataclass
class Page:
    obj: Model

    def url(self, view: str, *extra) -> str:
        opts = self.obj._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[self.obj.pk, *extra])

    @property
    def has_history_rows(self) -> bool:
        return hasattr(type(self.obj), "history")

    def version_url(self) -> str:
        version = type(self.obj).history.filter(id=self.obj.pk).order_by("history_id").first()
        return self.url("simple_history", version.history_id)


def forged_post(superuser: Client, page: Page) -> dict:
    """The superuser's change form as a browser would post it, with one field changed."""
    response = superuser.get(page.url("change"))
    assert response.status_code == 200
    data = form_data(response)
    field, value = CHANGE[page.obj._meta.model_name]
    data.update({field: value, "reason": "walking the admin", "_save": "Save"})
    return data


def field_now(obj) -> str:
    field, _ = CHANGE[obj._meta.model_name]
    return str(getattr(type(obj).objects.get(pk=obj.pk), field))


# ---- the walk -------------------------------------------------------------------------------------

@pytest.fixture
def clients(governed, people):
    def login(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    superuser = login(governed.admin)
    users = {name: getattr(people, name, None) or governed.admin for name in ROLES}
    return superuser, users, login


@pytest.mark.parametrize("role", ROLES)
def test_reads_answer_200_only_for_what_the_role_may_see(role, governed, clients):
    _, users, login = clients
    user = users[role]
    client = login(user)
    for obj in objects_of(governed):
        page, allowed = Page(obj), may_view(user, obj)
        urls = [page.url("change"), page.url("history")] + ([page.version_url()] if page.has_history_rows else [])
        for url in urls:
            status = client.get(url).status_code
            assert (status == 200) == allowed, f"{role} GET {url}: {status}"
            assert status in (200, 403, 404), f"{role} GET {url}: {status}"
        changelist = client.get(reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_changelist"),
                                {"queue": "all"} if isinstance(obj, Proposal) else {})
        assert (changelist.status_code == 200) == may_list(user, type(obj)), f"{role} changelist of {obj._meta.model_name}"
        if changelist.status_code == 200:
            listed = page.url("change") in changelist.content.decode()
            assert listed == allowed, f"{role}: {obj} listed {listed}, may see {allowed}"


@pytest.mark.parametrize("role", ROLES)
def test_only_permitted_writes_land_from_real_forms(role, governed, clients):
    superuser, users, login = clients
    user = users[role]
    client = login(user)
    for obj in objects_of(governed):
        page = Page(obj)
        data = forged_post(superuser, page)
        model = type(obj)

        if page.has_history_rows:  # a version page never saves, for anyone
            before = snapshot(model)
            status = client.post(page.version_url(), data).status_code
            assert status in (403, 404, 405) and snapshot(model) == before, f"{role} POST version of {obj}: {status}"

        before, old_value = snapshot(model), field_now(obj)
        response = client.post(page.url("change"), data)
        if may_change(user, obj):
            assert response.status_code == 302, f"{role} change {obj}: {response.status_code} {form_errors(response)}"
            assert field_now(obj) == CHANGE[obj._meta.model_name][1]
        else:
            assert response.status_code in (403, 404), f"{role} POST change {obj}: {response.status_code}"
            assert snapshot(model) == before and field_now(obj) == old_value

        before = snapshot(model)
        delete_page = client.get(page.url("delete")).status_code
        response = client.post(page.url("delete"), {"post": "yes"})
        gone = not model.objects.filter(pk=obj.pk).exists()
        assert gone == may_delete(user, obj), f"{role} DELETE {obj}: {response.status_code}"
        if not gone:
            assert delete_page in (403, 404) and response.status_code in (403, 404)
            assert snapshot(model) == before


def form_errors(response) -> object:
    context = getattr(response, "context", None)
    return context and context.get("errors")


@pytest.mark.parametrize("role", ROLES)
def test_add_pages_create_nothing_for_roles_without_the_add_permission(role, governed, clients):
    _, users, login = clients
    user = users[role]
    client = login(user)
    for ma in governed_admins():
        model = ma.model
        allowed = model in ADDABLE and (is_operator(user) if model is RollbackBatch else perm(user, "add", model))
        add_url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
        status = client.get(add_url).status_code
        assert (status == 200) == allowed, f"{role} GET add {model.__name__}: {status}"
        if allowed:
            continue  # creating is this role's job; the pages' own tests cover what they create
        before = snapshot(model)
        field, value = CHANGE[model._meta.model_name]
        assert client.post(add_url, {field: value, "reason": "walk", "_save": "Save"}).status_code == 403
        assert snapshot(model) == before
