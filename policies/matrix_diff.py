"""Two matrix versions side by side, rule by rule, as a board reads a change before publishing it.

`engine.diff_specs` finds the changes; this turns them into rows of plain text (subject,
change, field, before, after) for the admin's comparison page and the `diff_matrix` command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from policies import engine


@dataclass(frozen=True)
class DiffRow:
    subject: str  # "rule refund-limit", "budget refunds-per-day", "matrix default_outcome"
    change: str  # added, removed, changed, moved
    field: str
    before: str
    after: str


def compare(old: engine.MatrixSpec, new: engine.MatrixSpec) -> list[DiffRow]:
    """Every difference from `old` to `new`: matrix settings, budgets, then rules in the new order."""
    rows: list[DiffRow] = []
    for change in engine.diff_specs(old, new):
        subject = _subject(change)
        if change.get("setting") == "tests":
            before, after = change["fields"]["tests"]
            rows.append(DiffRow(subject, change["change"], "tests", *_tests_change(before, after)))
            continue
        for name, (before, after) in change["fields"].items():
            rows.append(DiffRow(subject, change["change"], name, show(before), show(after)))
    return rows


def _subject(change: dict[str, Any]) -> str:
    if change.get("rule"):
        return f"rule {change['rule']}"
    setting = change.get("setting") or ""
    if setting.startswith("budgets."):
        return f"budget {setting.removeprefix('budgets.')}"
    return f"matrix {setting}"


def _tests_change(before: list[dict], after: list[dict]) -> tuple[str, str]:
    """Test cases summarised by name: a full dump of two case lists helps nobody."""
    old, new = {c["name"]: c for c in before}, {c["name"]: c for c in after}
    parts = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("added", [n for n in new if n not in old]),
            ("removed", [n for n in old if n not in new]),
            ("changed", [n for n in new if n in old and new[n] != old[n]]),
        )
        if names
    ]
    return f"{len(old)} cases", f"{len(new)} cases" + (f" ({'; '.join(parts)})" if parts else "")


def show(value: Any) -> str:
    """A diff value as a board member would write it; '-' for absent."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) and "group" in v for v in value):
            return "; ".join(_tier(v) for v in value)
        return ", ".join(show(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _tier(tier: dict[str, Any]) -> str:
    text = f"{tier['group']} x{tier['required']}"
    if tier.get("mode") == "all":
        text += " (all members)"
    text += f", {tier['sla_minutes']} min"
    if tier.get("escalation_group"):
        text += f", escalates to {tier['escalation_group']}"
    if tier.get("bulk_allowed"):
        text += ", bulk ok"
    if tier.get("remind_at", 0.75) != 0.75:
        text += f", reminds at {tier['remind_at']:.0%}" if tier.get("remind_at") else ", no reminder"
    if tier.get("signed_links"):
        text += ", signed links decide"
    return text


def as_text(rows: list[DiffRow]) -> str:
    """A table for a terminal: columns up to 40 wide, the "after" column last and unpadded."""
    if not rows:
        return "no differences\n"
    headers = DiffRow("subject", "change", "field", "before", "after")
    table = [headers, *rows]
    widths = [min(40, max(len(getattr(r, f)) for r in table)) for f in ("subject", "change", "field", "before")]
    lines = []
    for row in table:
        cells = [row.subject, row.change, row.field, row.before]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + row.after)
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines) + "\n"
