"""The admin site: Django's, with the governance board's dashboard on the index and the board's
own pages (plant a canary, turn a suggested rule into a draft).

The numbers come from `approvals.board` (read-only, a fixed number of queries); the two
writing pages only translate a form into `approvals.canaries.plant_canary` and
`policies.services.draft_auto_rule`.
"""

from __future__ import annotations


from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from hitlgov import charts


def sees_board(user) -> bool:
    from policies.services import is_board_member

    return bool(user.is_active and (user.is_superuser or is_board_member(user)))


class HitlAdminSite(admin.AdminSite):
    site_header = site_title = "HITL Gov"
    index_title = "Governance of AI actions"
    index_template = "admin/hitlgov/index.html"

    def index(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        context = dict(extra_context or {})
        if sees_board(request.user):
            from policies.services import is_board_member

            context.update(board_context(), is_board_member=is_board_member(request.user))
        return super().index(request, context)

    def get_urls(self):
        return [
            path("board/canary/", self.admin_view(self.plant_canary_view), name="board_plant_canary"),
            path("board/approve-as-rule/", self.admin_view(self.approve_as_rule_view), name="board_approve_as_rule"),
            *super().get_urls(),
        ]

    def plant_canary_view(self, request: HttpRequest) -> HttpResponse:
        from approvals.canaries import may_plant, plant_canary

        if not may_plant(request.user):
            raise PermissionDenied
        form = CanaryForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.proposal_data()
            try:
                proposal = plant_canary(request.user, form.cleaned_data["integration"], form.cleaned_data["connector"],
                                        data, note=form.cleaned_data["note"])
            except ValidationError as exc:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
            else:
                messages.success(request, f"Canary planted: it waits for {proposal.review_tasks.get(state='active').group.name}"
                                          " like any proposal, and will never be executed.")
                return HttpResponseRedirect(reverse("admin:index") + "#reviewers")
        context = {**self.each_context(request), "form": form, "title": "Plant a canary proposal"}
        return TemplateResponse(request, "admin/hitlgov/plant_canary.html", context)

    def approve_as_rule_view(self, request: HttpRequest) -> HttpResponse:
        """Turn one of today's suggestions into a draft. The suggestion is recomputed here, never taken
        from the form, so a draft only ever says what the record says."""
        from approvals.board import rule_suggestions
        from policies import services

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not services.is_board_member(request.user):
            raise PermissionDenied("only governance board members draft matrices")
        key = (request.POST.get("agent", ""), request.POST.get("action", ""), request.POST.get("connector", ""))
        found = [s for s in rule_suggestions() if (s.agent, s.action, s.connector) == key]
        if not found:
            messages.error(request, "That suggestion no longer holds (a newer override, or too few decisions): nothing drafted.")
            return HttpResponseRedirect(reverse("admin:index") + "#autonomy")
        suggestion = found[0]
        try:
            draft = services.draft_auto_rule(
                request.user, connector=suggestion.connector, action=suggestion.action, agent=suggestion.agent,
                confidence_min=suggestion.confidence_min, evidence=suggestion.sentence)
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
            return HttpResponseRedirect(reverse("admin:index") + "#autonomy")
        url = reverse("admin:policies_approvalmatrix_change", args=[draft.pk])
        messages.success(request, format_html(
            'Draft <a href="{}">v{}</a> adds "{}". Simulate it, then submit it; another board member publishes it.',
            url, draft.version, suggestion.sentence))
        return HttpResponseRedirect(url)


class CanaryForm(forms.Form):
    """A known-bad proposal, written the way the agent would send it."""

    integration = forms.ModelChoiceField(queryset=None, help_text="The agent identity it appears to come from")
    agent = forms.CharField(max_length=100)
    connector = forms.ModelChoiceField(queryset=None)
    action = forms.CharField(max_length=100, help_text="One the connector offers")
    target_type = forms.CharField(max_length=100, required=False)
    target_id = forms.CharField(max_length=200, required=False)
    changes = forms.JSONField(help_text='Field to new value, e.g. {"refund_amount": "4800.00"}')
    amount = forms.DecimalField(max_digits=18, decimal_places=2, required=False)
    currency = forms.CharField(max_length=3, required=False)
    confidence = forms.FloatField(min_value=0, max_value=1)
    customer_impact = forms.ChoiceField(choices=[(i, i) for i in ("none", "low", "medium", "high")])
    rationale = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label="What is wrong with it",
                           help_text="Only the board sees this")

    def __init__(self, *args, **kwargs) -> None:
        from approvals.models import Integration
        from connectors.models import Connector

        super().__init__(*args, **kwargs)
        self.fields["integration"].queryset = Integration.objects.filter(active=True).order_by("name")
        self.fields["connector"].queryset = Connector.objects.order_by("slug")

    def clean_changes(self):
        changes = self.cleaned_data["changes"]
        if not isinstance(changes, dict) or not changes:
            raise ValidationError("must be an object of field to new value")
        return changes

    def proposal_data(self) -> dict:
        data = {name: self.cleaned_data[name] for name in
                ("agent", "action", "changes", "amount", "currency", "confidence", "customer_impact", "rationale")}
        data["target"] = {"type": self.cleaned_data["target_type"], "id": self.cleaned_data["target_id"]}
        return data


def board_context() -> dict:
    from approvals.board import OUTCOME_LABELS, RULE_MIN_SAMPLE, RULE_WINDOW, dashboard

    board = dashboard()
    outcome_charts = [charts.bar_chart(f"{OUTCOME_LABELS.get(o, o)} per day", board.days, series, pattern=pattern)
                      for (o, series), pattern in zip(board.outcomes_by_day.items(), charts.PATTERNS, strict=False)]
    return {
        "board": board,
        "share_chart": charts.share_bar(f"How the policy decided since {board.since:%d %b}",
                                        [(OUTCOME_LABELS.get(o, o), n) for o, n in board.outcomes.items()]),
        "outcome_charts": outcome_charts,
        "failed_chart": charts.bar_chart("executions failed per day", board.days, board.failed_by_day, pattern="cross"),
        "rule_window": RULE_WINDOW, "rule_min_sample": RULE_MIN_SAMPLE,
    }
