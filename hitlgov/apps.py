from django.contrib.admin.apps import AdminConfig


class HitlAdminConfig(AdminConfig):
    """Django's admin with HITL Gov's site: the board's dashboard on the index."""

    default_site = "hitlgov.admin_site.HitlAdminSite"
