"""The ledger's schema, kept by Alembic: commands that write bring the database to the newest revision; read-only
commands only check it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from syncd.errors import LedgerMissing, LedgerSchemaOutdated, LedgerSchemaUnknown

MIGRATIONS = Path(__file__).with_name("migrations")
FIRST_REVISION = "0001"
UPGRADE_COMMAND = "syncd ledger upgrade"
MISSING_HINT = "check ledger.url; the first `syncd reconcile` creates it"

Revisions = tuple[str | None, str]  # the schema's revision before and after opening (None: no schema yet)


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _known(config: Config, current: str | None) -> None:
    try:
        ScriptDirectory.from_config(config).get_revision(current)
    except CommandError:
        raise LedgerSchemaUnknown(f"the ledger's schema is at revision {current}, which this syncd does not know",
                                  hint="a newer syncd migrated it: upgrade syncd") from None


def upgrade(connection: Connection) -> Revisions:
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "event" in tables and "alembic_version" not in tables:
        # Made by syncd before it had migrations: the same tables as the first revision.
        command.stamp(config, FIRST_REVISION)
    current = MigrationContext.configure(connection).get_current_revision()
    _known(config, current)
    command.upgrade(config, "head")
    return current, ScriptDirectory.from_config(config).get_current_head() or ""


def check(connection: Connection, where: str) -> Revisions:
    """Refuse a ledger this syncd cannot read as it is, changing nothing: none at all, one a newer syncd migrated,
    or one older than this syncd's schema."""
    config = alembic_config(connection)
    head = ScriptDirectory.from_config(config).get_current_head() or ""
    tables = set(inspect(connection).get_table_names())
    if "event" not in tables and "alembic_version" not in tables:
        raise LedgerMissing(f"there is no ledger at {where} yet",
                            hint=MISSING_HINT)
    current = MigrationContext.configure(connection).get_current_revision() if "alembic_version" in tables else None
    if current is not None:
        _known(config, current)
    if current != head:
        raise LedgerSchemaOutdated(
            f"the ledger's schema is at revision {current or 'from before migrations'}, older than this syncd's "
            f"{head}; a read-only command does not migrate it",
            hint=f"run `{UPGRADE_COMMAND}`, or any command that writes (reconcile, run, serve)")
    return current, head
