"""Forms a board member fills in without code: a rule's conditions picked from what the connectors
offer, "any" instead of "Unknown", and a matrix's embedded tests as a table.

The stored format does not change (comma-separated names, a JSON list of test cases): these
forms only translate between it and widgets a person can read.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml
from django import forms
from django.core.exceptions import ValidationError

from policies.matrix_spec import IMPACTS, OUTCOMES
from policies.models import Rule

ANY_YES_NO = (("unknown", "any"), ("true", "yes"), ("false", "no"))
FLAG_LABELS = {
    "touches_sensitive": "Touches a sensitive field",
    "missing_facts": "A required fact is missing",
    "amount_mismatch": "Declared amount differs from the change",
}


class AnyYesNo(forms.NullBooleanSelect):
    """A condition that may be left out: "any" (it does not matter), yes or no."""

    def __init__(self, attrs=None) -> None:
        super().__init__(attrs)
        self.choices = list(ANY_YES_NO)


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


_vocabulary: Callable[[], dict[str, list[str]]] = lambda: {"connectors": [], "actions": [], "agents": []}


def use_vocabulary(source: Callable[[], dict[str, list[str]]]) -> None:
    """Where the pickers' names come from (connectors, their actions, known agents). The approvals app
    registers its source at start-up: policies never imports the apps above it."""
    global _vocabulary
    _vocabulary = source


def offered_choices() -> dict[str, list[str]]:
    return _vocabulary()


class PickedNames(forms.MultipleChoiceField):
    """Names picked from a list (checkboxes), stored as comma-separated text; nothing picked means any."""

    widget = forms.CheckboxSelectMultiple

    def clean(self, value) -> str:
        return ",".join(sorted(super().clean(value)))


class RuleForm(forms.ModelForm):
    connectors = PickedNames(required=False, help_text="None ticked: any connector")
    actions = PickedNames(required=False, help_text="None ticked: any action")
    agents = PickedNames(required=False, help_text="None ticked: any agent")
    other_agents = forms.CharField(required=False, label="Other agents",
                                   help_text="Agents not listed yet, comma-separated (an agent names itself in each proposal)")
    impacts = PickedNames(required=False, choices=[(i, i) for i in IMPACTS], help_text="None ticked: any impact")

    class Meta:
        model = Rule
        fields = "__all__"
        widgets = {name: AnyYesNo for name in FLAG_LABELS}
        labels = FLAG_LABELS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        offered = offered_choices()
        for name in ("connectors", "actions", "agents"):
            current = _split(self.initial.get(name))
            names = sorted(set(offered[name]) | set(current))  # a stored name never silently drops off
            self.fields[name].choices = [(n, n) for n in names]
            self.initial[name] = current
        self.initial["impacts"] = _split(self.initial.get("impacts"))

    def clean(self):
        cleaned = super().clean()
        extra = _split(cleaned.get("other_agents"))
        if extra:
            cleaned["agents"] = ",".join(sorted(set(_split(cleaned.get("agents"))) | set(extra)))
        return cleaned

    def _post_clean(self) -> None:
        # `agents` merges the ticked and the typed names: put the merged text on the instance too.
        super()._post_clean()
        if "agents" in self.cleaned_data:
            self.instance.agents = self.cleaned_data["agents"]


# ---- embedded tests as a table

def _fact_line(name: str, value) -> str:
    return yaml.safe_dump({name: value}, default_flow_style=True, width=10_000).strip()[1:-1]


def facts_text(facts: dict) -> str:
    """One "name: value" line per fact, in YAML so types survive ("amount: '120.00'", "fields: [a, b]")."""
    return "\n".join(_fact_line(name, value) for name, value in facts.items())


def parse_facts(text: str) -> dict:
    try:
        facts = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"facts: not 'name: value' lines ({exc.problem})") from None
    if not isinstance(facts, dict):
        raise ValidationError("facts: write one 'name: value' per line")
    if isinstance(facts.get("amount"), (int, float)) and not isinstance(facts["amount"], bool):
        facts["amount"] = f"{facts['amount']:.2f}"  # amounts are decimals: 1200 means '1200.00'
    return facts


def _row(case: dict) -> dict:
    """A stored case, or a posted row shown again with its error (facts still as typed)."""
    if isinstance(case.get("facts"), str):
        return case
    return {"name": case.get("name", ""), "facts": facts_text(case.get("facts") or {}), "expect": case.get("expect", ""),
            "rules": ", ".join(case.get("expect_rules") or [])}


class TestCasesWidget(forms.Widget):
    """A table: one row per test (name, facts, expected outcome, expected rules), plus empty rows to add."""

    template_name = "admin/policies/approvalmatrix/test_cases_widget.html"
    blank_rows = 2

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        cases = value if isinstance(value, list) else []
        rows = [_row(case) for case in cases if isinstance(case, dict)]
        rows += [{"name": "", "facts": "", "expect": "", "rules": ""}] * self.blank_rows
        context["widget"].update(rows=rows, outcomes=OUTCOMES)
        return context

    def value_from_datadict(self, data, files, name):
        rows = []
        for n in range(int(data.get(f"{name}-rows", 0) or 0)):
            row = {key: data.get(f"{name}-{n}-{key}", "") for key in ("name", "facts", "expect", "rules")}
            if any(v.strip() for v in row.values()):
                rows.append(row)
        return rows


class TestCasesField(forms.Field):
    """The table's rows as the stored JSON list; a row with every cell empty is left out (that deletes a test)."""

    widget = TestCasesWidget

    def to_python(self, value) -> list[dict]:
        if not value:
            return []
        if isinstance(value, list) and all("facts" in row and isinstance(row["facts"], dict) for row in value):
            return value  # already stored form (the initial value)
        cases, errors = [], []
        for n, row in enumerate(value, start=1):
            if not row["name"].strip():
                errors.append(f"test {n}: give it a name")
                continue
            try:
                case = {"name": row["name"].strip(), "facts": parse_facts(row["facts"]), "expect": row["expect"]}
            except ValidationError as exc:
                errors.append(f"test {row['name']}: {exc.messages[0]}")
                continue
            if row["rules"].strip():
                case["expect_rules"] = _split(row["rules"])
            cases.append(case)
        if errors:
            raise ValidationError(errors)
        return cases

    def has_changed(self, initial, data) -> bool:
        return (initial or []) != self.to_python(data)
