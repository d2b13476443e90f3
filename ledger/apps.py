from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "decision log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Every history row and governed write joins the pending event of its transaction."""
        from ledger import capture

        capture.connect()
