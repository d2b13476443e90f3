from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Callback events follow the proposal's history; their deliveries get a read-only admin."""
        from approvals import admin_deliveries, events  # noqa: F401  (admin_deliveries registers on import)

        events.connect()
