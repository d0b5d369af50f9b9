"""The ledger's schema, kept by Alembic: opening a ledger brings its database to the newest revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from syncd.errors import LedgerSchemaUnknown

MIGRATIONS = Path(__file__).with_name("migrations")
FIRST_REVISION = "0001"


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection) -> None:
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "event" in tables and "alembic_version" not in tables:
        # Made by syncd before it had migrations: the same tables as the first revision.
        command.stamp(config, FIRST_REVISION)
    current = MigrationContext.configure(connection).get_current_revision()
    try:
        ScriptDirectory.from_config(config).get_revision(current)
    except CommandError:
        raise LedgerSchemaUnknown(f"the ledger's schema is at revision {current}, which this syncd does not know",
                                  hint="a newer syncd migrated it: upgrade syncd") from None
    command.upgrade(config, "head")
