from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Callback events follow the proposal's history; simulations replay the stored decisions."""
        from approvals import (  # noqa: F401  (the admin modules register on import)
            admin_break_glass, admin_deliveries, admin_outbox, admin_oversight, admin_rollbacks, events, stored_decisions,
        )
        from policies import simulation

        events.connect()
        simulation.use_row_source(stored_decisions.select_rows)
