"""Notifications in the admin: each group's channels, Slack identities, and every message sent with
its attempts (read-only evidence, like callback deliveries). Registered from ApprovalsConfig.ready()."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError

from approvals.models import Notification, NotificationChannel, SlackIdentity
from approvals.notification_setup import CHANNEL_FIELDS, IDENTITY_FIELDS, save_channel, save_slack_identity
from hitlgov.governed_admin import EvidenceAdmin, GovernedAdmin

REASON_HELP = "Why this change: kept in the history"


class ChannelForm(forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 80}), help_text=REASON_HELP)

    class Meta:
        model = NotificationChannel
        fields = list(CHANNEL_FIELDS)


class IdentityForm(forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 80}), help_text=REASON_HELP)

    class Meta:
        model = SlackIdentity
        fields = list(IDENTITY_FIELDS)


class ServiceSavedAdmin(GovernedAdmin):
    """Saves through a service function with the form's reason; its problems show on the form."""

    save_with = staticmethod(lambda pk, user, fields, reason: None)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # sent notifications point at channels: set `active` off instead

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        writable = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        return fields if writable else [name for name in fields if name != "reason"]

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in form._meta.fields if name in form.cleaned_data}
        saved = self.save_with(obj.pk if change else None, request.user, fields, form.cleaned_data["reason"])
        obj.pk = saved.pk


@admin.register(NotificationChannel)
class NotificationChannelAdmin(ServiceSavedAdmin):
    form = ChannelForm
    save_with = staticmethod(save_channel)
    list_display = ["group", "kind", "emails", "slack_channel", "secret_ref", "active"]
    list_filter = ["kind", "active", "group"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if "secret_ref" in form.base_fields:
            form.base_fields["secret_ref"].help_text = (
                f"A reference, never the value: env:{settings.CREDENTIAL_ENV_PREFIX}SLACK_TOKEN or file:NAME "
                f"(in {settings.CREDENTIAL_FILE_DIR})")
        form.clean = _clean_with(form.clean)
        return form


def _clean_with(clean):
    """The service's own checks, shown on the form before a save is attempted."""
    from approvals.notification_setup import channel_problems

    def _clean(self):
        data = clean(self)
        candidate = NotificationChannel(**{k: v for k, v in data.items() if k in CHANNEL_FIELDS})
        if problems := channel_problems(candidate):
            raise ValidationError(problems)
        return data

    return _clean


@admin.register(SlackIdentity)
class SlackIdentityAdmin(ServiceSavedAdmin):
    form = IdentityForm
    save_with = staticmethod(save_slack_identity)
    list_display = ["slack_user_id", "user"]
    search_fields = ["slack_user_id", "user__username", "user__email"]


@admin.register(Notification)
class NotificationAdmin(EvidenceAdmin):
    list_display = ["created_at", "event", "proposal", "recipient", "state", "attempts", "next_attempt_at", "sent_at"]
    list_filter = ["state", "event", "channel__kind"]
    search_fields = ["proposal__id", "recipient", "subject"]
    date_hierarchy = "created_at"
    list_select_related = ["proposal", "proposal__connector", "channel", "channel__group"]
    fields = ["proposal", "task", "channel", "event", "key", "recipient", "reviewer", "subject", "text", "state",
              "attempts", "last_error", "next_attempt_at", "created_at", "sent_at", "slack_ts"]
    readonly_fields = fields
