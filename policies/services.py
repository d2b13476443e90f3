"""Policy operations: the live matrix, decisions, the matrix lifecycle and kill switches."""

from __future__ import annotations

import dataclasses
import threading

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from policies import engine
from policies.matrices import save_spec, to_spec
from policies.models import ApprovalMatrix, Budget, CircuitBreaker, KillSwitch, MatrixStatus, ReviewTier, Rule

BOARD_GROUP = getattr(settings, "BOARD_GROUP", "governance-board")
RELEASE_PERMISSION = "policies.change_killswitch"

_compiled_lock = threading.Lock()
_compiled: dict[tuple, engine.CompiledMatrix] = {}
_tier_groups: dict[int, tuple[engine.CompiledMatrix, dict[str, int]]] = {}  # id(matrix): (matrix, {name: id})


class NoLiveMatrix(Exception):
    """No matrix version is published: nothing may be decided, so proposals go to triage."""


def live_matrix() -> engine.CompiledMatrix:
    """The published version, compiled once per process and per version.

    A cheap query for the live version number on every call keeps all web and worker
    processes on the same version the moment a new one is published.
    """
    row = ApprovalMatrix.objects.filter(status=MatrixStatus.PUBLISHED).values_list("pk", "version", "published_at").first()
    if row is None:
        raise NoLiveMatrix("no approval matrix is published")
    return _compiled_for(*row)


def policy_state() -> tuple[engine.CompiledMatrix, list[engine.SwitchState]]:
    """The live matrix and the engaged kill switches, read in one statement.

    What a decision needs, as current as live_matrix() and engaged_switches() and half
    their round trips: the published matrix's row joined to every engaged switch (none
    usually, so one row). The compiled matrix stays cached per process and version.
    """
    quote = connection.ops.quote_name
    rows = list(ApprovalMatrix.objects.raw(
        f"SELECT m.id, m.version, m.published_at, m.status, s.scope AS switch_scope, s.value AS switch_value,"
        f" s.mode AS switch_mode, s.reason AS switch_reason"
        f" FROM {quote(ApprovalMatrix._meta.db_table)} m LEFT JOIN {quote(KillSwitch._meta.db_table)} s"
        f" ON s.engaged = %s WHERE m.status = %s ORDER BY s.id",
        [True, MatrixStatus.PUBLISHED],
    ))  # a raw queryset, so published_at comes back a datetime as the ORM gives it elsewhere
    if not rows:
        raise NoLiveMatrix("no approval matrix is published")
    live = rows[0]
    switches = [
        engine.SwitchState(scope=r.switch_scope, value=r.switch_value, mode=r.switch_mode, reason=r.switch_reason)
        for r in rows if r.switch_scope is not None
    ]
    return _compiled_for(live.pk, live.version, live.published_at), switches


def _compiled_for(pk: int, version: int, published_at) -> engine.CompiledMatrix:
    # Keyed by the publication too: a version number alone can come back with other rules
    # when a database is rebuilt (tests, a restored backup) under a long-lived process.
    key = (version, published_at)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = engine.compile_matrix(to_spec(ApprovalMatrix.objects.get(pk=pk)))
        groups = {}
        for names in ReviewTier.objects.filter(matrix_id=pk).values_list(
            "group__name", "group_id", "escalation_group__name", "escalation_group_id",
        ):
            groups.update({names[0]: names[1], **({names[2]: names[3]} if names[2] else {})})
        with _compiled_lock:
            _compiled.clear()
            _compiled[key] = compiled
            _tier_groups.clear()
            _tier_groups[id(compiled)] = (compiled, groups)
    return compiled


def tier_groups(matrix: engine.CompiledMatrix) -> dict[str, int]:
    """Group ids by name for the groups a compiled live matrix's tiers name ({} for another matrix).

    Read with the matrix, once per process and version: its stored tiers reference these groups
    with on_delete=PROTECT, so the ids hold while the version exists.
    """
    entry = _tier_groups.get(id(matrix))
    return entry[1] if entry is not None and entry[0] is matrix else {}


