"""The plain data every layer shares: people, what they are entitled to, and how we name what we create for them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "syncd"
PERSON_LABEL = "syncd.io/person"
INSTANCE_LABEL = "syncd.io/instance"  # syncd's namespace: several syncd deployments can share one cluster
SCOPE_LABEL = "syncd.io/scope"
USERNAME_ANNOTATION = "syncd.io/username"
UNOWNED = "(no person label)"  # observed under our labels, naming no person: never a person key (not label-safe)
PERSON_ID_ANNOTATION = "syncd.io/person-id"

_LABEL_SAFE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_HASHED_KEY = re.compile(r"^h[0-9a-f]{32}$")
MAX_USERNAME_LENGTH = 1024  # generous: a username only names the user and contexts inside a kubeconfig
_UNDELIVERABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})  # control characters (NUL, newline), lone surrogates, breaks


@dataclass(frozen=True, slots=True)  # a directory read holds 100,000s of these
class Identity:
    """One person as a source sees them. `id` is stable across renames and moves."""

    id: str
    username: str
    email: str = ""
    display_name: str = ""
    groups: frozenset[str] = frozenset()
    active: bool = True
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    origin: str = field(default="", compare=False)  # where the source holds them: "people.csv line 3", a dn, ...

    @property
    def where(self) -> str:
        """The origin, for messages a human acts on."""
        return f"{self.origin} (id {self.id!r})" if self.origin else f"id {self.id!r}"


@dataclass(frozen=True)
class Snapshot:
    """What a source returned. `complete` is False when the read was partial: nothing may be revoked from it.
    A targeted read holds only the people asked for; `population` then counts everyone the source holds."""

    source: str
    identities: tuple[Identity, ...]
    complete: bool = True
    problems: tuple[str, ...] = ()
    population: int | None = None

    def by_id(self) -> dict[str, Identity]:
        return {identity.id: identity for identity in self.identities}


class RoleKind(StrEnum):
    CLUSTER_ROLE = "ClusterRole"
    ROLE = "Role"


@dataclass(frozen=True, order=True)
class Scope:
    """One binding: a role in a namespace, or cluster-wide when `namespace` is None."""

    namespace: str | None
    role_kind: RoleKind
    role_name: str

    def __str__(self) -> str:
        return f"{self.namespace or '*'}:{self.role_kind}/{self.role_name}"

    @property
    def key(self) -> str:
        """Short, label-safe, stable name for this scope."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:10]


Purpose = frozenset[tuple[Scope, str]]  # why access is granted: each scope with the name of a policy rule granting it


def purpose_rules(purpose: Purpose) -> tuple[str, ...]:
    """The names of the rules behind a purpose, sorted."""
    return tuple(sorted({rule for _, rule in purpose}))


def rules_granting(purpose: Purpose, scope: Scope) -> tuple[str, ...]:
    """The names of the rules that grant this scope, sorted."""
    return tuple(sorted(rule for granted, rule in purpose if granted == scope))


@dataclass(frozen=True)
class Access:
    """Everything one person may do on one cluster, the life of the token that carries it, and why (`purpose`)."""

    cluster: str
    scopes: frozenset[Scope]
    token_ttl: timedelta
    rotation_period: timedelta
    purpose: Purpose = frozenset()


@dataclass(frozen=True)
class Endpoint:
    """How a delivered kubeconfig reaches a cluster."""

    server: str
    ca_data: str | None  # base64 PEM; None when the cluster's CA is the system's


