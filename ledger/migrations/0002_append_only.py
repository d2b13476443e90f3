"""The database itself refuses UPDATE and DELETE of decision-log events, whoever asks."""

from django.db import migrations

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'decision log events are append-only: % refused', TG_OP;
END
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = ("CREATE TRIGGER ledger_event_append_only BEFORE UPDATE OR DELETE ON ledger_event "
              "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")


def create_triggers(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        statements = [PG_FUNCTION, PG_TRIGGER]
    elif connection.vendor == "sqlite":
        from ledger.backends.sqlite3.base import trigger_sql

        statements = trigger_sql()
    else:
        raise RuntimeError(f"no append-only guard for {connection.vendor}: add one before using it")
    for statement in statements:
        schema_editor.execute(statement, params=None)


def drop_triggers(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute("DROP TRIGGER IF EXISTS ledger_event_append_only ON ledger_event")
        schema_editor.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
    else:
        from ledger.backends.sqlite3.base import TRIGGERS

        for name in TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_decision_log")]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
