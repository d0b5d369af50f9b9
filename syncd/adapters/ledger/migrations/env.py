"""Alembic environment: the ledger passes its open connection; `alembic -c syncd/adapters/ledger/alembic.ini`
(for writing a new revision) connects to `sqlalchemy.url` instead."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import syncd.adapters.ledger  # noqa: F401  (registers every table on SQLModel.metadata)


def run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with create_engine(context.config.get_main_option("sqlalchemy.url")).begin() as own:
        run(own)