def person_key(person_id: str) -> str:
    """A label-safe key for a stable id, unique per id: the id itself when it already is one (and does not look
    like a hashed key), else "h" and 32 hex digits of its hash. It names the person's objects and delivery folder."""
    if _LABEL_SAFE.match(person_id) and not _HASHED_KEY.match(person_id):
        return person_id
    return "h" + hashlib.sha256(person_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def is_person_key(key: str) -> bool:
    return bool(_LABEL_SAFE.match(key))


def delivery_problem(username: str) -> str | None:
    """Why this username cannot be written into a kubeconfig, or None. Files are named by `person_key`, so any
    readable name goes: Unicode, spaces, slashes, dots, up to MAX_USERNAME_LENGTH characters."""
    if not username.strip():
        return "it is empty"
    if len(username) > MAX_USERNAME_LENGTH:
        return f"it is longer than {MAX_USERNAME_LENGTH} characters"
    bad = next((c for c in username if unicodedata.category(c) in _UNDELIVERABLE), None)
    if bad is not None:
        return f"it contains the control character U+{ord(bad):04X}"
    return None


def service_account_name(person_id: str) -> str:
    return f"syncd-{person_key(person_id)}"


def binding_name(person_id: str, scope: Scope, instance: str) -> str:
    """Names carry the instance (syncd's namespace), so that deployments sharing a cluster never share a binding.
    At most 6 + 63 + 1 + 40 + 1 + 10 = 121 characters, well within Kubernetes' 253."""
    return f"syncd-{instance}-{person_key(person_id)}-{scope.key}"


def fingerprint(token: str) -> str:
    """What the ledger keeps of a token: enough to recognise it, useless to replay it."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a service account token (a JWT), read without verifying: for display, expiry and matching audit
    events to it (`jti`), never for trust. Empty when it is no JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


# What a planned change is, and why (the planner and the lifecycle speak in these).


class Kind(StrEnum):
    ISSUE = "issue"
    RESCOPE = "rescope"
    REFRESH = "refresh"
    ROTATE = "rotate"
    RETIRE = "retire"
    REPAIR = "repair"
    REVOKE = "revoke"
    ORPHAN = "orphan"


class Reason(StrEnum):
    JOINER = "joiner"
    MOVER = "mover"
    RENAME = "rename"
    EXPIRING = "expiring"
    ROTATION_DUE = "rotation-due"
    GRACE_ENDED = "grace-ended"
    VANISHED = "vanished"
    STALE = "stale"
    DRIFT = "drift"
    PURPOSE = "purpose"  # the same scopes, now granted by other policy rules: the recorded purpose follows
    RELOCATE = "relocate"  # delivered under the old layout (DIRECTORY/USERNAME/): a fresh token in the person's folder
    LEAVER = "leaver"
    DISABLED = "disabled"
    NO_ENTITLEMENT = "no-entitlement"
    IDLE = "idle"  # no use for usage.idle_after: suspended (usage.idle_action: suspend) until a human resumes it
    ORPHAN = "orphan"
    # Given by a person running `syncd token revoke`:
    EXPOSED = "exposed"
    LOST = "lost"
    LEFT = "left"
    MANUAL = "manual"


# What the ledger remembers (input to the planner).


class CredentialState(StrEnum):
    """Where a credential is in its life; the ledger stores these strings."""

    ACTIVE = "active"  # the token delivered now
    RETIRING = "retiring"  # replaced, still valid until its retire_at
    REVOKED = "revoked"  # its Secret is deleted: the token no longer works


@dataclass(frozen=True, slots=True)  # this and the records below come in 100,000s for a large directory
class KnownCredential:
    secret_name: str
    fingerprint: str
    issued_at: datetime
    expires_at: datetime
    retire_at: datetime | None = None  # set once replaced: the old token stays valid until then
    purpose: Purpose | None = None  # the rules that grant it; None when recorded before syncd kept purposes


@dataclass(frozen=True, slots=True)
class KnownAccess:
    cluster: str
    scopes: frozenset[Scope]
    credential: KnownCredential | None  # the one delivered now
    retiring: tuple[KnownCredential, ...] = ()  # replaced, still valid for their grace window
    kubeconfig: str = ""  # where it was delivered ("" when unknown)
    granted_at: datetime | None = None  # when this access began (a resumed one: its new grant); None when unknown


@dataclass(frozen=True, slots=True)
class KnownPerson:
    id: str
    source: str
    username: str
    access: dict[str, KnownAccess] = field(default_factory=dict, hash=False, compare=False)


# What is in a cluster under our labels (input to the planner).


@dataclass(frozen=True, slots=True)
class ObservedBinding:
    name: str
    namespace: str | None  # None for a ClusterRoleBinding
    scope: Scope
    subjects_intact: bool  # exactly our ServiceAccount, nothing else


@dataclass(frozen=True, slots=True)
class ObservedAccount:
    key: str  # a person key, or UNOWNED for our labelled objects that name no person
    service_account: bool
    bindings: tuple[ObservedBinding, ...] = ()
    token_secrets: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()  # names of the labelled ServiceAccounts: what a removal deletes


@dataclass(frozen=True)
class ObservedCluster:
    name: str
    accounts: dict[str, ObservedAccount] = field(default_factory=dict, hash=False, compare=False)
    instance: str = ""  # syncd's namespace there: where ServiceAccounts and token Secrets live
