"""Importing this package registers every adapter kind with `base.register`."""

from . import client, email, rest, salesforce, sandbox, servicenow, zendesk  # noqa: F401
