"""Prepared statements run on the driver's cursor store and return exactly what SQLAlchemy's own execution does,
on SQLite and PostgreSQL, and fail with SQLAlchemy's exceptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from syncd.adapters.ledger.prepared import Prepared
from syncd.adapters.ledger.tables import CredentialRow, PersonRow
from syncd.core.model import CredentialState
from tests.ledger.conftest import Ledger

PERSON, CREDENTIAL = PersonRow.__table__, CredentialRow.__table__  # type: ignore[attr-defined]
SOON = datetime(2030, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)


def person(person_id: str, *, active: bool) -> dict:
    return dict(id=person_id, source="hr", username=f"name-é-{person_id}", email="", display_name="", active=active,
                groups='["g"]', attributes="{}", first_seen=SOON, last_seen=SOON, removed_at=None)


def credential(person_id: str, fingerprint: str) -> dict:
    return dict(person_id=person_id, cluster="dev", secret_name=f"s-{fingerprint}", fingerprint=fingerprint,
                issued_at=SOON, expires_at=SOON + timedelta(hours=1), state=CredentialState.ACTIVE, jti=None,
                purpose=None)


def stored(ledger: Ledger, table, key) -> dict:  # type: ignore[no-untyped-def]
    with ledger.database.engine.connect() as connection:
        return dict(connection.execute(select(table).where(key)).one()._mapping)


def test_a_row_written_on_the_cursor_reads_back_as_one_written_by_sqlalchemy(ledger: Ledger):
    with ledger.database.engine.begin() as connection:
        connection.execute(insert(PERSON), person("by-sqlalchemy", active=False))
        Prepared(insert(PERSON)).run(connection, person("prepared", active=False))
    ours, theirs = (stored(ledger, PERSON, PERSON.c.id == key) for key in ("prepared", "by-sqlalchemy"))
    assert ours | {"id": "by-sqlalchemy", "username": "name-é-by-sqlalchemy"} == theirs
    assert ours["active"] is False and ours["first_seen"].replace(tzinfo=UTC) == SOON


def test_an_update_binds_its_own_literals_and_only_the_columns_given(ledger: Ledger):
    with ledger.database.engine.begin() as connection:
        Prepared(insert(PERSON)).run(connection, person("p1", active=True))
        Prepared(insert(CREDENTIAL)).run_many(connection, [credential("p1", "f1"), credential("p1", "f2")])
        revoke = Prepared(update(CREDENTIAL).where(CREDENTIAL.c.fingerprint == bindparam("of"),
                                                   CREDENTIAL.c.state == CredentialState.ACTIVE))
        revoke.run(connection, dict(of="f1", state=CredentialState.REVOKED, revoked_at=SOON, revoke_reason="leaver"))
        revoke.run(connection, dict(of="f1", state=CredentialState.REVOKED, revoke_reason="again"))  # no longer active
    first = stored(ledger, CREDENTIAL, CREDENTIAL.c.fingerprint == "f1")
    assert (first["state"], first["revoke_reason"], first["secret_name"]) == ("revoked", "leaver", "s-f1")
    assert stored(ledger, CREDENTIAL, CREDENTIAL.c.fingerprint == "f2")["state"] == "active"


def test_a_select_returns_values_as_sqlalchemy_does(ledger: Ledger):
    query = select(CREDENTIAL.c.fingerprint, CREDENTIAL.c.expires_at).where(
        CREDENTIAL.c.person_id == bindparam("person")).order_by(CREDENTIAL.c.fingerprint)
    with ledger.database.engine.begin() as connection:
        Prepared(insert(PERSON)).run(connection, person("p1", active=True))
        Prepared(insert(CREDENTIAL)).run_many(connection, [credential("p1", "f1"), credential("p1", "f2")])
        expected = [tuple(row) for row in connection.execute(query, dict(person="p1"))]
        assert Prepared(query).rows(connection, dict(person="p1")) == expected
        assert Prepared(query).rows(connection, dict(person="nobody")) == []
    assert isinstance(expected[0][1], datetime)


def test_a_driver_error_is_sqlalchemys_exception_and_names_no_value(ledger: Ledger):
    with ledger.database.engine.begin() as connection:
        Prepared(insert(PERSON)).run(connection, person("p1", active=True))
    with pytest.raises(IntegrityError) as raised, ledger.database.engine.begin() as connection:
        Prepared(insert(PERSON)).run(connection, person("p1", active=True))
    assert "name-é-p1" not in str(raised.value)


def test_a_statement_that_cannot_be_prepared_is_refused_when_first_run(ledger: Ledger):
    with ledger.database.engine.begin() as connection:
        with pytest.raises(TypeError, match="expanding"):
            Prepared(select(PERSON.c.id).where(PERSON.c.id.in_(["a", "b"]))).rows(connection, {})
        with pytest.raises(TypeError, match="returns no rows"):
            Prepared(update(PERSON).returning(PERSON.c.id)).run(connection, dict(active=False))
        with pytest.raises(TypeError, match="no value for who"):
            Prepared(select(PERSON.c.id).where(PERSON.c.id == bindparam("who"))).rows(connection, {})
