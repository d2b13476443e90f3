"""The contract every connector adapter keeps.

An adapter is the only code that talks to a system of record. It knows how to read a
record, turn a planned change into a field-level preview, write the change (once, with an
idempotency key where the system supports one) and undo a write from the recorded
before-state. Everything around it (policy, approvals, retries, stale checks, dry runs,
audit) lives in the services, so adapters stay small and each one is contract-tested
against a local HTTP server speaking the vendor's documented API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# "call": an opaque remote call (an MCP tool): no record to read before it, its arguments are the change.
CAPABILITIES = ("read", "draft", "update", "send", "delete", "call")


@dataclass(frozen=True)
class Target:
    """The record an action is about, as the system of record names it."""

    type: str
    id: str


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any
    sensitive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "before": self.before, "after": self.after, "sensitive": self.sensitive}


@dataclass(frozen=True)
class Preview:
    """What a planned change would do to the live record, field by field.

    `before` holds the previewed fields' live values; the executor compares them with a
    fresh read right before writing to detect a stale preview.
    """

    changes: tuple[FieldChange, ...]
    before: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"changes": [c.as_dict() for c in self.changes]}


@dataclass(frozen=True)
class ActionFacts:
    """What a change to one action says about itself, whatever the agent declares.

    `money_fields`: change fields whose values are money moved (a refund amount, a credit);
    `sensitive_fields`: fields whose change needs care (owner, email, price);
    `customer_visible`: the customer sees the result (a public reply, an email).
    """

    money_fields: frozenset[str] = frozenset()
    sensitive_fields: frozenset[str] = frozenset()
    customer_visible: bool = False
    read_only: bool = False  # marked read-only on the connector (an MCP tool a board trusts): auto by default


@dataclass(frozen=True)
class WriteResult:
    """What a write (or a compensation) did, summarised for the Execution row."""

    after: dict[str, Any]
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class ConnectorError(Exception):
    """A system of record refused or failed an operation. `transient` ones may be retried."""

    transient: ClassVar[bool] = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientError(ConnectorError):
    """Worth retrying later: 429, 5xx, timeouts, connection failures."""

    transient = True


class PermanentError(ConnectorError):
    """Retrying cannot help: bad request, unsupported action, validation refused."""


class AuthError(PermanentError):
    """401/403: the credentials are wrong, expired or lack permission."""


class RecordNotFound(PermanentError):
    """404: the target record does not exist (any more)."""


class WriteConflict(ConnectorError):
    """409/412: the record changed under us; the proposal must be re-previewed and re-reviewed."""


class Adapter(ABC):
    """Base class for adapters.

    Subclasses set `kind`, `capabilities` and `actions` (action name -> capability), and may
    set `sensitive_fields` (always flagged in previews, e.g. owner, email, price) and
    `money_fields` (action -> the change fields that carry money). Actions whose capability is
    "send" are customer-visible. A connector's config extends all three (`action_facts`).
    `config` is the connector's non-secret configuration; `secrets` maps the names of its
    credentials to their resolved values (never stored in the database in clear).
    """

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    actions: ClassVar[Mapping[str, str]]
    sensitive_fields: ClassVar[frozenset[str]] = frozenset()
    money_fields: ClassVar[Mapping[str, frozenset[str]]] = {}
    # "worker": HITL Gov's Celery workers write the change; "client": the submitting integration
    # carries it out and reports the outcome (POST /api/v1/proposals/{id}/outcome/).
    executed_by: ClassVar[str] = "worker"
    # A write that cannot be made idempotent (an MCP tools/call): if a worker dies during it, the
    # outcome is unknown and an operator resolves it; it is never sent again blindly.
    at_most_once: ClassVar[bool] = False
    # The records live in HITL Gov's own database (the sandboxes): the executor reads the record with
    # `read_for_write` and writes it inside the transaction that settles the execution's outcome, so the
    # write, its Execution row and the proposal's new state commit together or not at all.
    in_database: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None):
        self.config = dict(config or {})
        self.secrets = dict(secrets or {})

    def supports(self, action: str) -> bool:
        return action in self.actions

    def action_facts(self, action: str) -> ActionFacts:
        """The adapter's defaults for this action, extended by the connector's config: sensitive_fields
        (all actions), money_fields {action: [field, ...]} and customer_visible_actions [action, ...]."""
        extra_money = (self.config.get("money_fields") or {}).get(action, ())
        return ActionFacts(
            money_fields=frozenset(self.money_fields.get(action, ())) | frozenset(extra_money),
            sensitive_fields=self.sensitive_fields | frozenset(self.config.get("sensitive_fields", ())),
            customer_visible=self.actions.get(action) == "send"
            or action in (self.config.get("customer_visible_actions") or ()),
        )

    def is_write(self, action: str) -> bool:
        return self.actions.get(action, "read") != "read"

    def capability(self, action: str) -> str:
        """What the action does to the system of record: read, draft, update, send or delete."""
        return self.actions.get(action, "update")

    @abstractmethod
    def read(self, target: Target) -> dict[str, Any]:
        """Return the live record as a flat field -> value mapping."""

    def read_for_write(self, target: Target) -> dict[str, Any]:
        """An in-database adapter's read, inside the executor's transaction, that locks the record for
        the execute() that follows it there."""
        raise NotImplementedError(f"{self.kind} is not an in-database adapter")

    def preview(self, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
        """Diff the planned change against the live record. Unchanged fields are left out."""
        current = self.read(target) if target is not None else {}
        sensitive = self.action_facts(action).sensitive_fields
        diffs = tuple(
            FieldChange(name, current.get(name), value, name in sensitive)
            for name, value in changes.items()
            if current.get(name) != value
        )
        return Preview(changes=diffs, before={name: current.get(name) for name in changes})

    @abstractmethod
    def execute(
        self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str
    ) -> WriteResult:
        """Write the change once. Must be safe to call again with the same idempotency key."""

    @abstractmethod
    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        """Undo an execution by writing the recorded before-state back."""

    def health(self) -> Health:
        return Health(ok=True, detail="no health check for this adapter")


_REGISTRY: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available under its `kind`."""
    _REGISTRY[cls.kind] = cls
    return cls


def adapter_class(kind: str) -> type[Adapter]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise PermanentError(f"unknown connector kind {kind!r}") from None



def kinds_executed_by_client() -> list[str]:
    """The kinds whose approved actions the submitting integration carries out itself."""
    return sorted(kind for kind, cls in _REGISTRY.items() if cls.executed_by == "client")


def adapter_kinds() -> list[str]:
    """Every registered kind, for validating a connector record."""
    return sorted(_REGISTRY)
