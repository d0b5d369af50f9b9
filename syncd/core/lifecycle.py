"""A credential's life, owned in one place the way Vault's expiration manager owns a lease's: issue, refresh,
rotate, grace, retire, revoke. Every decision is pure, made from what the ledger knows, the policy's access, the
token settings and `now`; the planner, the applier, the daemon's credentials job and the SCIM endpoint only ask.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from syncd.core.model import (
    Access,
    Identity,
    Kind,
    KnownAccess,
    KnownCredential,
    KnownPerson,
    ObservedAccount,
    Reason,
)
from syncd.core.policy import Policy
from syncd.core.settings import TokenSettings

# A replacement that keeps the old token alive for the grace window; any other replaces it at once.
_OVERLAPPING = frozenset({Kind.REFRESH, Kind.ROTATE})


class TokenDelivery(StrEnum):
    REPLACE_FILE = "replace-file"  # only the token file beside the kubeconfig: running kubectl sessions keep going
    FULL = "full"  # the kubeconfig and its token


@dataclass(frozen=True)
class Retirement:
    """Old token Secrets of one person on one cluster that are due to go, and why."""

    reason: Reason
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Membership:
    """A group as far as access goes: its name (what rules match) and its members' person ids."""

    name: str | None
    members: frozenset[str]


@dataclass(frozen=True)
class Lifecycle:
    tokens: TokenSettings = TokenSettings()
    idle_after: timedelta | None = None  # usage.idle_after: None, access is never idle

    def idle_since(self, access: KnownAccess, last_use: datetime | None, now: datetime) -> datetime | None:
        """Since when an access is idle, if it is now: no use was recorded for `idle_after` since the later of its
        last use and its grant (so a joiner is never idle at once, and a resumed access counts from its new
        grant). An access whose grant and use are both unknown is never idle."""
        if self.idle_after is None:
            return None
        since = max((moment for moment in (access.granted_at, last_use) if moment is not None), default=None)
        return since if since is not None and now - since >= self.idle_after else None

    def refresh_due(self, credential: KnownCredential, now: datetime) -> bool:
        return now >= credential.issued_at + (credential.expires_at - credential.issued_at) * self.tokens.refresh_at

    @staticmethod
    def rotation_due(credential: KnownCredential, rotation_period: timedelta, now: datetime) -> bool:
        return now >= credential.issued_at + rotation_period

    def renewal(self, credential: KnownCredential, access: Access, now: datetime) -> tuple[Kind, Reason] | None:
        """Whether the delivered token is replaced now: a refresh when it nears its expiry, else a rotation when
        the policy's rotation period has passed since it was issued."""
        if self.refresh_due(credential, now):
            return Kind.REFRESH, Reason.EXPIRING
        if self.rotation_due(credential, access.rotation_period, now):
            return Kind.ROTATE, Reason.ROTATION_DUE
        return None

    def grace(self, kind: Kind) -> timedelta | None:
        """How long the token an action replaces stays valid: a refresh or rotation keeps it for the grace window
        (see `retire_at`); drift, relocation or anything else replaces it at once (None)."""
        return self.tokens.rotation_grace if kind in _OVERLAPPING else None

    @staticmethod
    def delivery(kind: Kind) -> TokenDelivery:
        """A refresh or rotation replaces only the token file; every other new token is delivered in full."""
        return TokenDelivery.REPLACE_FILE if kind in _OVERLAPPING else TokenDelivery.FULL

    @staticmethod
    def retirements(known: KnownAccess | None, observed: ObservedAccount | None, now: datetime) -> list[Retirement]:
        """Old tokens whose grace window ended or whose Secret vanished, and token Secrets no record explains."""
        present = set(observed.token_secrets) if observed else set()
        explained = {known.credential.secret_name} if known and known.credential else set()
        due: list[Retirement] = []
        for old in known.retiring if known else ():
            explained.add(old.secret_name)
            if old.secret_name not in present:
                due.append(Retirement(Reason.VANISHED, (old.secret_name,)))
            elif old.retire_at is not None and now >= old.retire_at:
                due.append(Retirement(Reason.GRACE_ENDED, (old.secret_name,)))
        stale = present - explained
        if stale:
            due.append(Retirement(Reason.STALE, tuple(sorted(stale))))
        return due

    def due(self, known: Iterable[KnownPerson], policy: Policy, now: datetime) -> frozenset[str]:
        """Ids of the people whose tokens need a refresh, a rotation or a retirement now: what a credentials run
        plans. Errs on the side of including someone (any token past the policy's shortest rotation period); the
        planner decides what, if anything, to do."""
        rotation = shortest_rotation(policy)
        due = set()
        for person in known:
            for access in person.access.values():
                credential = access.credential
                if credential is not None and (self.refresh_due(credential, now)
                                               or self.rotation_due(credential, rotation, now)):
                    due.add(person.id)
                if any(old.retire_at is None or now >= old.retire_at for old in access.retiring):
                    due.add(person.id)
        return frozenset(due)


def retire_at(expires_at: datetime, now: datetime, grace: timedelta) -> datetime:
    """When a token replaced `now` with a grace window retires: at the window's end, never past its own expiry."""
    return min(expires_at, now + grace)


def shortest_rotation(policy: Policy) -> timedelta:
    """The shortest rotation period any grant (or the defaults) gives."""
    periods = [grant.rotation_period for rule in policy.rules for grant in rule.grant if grant.rotation_period]
    return min([policy.defaults.rotation_period, *periods])


def _access_view(policy: Policy, identity: Identity) -> tuple:
    """What of a person's own record can change their access: the username and active flag (the planner) and
    the attributes the policy matches on. Groups change with group memberships (see `membership_touches`)."""
    return (identity.username, identity.active,
            tuple(identity.attributes.get(name) for name in policy.matched_attributes))


def identity_touches(policy: Policy, before: Identity | None, after: Identity | None) -> frozenset[str]:
    """The people whose access a change to one person's record can alter: a joiner the policy entitles as they are
    (a new person is in no group yet), a leaver, and a person whose username, active flag or policy attributes
    changed."""
    if before is None:
        return frozenset({after.id}) if after is not None and policy.access_for(after) else frozenset()
    if after is not None and _access_view(policy, before) == _access_view(policy, after):
        return frozenset()
    return frozenset(identity.id for identity in (before, after) if identity is not None)


def membership_touches(before: Membership | None, after: Membership | None) -> frozenset[str]:
    """The people whose access a change to one group can alter: members who joined or left it, and every member
    of a group created, deleted or renamed."""
    if before is None or after is None or before.name != after.name:
        return (before.members if before else frozenset()) | (after.members if after else frozenset())
    return before.members ^ after.members
