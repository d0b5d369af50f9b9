"""Statements on the apply path's hot writes, compiled by SQLAlchemy once per database kind and set of parameters,
then run straight on the driver's cursor.

An action's writes are a handful of small statements inside a group's transaction, which holds the ledger's write
lock. `Connection.execute` spends about three times as long in SQLAlchemy (its compiled-cache lookup, parameter
processing, result setup) as the database spends on such a statement, and every apply worker competes for that CPU.
Here the per-execution work is the bind processors of the statement's types (the same ones SQLAlchemy applies, so
values are stored exactly as through `Connection.execute`) and one driver call. A driver error becomes SQLAlchemy's
own exception (`DBAPIError`), as from `Connection.execute`.

Only plain parameters, and rows only from a select: a statement whose SQL needs a parameter's value to be rendered
(an expanding `IN`), or that returns rows from a write (RETURNING), is refused when it is first compiled."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Executable, Insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the driver takes them when `positional`
    positional: bool
    fixed: dict[str, Any]  # parameters the statement itself binds (literals in its WHERE clause)
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    results: tuple[Processor, ...]  # per selected column

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        merged = {**self.fixed, **values} if self.fixed else dict(values)
        for name, process in self.processors:
            merged[name] = process(merged[name])
        return tuple(merged[name] for name in self.names) if self.positional else merged


class Prepared:
    """One statement (an insert, update or select built once at import), run on the driver's cursor."""

    def __init__(self, statement: Executable) -> None:
        # No generated key is read back: without `inline`, PostgreSQL's INSERT would return it (implicit RETURNING).
        self.statement = statement.inline() if isinstance(statement, Insert) else statement
        self._compiled: dict[tuple[str, frozenset[str]], _Compiled] = {}

    def _compile(self, dialect: Dialect, keys: frozenset[str]) -> _Compiled:
        found = self._compiled.get((dialect.name, keys))
        if found is not None:
            return found
        compiled = self.statement.compile(dialect=dialect, column_keys=sorted(keys))
        if getattr(compiled, "effective_returning", None):
            raise TypeError(f"{self.statement}: a prepared statement returns no rows but a select's")
        binds = compiled.binds
        names = tuple(compiled.positiontup or dict.fromkeys(compiled.bind_names.values()))
        fixed = {}
        for name in names:
            bind = binds[name]
            if bind.expanding:
                raise TypeError(f"{self.statement}: a prepared statement takes no expanding parameter ({name})")
            if name not in keys:
                if bind.required or bind.callable is not None:
                    raise TypeError(f"{self.statement}: no value for {name}")
                fixed[name] = bind.effective_value
        processors = tuple((name, process) for name in names
                           if (process := binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None)
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in getattr(self.statement, "selected_columns", ()))
        found = _Compiled(compiled.string, names, compiled.positiontup is not None, fixed, processors, results)
        self._compiled[(dialect.name, keys)] = found
        return found

    def run(self, connection: Connection, values: Mapping[str, Any]) -> None:
        """Execute with one row of parameters."""
        compiled = self._compile(connection.dialect, frozenset(values))
        self._execute(connection, compiled, lambda cursor, sql: cursor.execute(sql, compiled.parameters(values)))

    def run_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row (the driver's executemany); every row names the same parameters."""
        if not rows:
            return
        compiled = self._compile(connection.dialect, frozenset(rows[0]))
        self._execute(connection, compiled,
                      lambda cursor, sql: cursor.executemany(sql, [compiled.parameters(row) for row in rows]))

    def rows(self, connection: Connection, values: Mapping[str, Any]) -> list[tuple]:
        """A select's rows, each value as SQLAlchemy would return it."""
        compiled = self._compile(connection.dialect, frozenset(values))
        found: list[tuple] = []

        def select(cursor: Any, sql: str) -> None:
            cursor.execute(sql, compiled.parameters(values))
            found.extend(tuple(value if process is None else process(value)
                               for value, process in zip(row, compiled.results, strict=True))
                         for row in cursor.fetchall())

        self._execute(connection, compiled, select)
        return found

    @staticmethod
    def _execute(connection: Connection, compiled: _Compiled, call: Callable[[Any, str], None]) -> None:
        dialect = connection.dialect
        cursor = connection.connection.cursor()
        try:
            call(cursor, compiled.sql)
        except dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(compiled.sql, None, error, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from None
        finally:
            cursor.close()
