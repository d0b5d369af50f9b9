"""The read model: the views of the ledger the planner, the engine, the daemon and the CLI read. It never writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from datetime import date, datetime

from sqlalchemy.orm import aliased
from sqlmodel import exists, func, select

from syncd.adapters.ledger.database import ID_LIST_LIMIT, Database
from syncd.adapters.ledger.journal import LIVE
from syncd.adapters.ledger.tables import (
    GENESIS,
    AccessRow,
    CredentialRow,
    EventRow,
    HeadRow,
    IntentRow,
    PersonRow,
    RunRow,
    UsageDayRow,
    WatchCursorRow,
    aware,
    event_hash,
    scopes_from_json,
    usage_from_row,
    utc,
)
from syncd.core.model import CredentialState, Identity, KnownAccess, KnownCredential, KnownPerson, Scope
from syncd.core.usage import DayUsage, UsageKey
from syncd.ports import Intent


class ReadModel:
    def __init__(self, database: Database) -> None:
        self.database = database

    # What the planner needs

    def identities(self, source: str) -> tuple[Identity, ...]:
        """The source's people as runs last recorded them, with the attributes the policy matched on then."""
        with self.database.read() as s:
            rows = s.exec(select(PersonRow).where(PersonRow.source == source,
                                                  PersonRow.removed_at.is_(None))).all()  # type: ignore[union-attr]
        return tuple(Identity(row.id, row.username, row.email, row.display_name, frozenset(json.loads(row.groups)),
                              row.active, json.loads(row.attributes)) for row in rows)

    def known_people(self, ids: Collection[str] | None = None) -> dict[str, KnownPerson]:
        """Everyone the ledger holds, or only the people with these ids (past ID_LIST_LIMIT of them, read from
        everyone)."""
        if ids is not None and len(ids) > ID_LIST_LIMIT:
            wanted = set(ids)
            return {pid: person for pid, person in self.known_people().items() if pid in wanted}
        people_query = select(PersonRow).where(PersonRow.removed_at.is_(None))  # type: ignore[union-attr]
        access_query = select(AccessRow)
        credential_query = select(CredentialRow).where(CredentialRow.state.in_(LIVE))  # type: ignore[attr-defined]
        if ids is not None:
            people_query = people_query.where(PersonRow.id.in_(ids))  # type: ignore[attr-defined]
            access_query = access_query.where(AccessRow.person_id.in_(ids))  # type: ignore[attr-defined]
            credential_query = credential_query.where(CredentialRow.person_id.in_(ids))  # type: ignore[attr-defined]
        with self.database.read() as s:
            people = s.exec(people_query).all()
            access_rows = s.exec(access_query).all()
            credentials = s.exec(credential_query).all()
        active: dict[tuple[str, str], KnownCredential] = {}
        retiring: dict[tuple[str, str], list[KnownCredential]] = {}
        for row in sorted(credentials, key=lambda r: r.issued_at):
            known = KnownCredential(row.secret_name, row.fingerprint, aware(row.issued_at), aware(row.expires_at),
                                    aware(row.retire_at))
            key = (row.person_id, row.cluster)
            if row.state == CredentialState.ACTIVE:
                active[key] = known
            else:
                retiring.setdefault(key, []).append(known)
        access: dict[str, dict[str, KnownAccess]] = {}
        for row in access_rows:
            key = (row.person_id, row.cluster)
            access.setdefault(row.person_id, {})[row.cluster] = KnownAccess(
                row.cluster, scopes_from_json(row.scopes), active.get(key), tuple(retiring.get(key, ())), row.kubeconfig
            )
        return {p.id: KnownPerson(p.id, p.source, p.username, access.get(p.id, {})) for p in people}

    def live_fingerprints(self, person_id: str, cluster: str) -> set[str]:
        """The fingerprints of the person's active and retiring credentials on the cluster."""
        with self.database.read() as s:
            return set(s.exec(select(CredentialRow.fingerprint).where(
                CredentialRow.person_id == person_id, CredentialRow.cluster == cluster,
                CredentialRow.state.in_(LIVE))).all())  # type: ignore[attr-defined]

    def interrupted_intents(self) -> list[Intent]:
        """Intents a dead run left pending, and those a sweep left for a full run, oldest first. Call only while
        holding `exclusive()`."""
        with self.database.read() as s:
            rows = list(s.exec(select(IntentRow).where(IntentRow.state.in_(("pending", "deferred")))  # type: ignore[attr-defined]
                               .order_by(IntentRow.id)).all())  # type: ignore[arg-type]
        return [Intent(row.id, row.run_id, row.person_id, row.username, row.cluster, row.action,  # type: ignore[arg-type]
                       row.reason, aware(row.started_at)) for row in rows]  # type: ignore[arg-type]

    def head(self) -> tuple[int, str]:
        """The chain's head anchor: its newest event's sequence number and hash (0 and GENESIS when empty)."""
        with self.database.read() as s:
            head = s.get(HeadRow, 1)
        return (head.seq, head.hash) if head is not None else (0, GENESIS)

    def last_seq(self) -> int:
        """The newest event's sequence number (0 when there is none): a mark for `source_changed_since`."""
        with self.database.read() as s:
            return s.exec(select(func.max(EventRow.seq))).one() or 0

    def source_changed_since(self, source: str, seq: int) -> bool:
        """Whether a run of this source changed anyone's access after the mark (held actions and confirmations
        change nothing)."""
        with self.database.read() as s:
            after_mark = EventRow.seq > seq  # type: ignore[operator]
            query = (select(EventRow.seq).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(RunRow.source == source, after_mark, EventRow.result != "held",
                            EventRow.action != "confirm-revocation").limit(1))
            return s.exec(query).first() is not None

    def watch_cursors(self, source: str) -> dict[str, bytes]:
        """Where the source's watch stopped, per stream (see `Journal.save_cursors`)."""
        with self.database.read() as s:
            rows = s.exec(select(WatchCursorRow).where(WatchCursorRow.source == source)).all()
            return {row.kind: base64.b64decode(row.cookie) for row in rows}

    def held_revocations(self, source: str) -> frozenset[str]:
        """People of this source with a revocation held on some cluster and nothing recorded for them there since:
        they wait for the hold to end (or a human)."""
        later = aliased(EventRow)
        superseded = exists().where(later.person_id == EventRow.person_id, later.cluster == EventRow.cluster,
                                    later.seq > EventRow.seq)  # type: ignore[operator]
        with self.database.read() as s:
            query = (select(EventRow.person_id).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(EventRow.result == "held", EventRow.action == "revoke", RunRow.source == source,
                            ~superseded).distinct())
            return frozenset(s.exec(query).all())

    # Counts for the safety thresholds

    def credential_holders(self, source: str) -> int:
        """How many people of this source hold a live credential."""
        with self.database.read() as s:
            return s.exec(select(func.count(func.distinct(CredentialRow.person_id)))
                          .join(PersonRow, PersonRow.id == CredentialRow.person_id)  # type: ignore[arg-type]
                          .where(PersonRow.source == source, PersonRow.removed_at.is_(None),  # type: ignore[union-attr]
                                 CredentialRow.state == CredentialState.ACTIVE)).one()

    def recent_revocations(self, source: str, since: datetime) -> int:
        """How many credential holders runs of this source revoked since then. Held revocations and people who
        held no credential do not count; nor does anything up to and including a run a human allowed
        (--allow-mass-revocation): they saw what was revoked, and the count starts afresh."""
        with self.database.read() as s:
            approved_at = aware(s.exec(select(func.max(RunRow.started_at)).where(
                RunRow.source == source, RunRow.approved.is_(True))).one())  # type: ignore[attr-defined]
            since = max(utc(since), approved_at) if approved_at is not None else utc(since)
            query = (select(EventRow.person_id).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(RunRow.source == source, RunRow.approved.is_(False),  # type: ignore[attr-defined]
                            EventRow.action == "revoke", EventRow.result == "ok",
                            EventRow.fingerprint.is_not(None),  # type: ignore[union-attr]
                            EventRow.at >= since).distinct())
            return len(s.exec(query).all())

    # Reading the log, the runs and the credentials

    def events(self, *, person: str | None = None, run_id: str | None = None, limit: int | None = None
               ) -> list[EventRow]:
        with self.database.read() as s:
            query = select(EventRow).order_by(EventRow.seq)  # type: ignore[arg-type]
            if person is not None:
                query = query.where((EventRow.person_id == person) | (EventRow.username == person))
            if run_id is not None:
                query = query.where(EventRow.run_id == run_id)
            rows = list(s.exec(query).all())
        for row in rows:
            row.at = aware(row.at)  # type: ignore[assignment]
        return rows[-limit:] if limit else rows

    def runs(self) -> list[RunRow]:
        with self.database.read() as s:
            return list(s.exec(select(RunRow).order_by(RunRow.started_at)).all())  # type: ignore[arg-type]

    def credentials(self, *, include_revoked: bool = False) -> list[tuple[CredentialRow, str, frozenset[Scope]]]:
        """Credentials with their owner's username and current scopes on that cluster, oldest first; each row's
        `state` a `CredentialState`."""
        with self.database.read() as s:
            query = select(CredentialRow, PersonRow).join(PersonRow).order_by(CredentialRow.id)  # type: ignore[arg-type]
            if not include_revoked:
                query = query.where(CredentialRow.state != CredentialState.REVOKED)
            rows = s.exec(query).all()
            scopes = {(a.person_id, a.cluster): scopes_from_json(a.scopes) for a in s.exec(select(AccessRow))}
        for cred, _ in rows:
            cred.state = CredentialState(cred.state)
        return [(cred, person.username, scopes.get((cred.person_id, cred.cluster), frozenset()))
                for cred, person in rows]

    def credential_states(self) -> dict[CredentialState, int]:
        """How many credentials are in each state."""
        with self.database.read() as s:
            rows = s.exec(select(CredentialRow.state, func.count()).group_by(CredentialRow.state)).all()
        return {CredentialState(state): count for state, count in rows}

    def people_named(self, target: str) -> list[tuple[str, str]]:
        """(id, username) of everyone, leavers included, whose id or username is `target`."""
        with self.database.read() as s:
            rows = s.exec(select(PersonRow.id, PersonRow.username)
                          .where((PersonRow.id == target) | (PersonRow.username == target))).all()
        return [(person_id, username) for person_id, username in rows]

    def usage(self, person_key: str, *, cluster: str | None = None, since: date | None = None
              ) -> list[tuple[UsageKey, DayUsage]]:
        """A person's use per cluster, day and credential (by their key), oldest day first."""
        query = select(UsageDayRow).where(UsageDayRow.person_key == person_key)
        if cluster is not None:
            query = query.where(UsageDayRow.cluster == cluster)
        if since is not None:
            query = query.where(UsageDayRow.day >= since)
        with self.database.read() as s:
            rows = s.exec(query.order_by(UsageDayRow.day, UsageDayRow.cluster)).all()  # type: ignore[arg-type]
        return [usage_from_row(row) for row in rows]

    def last_used(self) -> dict[tuple[str, str], datetime]:
        """When each person (by key) last used a credential on each cluster, as the audit events told."""
        with self.database.read() as s:
            rows = s.exec(select(UsageDayRow.person_key, UsageDayRow.cluster, func.max(UsageDayRow.last_use))
                          .group_by(UsageDayRow.person_key, UsageDayRow.cluster)).all()  # type: ignore[arg-type]
        return {(key, cluster): aware(last) for key, cluster, last in rows}  # type: ignore[misc]

    def verify(self, anchor: tuple[int, str] | None = None) -> str | None:
        """What is wrong with the event chain, or None when it holds: every link and hash, the chain's end at its
        head anchor, each finished run's recorded head in the chain, and `anchor` (seq, hash: a head kept outside
        the database) in the chain."""
        with self.database.read() as s:
            head = s.get(HeadRow, 1)
            runs = s.exec(select(RunRow.id, RunRow.head_seq, RunRow.head_hash)
                          .where(RunRow.head_seq.is_not(None))).all()  # type: ignore[union-attr]
            # Each point some record outside the chain says the chain passed through, with who says so.
            expected: dict[int, list[tuple[str, str]]] = {}
            for run_id, seq, hash_ in runs:
                expected.setdefault(seq, []).append((hash_, f"run {run_id} finished at event {seq}"))
            if anchor is not None:
                expected.setdefault(anchor[0], []).append((anchor[1], f"the anchor given is event {anchor[0]}"))
            previous, last_seq = GENESIS, 0
            for row in s.exec(select(EventRow).order_by(EventRow.seq)):  # type: ignore[arg-type]
                if row.prev_hash != previous or event_hash(row) != row.hash:
                    return f"the hash chain breaks at event {row.seq}"
                for hash_, claim in expected.pop(row.seq or 0, ()):
                    if hash_ != row.hash:
                        return f"{claim}, whose hash differs from the chain's"
                previous, last_seq = row.hash, row.seq or 0
        if head is None:
            return "the ledger's head anchor is missing"
        if head.seq > last_seq:
            missing = f"event {head.seq} is" if head.seq == last_seq + 1 else f"events {last_seq + 1} to {head.seq} are"
            return f"{missing} missing: the chain ends before its head anchor"
        if (head.seq, head.hash) != (last_seq, previous):
            return f"the chain ends at event {last_seq}, which its head anchor (event {head.seq}) does not match"
        for seq, claims in sorted(expected.items()):
            if seq > 0 or claims[0][0] != GENESIS:
                return f"{claims[0][1]}, which the chain lacks (it ends at event {last_seq})"
        return None

    # Health for the daemon

    def ping(self) -> None:
        """Raise `LedgerError` unless the database answers."""
        with self.database.read() as s:
            s.exec(select(RunRow.id).limit(1)).all()  # reads at most one row, however long the history
