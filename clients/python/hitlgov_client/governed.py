"""`@governed`: put any function behind approval.

    @governed(client, connector="agent-tools", action="send_invoice", target=lambda inv: ("invoice", inv.id))
    def send_invoice(inv): ...

Calling `send_invoice(inv)` submits a proposal whose planned change is the call's arguments,
waits for the verdict, runs the function only if it is approved (with the arguments as
approved: a reviewer may have edited them), reports the outcome so the proposal ends
`executed` or `failed` with the result, and raises ProposalRejected / ProposalBlocked /
ProposalExpired (all NotApproved) when it is not approved. The connector must be one whose
actions the integration carries out (kind `client`). Coroutine functions need an AsyncClient.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .client import AsyncClient, Client
from .errors import NotApproved, ProposalBlocked, ProposalExpired, ProposalRejected
from .models import DECIDED, Proposal

_REFUSALS = {"rejected": ProposalRejected, "blocked": ProposalBlocked, "expired": ProposalExpired}


def jsonable(value: Any) -> Any:
    """A value as JSON carries it: dataclasses and pydantic models as objects, Decimals and times as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (Decimal, datetime, date, uuid.UUID)):
        return str(value) if not isinstance(value, (datetime, date)) else value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{type(value).__name__} cannot be sent as part of a planned change")


def from_approved(original: Any, approved: Any) -> Any:
    """An argument as approved: an edited object is rebuilt as the original's type."""
    if approved == jsonable(original):
        return original  # unchanged: keep the caller's exact object
    if dataclasses.is_dataclass(original) and isinstance(approved, Mapping):
        names = {f.name for f in dataclasses.fields(original)}
        return dataclasses.replace(original, **{k: v for k, v in approved.items() if k in names})
    if hasattr(original, "model_validate") and isinstance(approved, Mapping):
        return type(original).model_validate(approved)
    if isinstance(original, Decimal) and isinstance(approved, (str, int, float)):
        return Decimal(str(approved))
    return approved


def governed(client: Client | AsyncClient, *, connector: str, action: str,
             target: Callable[..., tuple[str, Any]] | None = None, agent: str | None = None,
             confidence: float | Callable[..., float] = 1.0, rationale: str | Callable[..., str] | None = None,
             idempotency_key: Callable[..., str] | None = None, timeout: float = 24 * 3600.0) -> Callable:
    """Decorate a function so every call is proposed, decided and audited before it runs.

    `target(*args, **kwargs)` names the record as (type, id); `confidence` and `rationale` may be
    values or functions of the call's arguments; `idempotency_key(*args, **kwargs)` makes a retried
    call find its first proposal (default: every call is a new proposal). `timeout` bounds the wait
    for a verdict (WaitTimeout after it; the proposal stays in review).
    """
    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        def plan(args: tuple, kwargs: dict) -> tuple[inspect.BoundArguments, dict[str, Any]]:
            bound = signature.bind(*args, **kwargs)
            fields: dict[str, Any] = {"changes": {name: jsonable(value) for name, value in bound.arguments.items()}}
            if target is not None:
                kind, ident = target(*args, **kwargs)
                fields["target"] = {"type": str(kind), "id": str(ident)}
            if rationale is not None:
                fields["rationale"] = rationale(*args, **kwargs) if callable(rationale) else rationale
            fields["confidence"] = confidence(*args, **kwargs) if callable(confidence) else confidence
            fields["idempotency_key"] = (idempotency_key(*args, **kwargs) if idempotency_key
                                         else f"{fn.__name__}:{uuid.uuid4()}")
            return bound, fields

        def approved_call(bound: inspect.BoundArguments, proposal: Proposal) -> tuple[tuple, dict]:
            for name, value in proposal.changes.items():
                if name in bound.arguments:
                    bound.arguments[name] = from_approved(bound.arguments[name], value)
            return bound.args, bound.kwargs

        if inspect.iscoroutinefunction(fn):
            if not isinstance(client, AsyncClient):
                raise TypeError(f"{fn.__name__} is a coroutine function: govern it with an AsyncClient")

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                bound, fields = plan(args, kwargs)
                proposal = await client.submit(connector, action, agent=agent, **fields)
                proposal = await client.wait(proposal.id, timeout, until=DECIDED)
                _refuse_unless_approved(proposal)
                call_args, call_kwargs = approved_call(bound, proposal)
                try:
                    result = await fn(*call_args, **call_kwargs)
                except Exception as exc:
                    await client.report_outcome(proposal.id, ok=False, error=f"{type(exc).__name__}: {exc}")
                    raise
                await client.report_outcome(proposal.id, ok=True, result=_as_result(result))
                return result

            return run_async

        if not isinstance(client, Client):
            raise TypeError(f"{fn.__name__} is a plain function: govern it with a Client")

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound, fields = plan(args, kwargs)
            proposal = client.submit(connector, action, agent=agent, **fields)
            proposal = client.wait(proposal.id, timeout, until=DECIDED)
            _refuse_unless_approved(proposal)
            call_args, call_kwargs = approved_call(bound, proposal)
            try:
                result = fn(*call_args, **call_kwargs)
            except Exception as exc:
                client.report_outcome(proposal.id, ok=False, error=f"{type(exc).__name__}: {exc}")
                raise
            client.report_outcome(proposal.id, ok=True, result=_as_result(result))
            return result

        return run

    return decorate


def _refuse_unless_approved(proposal: Proposal) -> None:
    if proposal.status == "approved":
        return
    raise _REFUSALS.get(proposal.status, NotApproved)(proposal)


def _as_result(value: Any) -> dict[str, Any]:
    """What the function returned, as the execution's stored result (an object)."""
    try:
        result = jsonable(value)
    except TypeError:
        result = repr(value)
    result = result if isinstance(result, dict) else {"value": result}
    json.dumps(result)  # fail here, not on the wire, if something slipped through
    return result
