from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class ConnectorsConfig(AppConfig):
    name = "connectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Adapter kinds beyond the built-in ones register themselves when their module is imported."""
        for module in settings.CONNECTOR_PLUGINS:
            import_module(module)
