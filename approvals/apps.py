from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Callback events follow the proposal's history; simulations replay the stored decisions."""
        from approvals import (  # noqa: F401  (the admin modules register on import)
            admin_break_glass, admin_deliveries, admin_outbox, admin_rollbacks, events, stored_decisions,
        )
        from approvals import board
        from policies import admin_forms, simulation

        events.connect()
        simulation.use_row_source(stored_decisions.select_rows)
        admin_forms.use_vocabulary(board.rule_vocabulary)  # the rule editor's pickers
