"""Out-of-office delegations in the admin: a reviewer names who takes their tiers while away.

Adding goes through approvals.delegation.set_delegation (which refuses a delegate outside the
delegator's groups); a delegation is never edited or deleted, it is a record of who stood in.
Registered from ApprovalsConfig.ready(), like the callback deliveries.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from approvals import delegation
from approvals.models import Delegation
from hitlgov.governed_admin import GovernedAdmin


class DelegationForm(forms.ModelForm):
    class Meta:
        model = Delegation
        fields = ["delegator", "delegate", "starts_at", "ends_at", "reason"]

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:  # the service's checks; the form only shows a refusal next to the field
            delegation.check_delegation(data["delegator"], data["delegate"], data["starts_at"], data["ends_at"],
                                        by=self.request.user)
        except (ValidationError, PermissionDenied) as exc:
            raise ValidationError(exc.message_dict if isinstance(exc, ValidationError) and hasattr(exc, "error_dict")
                                  else str(exc)) from None
        return data


@admin.register(Delegation)
class DelegationAdmin(GovernedAdmin):
    list_display = ["delegator", "delegate", "starts_at", "ends_at", "reason", "created_by"]
    list_select_related = ["delegator", "delegate", "created_by"]
    readonly_fields = ["created_by", "created_at"]
    form = DelegationForm

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class WithRequest(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, request=request, **inner)

        return WithRequest

    def get_changeform_initial_data(self, request):
        return {"delegator": request.user.pk, **super().get_changeform_initial_data(request)}

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        saved = delegation.set_delegation(obj.delegator, obj.delegate, obj.starts_at, obj.ends_at, obj.reason, by=request.user)
        obj.pk, obj.created_by = saved.pk, saved.created_by
        messages.info(request, f"{obj.delegator} is away: their tiers route to {obj.delegate}.")
