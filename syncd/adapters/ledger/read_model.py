"""The read model: the views of the ledger the planner, the engine, the daemon and the CLI read. It never writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from datetime import date, datetime

from sqlalchemy.orm import aliased
from sqlmodel import Session, exists, func, select
from sqlmodel.sql.expression import SelectOfScalar

from syncd.adapters.ledger.database import ID_LIST_LIMIT, Database
from syncd.adapters.ledger.journal import LIVE, LIVE_CREDENTIALS
from syncd.adapters.ledger.tables import (
    GENESIS,
    AccessRow,
    CredentialRow,
    EventRow,
    HeadRow,
    IntentRow,
    PersonRow,
    RunRow,
    SuspensionRow,
    UsageDayRow,
    WatchCursorRow,
    aware,
    event_hash,
    purpose_from_json,
    scopes_from_json,
    usage_from_row,
    utc,
)
from syncd.core.anomaly import CredentialLife
from syncd.core.model import (
    CredentialState,
    Identity,
    KnownAccess,
    KnownCredential,
    KnownPerson,
    Purpose,
    Scope,
    person_key,
)
from syncd.core.plan import ALLOW_MASS_REVOCATION
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
                                    aware(row.retire_at), purpose_from_json(row.purpose))
            key = (row.person_id, row.cluster)
            if row.state == CredentialState.ACTIVE:
                active[key] = known
            else:
                retiring.setdefault(key, []).append(known)
        access: dict[str, dict[str, KnownAccess]] = {}
        for row in access_rows:
            key = (row.person_id, row.cluster)
            access.setdefault(row.person_id, {})[row.cluster] = KnownAccess(
                row.cluster, scopes_from_json(row.scopes), active.get(key), tuple(retiring.get(key, ())),
                row.kubeconfig, aware(row.granted_at),
            )
        return {p.id: KnownPerson(p.id, p.source, p.username, access.get(p.id, {})) for p in people}

    def live_fingerprints(self, person_id: str, cluster: str) -> set[str]:
        """The fingerprints of the person's active and retiring credentials on the cluster."""
        return {fingerprint for _, fingerprint in self.database.read_rows(
            LIVE_CREDENTIALS, dict(person=person_id, cluster=cluster))}

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
        with self.database.read() as s:
            return frozenset(s.exec(self._outstanding_holds(source)).all())

    @staticmethod
    def _outstanding_holds(source: str) -> SelectOfScalar[str]:
        """The ids of people of this source with a held revocation nothing was recorded after."""
        later = aliased(EventRow)
        superseded = exists().where(later.person_id == EventRow.person_id, later.cluster == EventRow.cluster,
                                    later.seq > EventRow.seq)  # type: ignore[operator]
        return (select(EventRow.person_id).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                .where(EventRow.result == "held", EventRow.action == "revoke", RunRow.source == source,
                       ~superseded).distinct())

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
            since = self._window_start(s, source, since)
            query = (select(EventRow.person_id).join(RunRow, EventRow.run_id == RunRow.id)  # type: ignore[arg-type]
                     .where(RunRow.source == source, RunRow.approved.is_(False),  # type: ignore[attr-defined]
                            EventRow.action == "revoke", EventRow.result == "ok",
                            EventRow.fingerprint.is_not(None),  # type: ignore[union-attr]
                            EventRow.at >= since).distinct())
            return len(s.exec(query).all())

    def mass_holds(self, source: str, since: datetime) -> frozenset[str]:
        """People of this source whose revocation the mass-revocation thresholds held since then and who still wait
        on it (a burst split over several runs is held whole); as for `recent_revocations`, the count starts afresh
        after a run a human allowed."""
        with self.database.read() as s:
            since = self._window_start(s, source, since)
            query = self._outstanding_holds(source).where(
                EventRow.at >= since, EventRow.error.contains(ALLOW_MASS_REVOCATION, autoescape=True))  # type: ignore[union-attr]
            return frozenset(s.exec(query).all())

    @staticmethod
    def _window_start(s: Session, source: str, since: datetime) -> datetime:
        """The later of `since` and the start of the source's last run a human allowed."""
        approved_at = aware(s.exec(select(func.max(RunRow.started_at)).where(
            RunRow.source == source, RunRow.approved.is_(True))).one())  # type: ignore[attr-defined]
        return max(utc(since), approved_at) if approved_at is not None else utc(since)

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

    def purposes(self, person_id: str) -> dict[str, Purpose | None]:
        """The purpose of the person's newest credential on each cluster, revoked ones too (a leaver's last)."""
        with self.database.read() as s:
            rows = s.exec(select(CredentialRow.cluster, CredentialRow.purpose)
                          .where(CredentialRow.person_id == person_id)
                          .order_by(CredentialRow.id)).all()  # type: ignore[arg-type]
        return {cluster: purpose_from_json(purpose) for cluster, purpose in rows}  # the newest last

    def last_used(self, keys: Collection[str] | None = None) -> dict[tuple[str, str], datetime]:
        """When each person (by key), or only these people (past ID_LIST_LIMIT of them, read from everyone), last
        used a credential on each cluster, as the audit events told."""
        query = select(UsageDayRow.person_key, UsageDayRow.cluster, func.max(UsageDayRow.last_use))
        if keys is not None and len(keys) <= ID_LIST_LIMIT:
            query = query.where(UsageDayRow.person_key.in_(keys))  # type: ignore[attr-defined]
        with self.database.read() as s:
            rows = s.exec(query.group_by(UsageDayRow.person_key, UsageDayRow.cluster)).all()  # type: ignore[arg-type]
        return {(key, cluster): aware(last) for key, cluster, last in rows}  # type: ignore[misc]

    def suspensions(self) -> list[tuple[str, str, str, datetime]]:
        """(person id, username, cluster, since) of each access suspended for want of use, until resumed."""
        with self.database.read() as s:
            rows = s.exec(select(SuspensionRow, PersonRow.username)
                          .join(PersonRow, PersonRow.id == SuspensionRow.person_id)  # type: ignore[arg-type]
                          .order_by(PersonRow.username, SuspensionRow.cluster)).all()  # type: ignore[arg-type]
        return [(row.person_id, username, row.cluster, aware(row.since)) for row, username in rows]  # type: ignore[misc]

    def accesses(self) -> list[tuple[str, str, str, frozenset[Scope], datetime | None]]:
        """(person id, username, cluster, scopes, granted at) of each access held now."""
        with self.database.read() as s:
            rows = s.exec(select(AccessRow, PersonRow.username)
                          .join(PersonRow, PersonRow.id == AccessRow.person_id)  # type: ignore[arg-type]
                          .order_by(PersonRow.username, AccessRow.cluster)).all()  # type: ignore[arg-type]
        return [(row.person_id, username, row.cluster, scopes_from_json(row.scopes), aware(row.granted_at))
                for row, username in rows]

    # What the anomaly checks of use need

    def people_by_key(self) -> dict[str, tuple[str, str]]:
        """Everyone the ledger holds, leavers too, by person key: (id, username)."""
        with self.database.read() as s:
            rows = s.exec(select(PersonRow.id, PersonRow.username)).all()
        return {person_key(person_id): (person_id, username) for person_id, username in rows}

    def credential_lives(self, person_ids: Collection[str], since: datetime
                         ) -> dict[tuple[str, str], list[CredentialLife]]:
        """Per person and cluster, from issue to revocation: the live credentials, those revoked since `since`, and
        the one revoked last (however long ago)."""
        ids = list(person_ids)
        found: dict[tuple[str, str], dict[str, CredentialLife]] = {}
        with self.database.read() as s:
            for chunk in (ids[i:i + ID_LIST_LIMIT] for i in range(0, len(ids), ID_LIST_LIMIT)):
                of_them = CredentialRow.person_id.in_(chunk)  # type: ignore[attr-defined]
                last = (select(CredentialRow.person_id, CredentialRow.cluster,
                               func.max(CredentialRow.revoked_at).label("at"))
                        .where(of_them).group_by(CredentialRow.person_id, CredentialRow.cluster).subquery())
                recent = s.exec(select(CredentialRow).where(of_them, CredentialRow.revoked_at.is_(None)  # type: ignore[union-attr]
                                                            | (CredentialRow.revoked_at >= utc(since)))).all()  # type: ignore[operator]
                latest = s.exec(select(CredentialRow).join(last, (CredentialRow.person_id == last.c.person_id)
                                                           & (CredentialRow.cluster == last.c.cluster)
                                                           & (CredentialRow.revoked_at == last.c.at))).all()
                for row in (*recent, *latest):
                    found.setdefault((row.person_id, row.cluster), {})[row.fingerprint] = CredentialLife(
                        row.fingerprint, aware(row.issued_at), aware(row.revoked_at),  # type: ignore[arg-type]
                        row.jti or "")
        return {credential: list(lives.values()) for credential, lives in found.items()}

    def usage_places(self, keys: Collection[str]) -> dict[tuple[str, str], tuple[list[str], list[str]]]:
        """The source IPs and user agents each person (by key) was seen with, per cluster, oldest day first (a value
        seen on several days is listed each time)."""
        wanted = list(keys)
        places: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        with self.database.read() as s:
            for chunk in (wanted[i:i + ID_LIST_LIMIT] for i in range(0, len(wanted), ID_LIST_LIMIT)):
                query = (select(UsageDayRow.person_key, UsageDayRow.cluster, UsageDayRow.source_ips,
                                UsageDayRow.user_agents)
                         .where(UsageDayRow.person_key.in_(chunk))  # type: ignore[attr-defined]
                         .order_by(UsageDayRow.day))  # type: ignore[arg-type]
                for key, cluster, ips, agents in s.exec(query):
                    seen = places.setdefault((key, cluster), ([], []))
                    seen[0].extend(json.loads(ips))
                    seen[1].extend(json.loads(agents))
        return places

    def last_used_by_token(self) -> dict[tuple[str, str], dict[str, datetime]]:
        """When each person (by key) last used each token on each cluster: (key, cluster) -> jti -> last use, by its
        jti where the audit events named a token the ledger recorded (Kubernetes 1.29+), else under ""
        (see `core.usage.token_last_used`)."""
        recorded = CredentialRow.jti.is_not(None)  # type: ignore[union-attr]
        with self.database.read() as s:
            rows = s.exec(select(UsageDayRow.person_key, UsageDayRow.cluster, UsageDayRow.credential_id,
                                 func.max(UsageDayRow.last_use))
                          .group_by(UsageDayRow.person_key, UsageDayRow.cluster,  # type: ignore[arg-type]
                                    UsageDayRow.credential_id)).all()
            known = set(s.exec(select(CredentialRow.jti).where(recorded)).all())
        last: dict[tuple[str, str], dict[str, datetime]] = {}
        for key, cluster, credential_id, used in rows:
            tokens = last.setdefault((key, cluster), {})
            jti = credential_id if credential_id in known else ""
            tokens[jti] = max(tokens.get(jti, used), aware(used))  # type: ignore[arg-type]
        return last

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
