"""Importing this package registers every adapter kind with `base.register`."""

from . import client, email, mcp, order_management, rest, salesforce, sandbox, servicenow, zendesk  # noqa: F401