def engaged_switches() -> list[engine.SwitchState]:
    """Read on every decision and every execution claim, so a switch takes effect at once everywhere."""
    return [
        engine.SwitchState(scope=s.scope, value=s.value, mode=s.mode, reason=s.reason)
        for s in KillSwitch.objects.filter(engaged=True).order_by("pk")
    ]


def covering_switch(
    connector: str, action: str, agent: str, mode: str, switches: list[engine.SwitchState] | None = None,
) -> engine.SwitchState | None:
    """An engaged switch of this mode covering the action: switches also stop approved work not yet started.

    `switches` are the engaged switches when the caller has just read them (engaged_switches()).
    """
    for switch in engaged_switches() if switches is None else switches:
        if switch.mode == mode and engine.switch_applies(switch, connector, action, agent):
            return switch
    return None


def is_board_member(user) -> bool:
    return user.is_active and user.groups.filter(name=BOARD_GROUP).exists()


def _check_valid(matrix: ApprovalMatrix) -> engine.MatrixSpec:
    spec = to_spec(matrix)
    errors = engine.validate(spec)
    if errors:
        raise ValidationError([str(e) for e in errors])
    failed = [case.name for case, _, passed in engine.run_tests(spec) if not passed]
    if failed:
        raise ValidationError([f"embedded test {name} fails" for name in failed])
    return spec


@transaction.atomic
def submit_matrix(matrix: ApprovalMatrix, user) -> ApprovalMatrix:
    """A board member asks for a draft to be published; it must be valid and pass its own tests."""
    if not is_board_member(user):
        raise PermissionDenied("only governance board members submit matrices")
    _check_valid(matrix)
    matrix.submit()
    matrix.submitted_by, matrix._history_user = user, user
    matrix._change_reason = "submitted for publication"
    matrix.save()
    return matrix


@transaction.atomic
def publish_matrix(matrix: ApprovalMatrix, user) -> ApprovalMatrix:
    """A second board member publishes: the live version retires, this one takes over at once."""
    if not is_board_member(user):
        raise PermissionDenied("only governance board members publish matrices")
    if user.pk in (matrix.author_id, matrix.submitted_by_id):
        raise PermissionDenied("a matrix must be published by a board member other than its author")
    _check_valid(matrix)
    for live in ApprovalMatrix.objects.select_for_update().filter(status=MatrixStatus.PUBLISHED):
        live.retire()
        live._change_reason, live._history_user = f"retired by v{matrix.version}", user
        live.save()
    matrix.publish()
    matrix.published_by, matrix.published_at, matrix._history_user = user, timezone.now(), user
    matrix._change_reason = "published"
    matrix.save()
    return matrix


def next_version() -> int:
    return (ApprovalMatrix.objects.aggregate(v=Max("version"))["v"] or 0) + 1


@transaction.atomic
def new_draft(source: ApprovalMatrix | engine.MatrixSpec, user, notes: str = "") -> ApprovalMatrix:
    """Published versions are frozen: edits start from a copy as a new draft."""
    spec = to_spec(source) if isinstance(source, ApprovalMatrix) else source
    return save_spec(spec, version=next_version(), author=user, notes=notes)


@transaction.atomic
def engage_switch(*, scope: str, value: str, mode: str, reason: str, user=None, breaker=None) -> KillSwitch:
    """Engage a switch; it applies to the next decision and execution claim. The reason is audited."""
    if not reason.strip():
        raise ValidationError({"reason": "a reason is required to engage a kill switch"})
    if scope not in dict(KillSwitch.SCOPES):
        raise ValidationError({"scope": f"must be one of {', '.join(dict(KillSwitch.SCOPES))}"})
    if mode not in dict(KillSwitch.MODES):
        raise ValidationError({"mode": f"must be one of {', '.join(dict(KillSwitch.MODES))}"})
    if scope != "global" and not value:
        raise ValidationError({"value": f"name the {scope} to switch off"})
    switch = KillSwitch(scope=scope, value="" if scope == "global" else value, mode=mode, reason=reason,
                        changed_by=user, breaker=breaker)
    switch._change_reason = f"engaged: {reason}"
    if user is not None:
        switch._history_user = user
    switch.save()
    return switch


