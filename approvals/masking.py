"""Sensitive values are for people allowed to see them: everyone else sees that a field changes, not to what.

A field is sensitive when the connector's action declares it so (owner, email, price, refund
amounts...: `connectors.services.action_facts`) or the stored preview flagged it. Without the
`approvals.see_sensitive` permission a person sees such values masked on every page and export
that shows a proposal: the inbox rows, the decision page and its thread, history versions, the
audit export.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from connectors.services import action_facts

SEE_SENSITIVE = "approvals.see_sensitive"
MASK = "[hidden]"
EDIT_MARKER = "change edited to "  # how approvals.operations.thread prints an edited change


def may_see(user) -> bool:
    return bool(user and user.is_active and user.has_perm(SEE_SENSITIVE))


def sensitive_fields(proposal) -> frozenset[str]:
    """The sensitive fields of a proposal or one of its historical versions (no query: the connector is loaded)."""
    flagged = {change.get("field") for change in (proposal.preview or {}).get("changes", []) if change.get("sensitive")}
    return frozenset(flagged) | action_facts(proposal.connector, proposal.action).sensitive_fields


def mask_values(values: Any, fields: frozenset[str]) -> Any:
    """A field -> value mapping with the sensitive fields' values masked (anything else unchanged)."""
    if not isinstance(values, dict):
        return values
    return {name: MASK if name in fields and value is not None else value for name, value in values.items()}


def mask_preview(preview: Any, fields: frozenset[str]) -> Any:
    """A stored preview ({"changes": [{field, before, after, sensitive}]}) with sensitive before/after masked."""
    if not isinstance(preview, dict) or not isinstance(preview.get("changes"), list):
        return preview
    changes = [
        {**change, "before": MASK, "after": MASK} if isinstance(change, dict) and change.get("field") in fields else change
        for change in preview["changes"]
    ]
    return {**preview, "changes": changes}


# The proposal fields that carry field values, and how each is masked.
MASKERS = {"changes": mask_values, "preview_before": mask_values, "preview": mask_preview}


def mask_field(name: str, value: Any, fields: frozenset[str]) -> Any:
    """One stored proposal field's value, masked if it carries sensitive values."""
    masker = MASKERS.get(name)
    return masker(value, fields) if masker and fields else value


def mask_thread(events: list, fields: frozenset[str]) -> list:
    """A proposal's thread with the sensitive values of edited changes masked (the thread prints them as JSON)."""
    if not fields:
        return events
    return [dataclasses.replace(event, text=_masked_edit(event.text, fields)) if event.kind == "edit" else event
            for event in events]


def _masked_edit(text: str, fields: frozenset[str]) -> str:
    head, marker, rest = text.partition(EDIT_MARKER)
    if not marker:
        return text
    try:
        changes, end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return head + marker + MASK
    return head + marker + json.dumps(mask_values(changes, fields), sort_keys=True, ensure_ascii=False) + rest[end:]
