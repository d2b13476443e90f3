from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Callback events follow the proposal's history; simulations replay the stored decisions."""
        from approvals import (  # noqa: F401  (the admin modules register on import)
            admin_break_glass, admin_delegation, admin_deliveries, admin_notifications, admin_outbox, admin_oversight,
            admin_rollbacks, api_schema, events, exception_categories, history_rows, id_lists, notifications, stored_decisions,
        )
        from approvals import board
        from ledger import chain
        from policies import admin_forms, simulation

        history_rows.share_history_managers()
        events.connect()
        exception_categories.connect()
        notifications.connect()
        chain.register_payload("approvals.proposal", "rationale", "context", "evidence")  # retention may purge these
        simulation.use_row_source(stored_decisions.select_rows)
        admin_forms.use_vocabulary(board.rule_vocabulary)  # the rule editor's pickers