@transaction.atomic
def release_switch(switch: KillSwitch, *, reason: str, user) -> KillSwitch:
    """Loosening is a person's decision: only someone allowed to change kill switches releases one
    (an API key with no user behind it, or one acting for a user without the permission, may not)."""
    if user is None or not user.is_active or not user.has_perm(RELEASE_PERMISSION):
        who = user.get_username() if user is not None else "nobody (a key with no user behind it)"
        raise PermissionDenied(f"{who} may not release kill switches ({RELEASE_PERMISSION})")
    if not reason.strip():
        raise ValidationError({"reason": "a reason is required to release a kill switch"})
    switch.engaged, switch.changed_by = False, user
    switch._change_reason = f"released: {reason}"
    if user is not None:
        switch._history_user = user
    switch.save()
    return switch


# ---- editing drafts: the admin's forms, inlines and deletes land here

class FrozenMatrix(PermissionDenied):
    """Only drafts change: a submitted, published or retired version is a record."""


DRAFT_FIELDS = frozenset({"name", "notes", "default_outcome", "sensitive_fields", "required_facts", "tests",
                          "default_max_age_minutes", "info_wait_minutes"})
DraftRow = Rule | ReviewTier | Budget


def _require(user, action: str, model) -> None:
    codename = f"{action}_{model._meta.model_name}"
    if not (user and user.is_active and user.has_perm(f"policies.{codename}")):
        raise PermissionDenied(f"this needs the policies.{codename} permission")


def _locked_draft(matrix_id: int) -> ApprovalMatrix:
    matrix = ApprovalMatrix.objects.select_for_update().get(pk=matrix_id)
    if not matrix.is_editable:
        raise FrozenMatrix(f"v{matrix.version} is {matrix.status}: copy it into a new draft to change it")
    return matrix


@transaction.atomic
def create_draft(user, fields: dict, reason: str = "created in the admin") -> ApprovalMatrix:
    """An empty draft authored by `user`, numbered after every existing version."""
    _require(user, "add", ApprovalMatrix)
    matrix = ApprovalMatrix(version=next_version(), author=user)
    return _save_draft(matrix, user, fields, reason)


@transaction.atomic
def update_draft(matrix_id: int, user, fields: dict, reason: str) -> ApprovalMatrix:
    """Change a draft's own fields; a version that left draft is refused."""
    _require(user, "change", ApprovalMatrix)
    return _save_draft(_locked_draft(matrix_id), user, fields, reason)


def _save_draft(matrix: ApprovalMatrix, user, fields: dict, reason: str) -> ApprovalMatrix:
    unknown = sorted(set(fields) - DRAFT_FIELDS)
    if unknown:
        raise ValidationError({name: "cannot be set on a matrix version" for name in unknown})
    for name, value in fields.items():
        setattr(matrix, name, value)
    matrix.full_clean()
    matrix._history_user, matrix._change_reason = user, reason
    matrix.save()
    return matrix


@transaction.atomic
def delete_draft(matrix_id: int, user, reason: str) -> None:
    _require(user, "delete", ApprovalMatrix)
    matrix = _locked_draft(matrix_id)
    matrix._history_user, matrix._change_reason = user, reason
    matrix.delete()


def _row_matrix(row: DraftRow) -> int:
    """The draft a row belongs to, refusing a row moved between versions or a tier off its rule's version."""
    if row.pk is not None:
        stored = type(row).objects.values_list("matrix_id", flat=True).get(pk=row.pk)
        if stored != row.matrix_id:
            raise FrozenMatrix("a row never moves to another version")
    if isinstance(row, ReviewTier) and row.rule_id is not None:
        if Rule.objects.values_list("matrix_id", flat=True).get(pk=row.rule_id) != row.matrix_id:
            raise ValidationError({"rule": "a tier belongs to its rule's version"})
    return row.matrix_id


@transaction.atomic
def save_draft_row(row: DraftRow, user, reason: str) -> DraftRow:
    """Add or change a rule, review tier or budget of a draft, with who and why in its history."""
    _require(user, "add" if row.pk is None else "change", type(row))
    _locked_draft(_row_matrix(row))
    row.full_clean(validate_unique=False)  # uniqueness is the database's: the form checked it already
    row._history_user, row._change_reason = user, reason
    row.save()
    return row


@transaction.atomic
def delete_draft_row(row: DraftRow, user, reason: str) -> None:
    _require(user, "delete", type(row))
    _locked_draft(_row_matrix(row))
    row._history_user, row._change_reason = user, reason
    row.delete()


@transaction.atomic
def save_breaker(breaker: CircuitBreaker, user, reason: str) -> CircuitBreaker:
    """Add or change a circuit breaker; breakers are switched off (enabled), never deleted here."""
    _require(user, "add" if breaker.pk is None else "change", CircuitBreaker)
    breaker.full_clean()
    breaker._history_user, breaker._change_reason = user, reason
    breaker.save()
    return breaker


# ---- the board room: one-click switches and rules suggested by the record

def _engage_global(user, mode: str, reason: str) -> KillSwitch:
    if not (user and user.is_active and user.has_perm("policies.add_killswitch")):
        raise PermissionDenied("engaging a kill switch needs the policies.add_killswitch permission")
    engaged = KillSwitch.objects.filter(engaged=True, scope="global", mode=mode).first()
    if engaged is not None:
        return engaged  # a second click must not stack switches that each need releasing
    return engage_switch(scope="global", value="", mode=mode, reason=reason, user=user)


def stop_all_automation(user, reason: str) -> KillSwitch:
    """Nothing runs without a person: every proposal goes to review, approved-but-unstarted work is held."""
    return _engage_global(user, "force_review", reason)


def block_everything(user, reason: str) -> KillSwitch:
    """Nothing runs at all: every new proposal is blocked and no approved work starts."""
    return _engage_global(user, "block", reason)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:100]


@transaction.atomic
def draft_auto_rule(user, *, connector: str, action: str, agent: str, confidence_min: float, evidence: str) -> ApprovalMatrix:
    """Approve-as-rule: a new draft, copied from the live version, with one more rule running this
    agent's action alone above a confidence. A draft only: it is simulated, submitted and published
    by two board members like any other version. Strictest-wins still applies: the rule loosens
    nothing another rule holds for review or blocks."""
    if not is_board_member(user):
        raise PermissionDenied("only governance board members draft matrices")
    if not (0 <= confidence_min <= 1):
        raise ValidationError({"confidence_min": "must be between 0 and 1"})
    live = ApprovalMatrix.objects.filter(status=MatrixStatus.PUBLISHED).first()
    if live is None:
        raise ValidationError("no matrix is published: there is nothing to add a rule to")
    spec = to_spec(live)
    name = _slug(f"auto-{action}-by-{agent}")
    if any(rule.name == name for rule in spec.rules):
        raise ValidationError({"name": f"v{live.version} already has a rule {name}"})
    rule = engine.Rule(name=name, outcome="auto", description=f"approve-as-rule: {evidence}"[:300],
                       connectors=frozenset({connector}), actions=frozenset({action}), agents=frozenset({agent}),
                       confidence_min=confidence_min)
    spec = dataclasses.replace(spec, rules=spec.rules + (rule,))
    return save_spec(spec, version=next_version(), author=user,
                     notes=f"approve-as-rule from v{live.version}: {evidence}")
