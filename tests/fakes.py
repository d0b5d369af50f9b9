"""In-memory fakes of the ports (`syncd.ports`) for the fast tier. Each one passes the same contract suite as the
real adapter (tests/contract/), so it cannot drift from the real thing.

Delivery has no fake: the fast tier uses the real `Delivery` on a temporary folder (files on a local disk cost
microseconds), and the ledger is the real one over a temporary SQLite file.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from syncd.adapters.kube import TOKEN_LABEL
from syncd.core.model import (
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PERSON_ID_ANNOTATION,
    PERSON_LABEL,
    SCOPE_LABEL,
    UNOWNED,
    USERNAME_ANNOTATION,
    Endpoint,
    Identity,
    ObservedAccount,
    ObservedBinding,
    ObservedCluster,
    RoleKind,
    Scope,
    Snapshot,
    binding_name,
    person_key,
    service_account_name,
)
from syncd.core.review import RbacRule, Role
from syncd.errors import ClusterUnavailable, Conflict, NotFound, SourceUnavailable, SyncdError
from syncd.ports import IssuedToken, ServiceAccountRef

DEFAULT_CLUSTER_ROLES = frozenset({"cluster-admin", "admin", "edit", "view"})  # what an API server starts with


def serialised(method: Callable) -> Callable:
    """One call at a time, as an API server serialises the writes to one object: the applier calls from many
    threads."""

    @functools.wraps(method)
    def call(self: FakeCluster, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self.lock:
            return method(self, *args, **kwargs)

    return call


@dataclass
class FakeObject:
    """A namespaced or cluster-wide object: its labels and annotations, and for bindings subjects and role."""

    name: str
    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    owner_uid: str | None = None  # a token Secret's ServiceAccount (garbage-collected with it)
    subjects: list[tuple[str, str, str | None]] = field(default_factory=list)
    role: tuple[str, str] = ("", "")  # (kind, name) of a binding's roleRef


@dataclass(frozen=True)
class _Bound:
    """What a fake token is bound to: it authenticates while both exist with these uids, until it expires."""

    secret: str
    secret_uid: str
    service_account: str
    service_account_uid: str
    expires_at: datetime


class FakeCluster:
    """The Kubernetes API server as syncd sees it, in dicts: ServiceAccounts, token Secrets, RoleBindings and
    ClusterRoleBindings with their labels; 409 on creating a taken name (ours if it carries our labels, subjects
    and role), 404 ignored on delete, 404 on creating in a missing namespace; a token authenticates until its Secret
    or ServiceAccount is deleted (deleting the account deletes its Secrets, as the garbage collector does). Write
    calls are counted as the real adapter counts them.

    Faults: `unreachable` fails every call as a dead network does; `server_error` fails every write with a 500."""

    def __init__(self, name: str = "dev", namespace: str = "syncd", *, namespaces: Iterable[str] = (),
                 cluster_roles: Iterable[str] = DEFAULT_CLUSTER_ROLES, roles: Iterable[tuple[str, str]] = ()) -> None:
        self.name = name
        self.namespace = namespace
        self.writes = 0
        self.unreachable = False
        self.server_error = False
        self.closed = False
        self.namespaces: set[str] = {"default", "kube-system", *namespaces}
        self.cluster_roles: set[str] = set(cluster_roles)
        self.roles: set[tuple[str, str]] = set(roles)  # (namespace, name)
        self.rules: dict[Role, tuple[RbacRule, ...]] = {}  # of the roles above; () where not given
        self.service_accounts: dict[str, FakeObject] = {}
        self.secrets: dict[str, FakeObject] = {}
        self.bindings: dict[tuple[str | None, str], FakeObject] = {}  # (namespace or None, name)
        self.tokens: dict[str, _Bound] = {}
        self.instance_labels = {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: namespace}
        self.lock = threading.RLock()

    # Faults and bookkeeping

    def _call(self, doing: str, *, write: bool = False) -> None:
        if self.unreachable:
            raise ClusterUnavailable(f"cluster {self.name}: {doing}: ConnectTimeoutError",
                                     hint="is the fake reachable?")
        if write:
            self.writes += 1
            if self.server_error:
                raise ClusterUnavailable(f"cluster {self.name}: {doing}: 500 Internal Server Error")

    def _in_namespace(self, doing: str, namespace: str | None) -> None:
        if namespace is not None and namespace not in self.namespaces:
            raise NotFound(f"cluster {self.name}: {doing}: 404 namespaces \"{namespace}\" not found")

    def _meta(self, person_id: str, username: str, **labels: str) -> dict:
        return {"labels": {**self.instance_labels, PERSON_LABEL: person_key(person_id), **labels},
                "annotations": {USERNAME_ANNOTATION: username, PERSON_ID_ANNOTATION: person_id}}

    def _labelled_for(self, person_id: str, obj: FakeObject) -> bool:
        return all(obj.labels.get(k) == v for k, v in self.instance_labels.items()) \
            and obj.labels.get(PERSON_LABEL) == person_key(person_id)

    def _taken(self, doing: str) -> Conflict:
        return Conflict(f"cluster {self.name}: {doing}: the name is taken by an object that is not this syncd's")

    def _ours(self, obj: FakeObject) -> bool:
        return all(obj.labels.get(k) == v for k, v in self.instance_labels.items())

    # Reading

    def endpoint(self) -> Endpoint:
        self._call("read the endpoint")
        return Endpoint(f"https://{self.name}.cluster.invalid:6443", None)

    @serialised
    def observe(self, people: Collection[str] | None = None) -> ObservedCluster:
        self._call("list ServiceAccounts")
        wanted = None if people is None else set(people)
        found: dict[str, dict] = {}

        def account(obj: FakeObject) -> dict | None:
            if not self._ours(obj):
                return None
            key = obj.labels.get(PERSON_LABEL) or UNOWNED
            if wanted is not None and key not in wanted:
                return None
            return found.setdefault(key, {"key": key, "service_accounts": [], "bindings": [], "token_secrets": []})

        for sa in self.service_accounts.values():
            if (entry := account(sa)) is not None:
                entry["service_accounts"].append(sa.name)
        for secret in self.secrets.values():
            if secret.labels.get(TOKEN_LABEL) == "true" and (entry := account(secret)) is not None:
                entry["token_secrets"].append(secret.name)
        for binding in self.bindings.values():
            if (entry := account(binding)) is not None:
                scope = Scope(binding.namespace, RoleKind(binding.role[0]), binding.role[1])
                intact = binding.subjects == [("ServiceAccount", service_account_name(entry["key"]), self.namespace)]
                entry["bindings"].append(ObservedBinding(binding.name, binding.namespace, scope, intact))
        return ObservedCluster(
            self.name,
            {key: ObservedAccount(key, bool(e["service_accounts"]), tuple(e["bindings"]),
                                  tuple(sorted(e["token_secrets"])), tuple(sorted(e["service_accounts"])))
             for key, e in found.items()},
            self.namespace,
        )

    @serialised
    def missing_roles(self, scopes: Iterable[Scope]) -> frozenset[Scope]:
        self._call("list ClusterRoles")
        scopes = list(scopes)
        return frozenset({Scope(None, RoleKind.CLUSTER_ROLE, s.role_name) for s in scopes
                          if s.role_kind is RoleKind.CLUSTER_ROLE and s.role_name not in self.cluster_roles}
                         | {s for s in scopes if s.role_kind is RoleKind.ROLE and s.namespace is not None
                            and (s.namespace, s.role_name) not in self.roles})

    @serialised
    def role_rules(self, role: Role) -> tuple[RbacRule, ...] | None:
        self._call(f"read {role.kind} {role.name}")
        exists = (role.name in self.cluster_roles if role.kind is RoleKind.CLUSTER_ROLE
                  else (role.namespace, role.name) in self.roles)
        return self.rules.get(role, ()) if exists else None

    @serialised
    def token_authenticates(self, token: str) -> bool:
        self._call("review a token")
        bound = self.tokens.get(token)
        if bound is None or bound.expires_at <= datetime.now(UTC):
            return False
        secret, account = self.secrets.get(bound.secret), self.service_accounts.get(bound.service_account)
        return secret is not None and secret.uid == bound.secret_uid \
            and account is not None and account.uid == bound.service_account_uid

    # Writing

    @serialised
    def ensure_namespace(self) -> None:
        self._call("read namespace")
        if self.namespace not in self.namespaces:
            self._call("create namespace", write=True)
            self.namespaces.add(self.namespace)

    @serialised
    def ensure_service_account(self, person_id: str, username: str) -> ServiceAccountRef:
        name = service_account_name(person_id)
        doing = f"create ServiceAccount {name}"
        self._call(doing, write=True)
        self._in_namespace(doing, self.namespace)
        account = self.service_accounts.get(name)
        if account is None:
            account = self.service_accounts[name] = FakeObject(name, self.namespace,
                                                               **self._meta(person_id, username))
        elif not self._labelled_for(person_id, account):
            raise self._taken(doing)
        elif account.annotations.get(USERNAME_ANNOTATION) != username:
            self._call(f"annotate ServiceAccount {name}", write=True)
            account.annotations |= {USERNAME_ANNOTATION: username, PERSON_ID_ANNOTATION: person_id}
        return ServiceAccountRef(account.name, account.uid)

    @serialised
    def issue_token(self, account: ServiceAccountRef, person_id: str, username: str, ttl: timedelta
                    ) -> IssuedToken:
        key = person_key(person_id)
        self._call("create token Secret", write=True)
        self._in_namespace("create token Secret", self.namespace)
        secret = FakeObject(f"syncd-{key}-{secrets.token_hex(3)[:5]}", self.namespace,
                            **self._meta(person_id, username, **{TOKEN_LABEL: "true"}), owner_uid=account.uid)
        self.secrets[secret.name] = secret
        issued_at = datetime.now(UTC)
        try:
            self._call(f"request a token for {account.name}", write=True)
            existing = self.service_accounts.get(account.name)
            if existing is None or existing.uid != account.uid:
                raise NotFound(f"cluster {self.name}: request a token for {account.name}: 404 "
                               f"serviceaccounts \"{account.name}\" not found")
        except SyncdError:
            self.delete_token_secret(secret.name)
            raise
        expires_at = (issued_at + ttl).replace(microsecond=0)
        token = _jwt(f"system:serviceaccount:{self.namespace}:{account.name}", expires_at)
        self.tokens[token] = _Bound(secret.name, secret.uid, account.name, account.uid, expires_at)
        return IssuedToken(token, secret.name, issued_at, expires_at)

    @serialised
    def create_binding(self, person_id: str, username: str, scope: Scope) -> None:
        name = binding_name(person_id, scope, self.namespace)
        doing = f"bind {scope}"
        self._call(doing, write=True)
        self._in_namespace(doing, scope.namespace)
        subjects = [("ServiceAccount", service_account_name(person_id), self.namespace)]
        role = (str(scope.role_kind), scope.role_name)
        existing = self.bindings.get((scope.namespace, name))
        if existing is None:
            self.bindings[(scope.namespace, name)] = FakeObject(
                name, scope.namespace, **self._meta(person_id, username, **{SCOPE_LABEL: scope.key}),
                subjects=subjects, role=role)
        elif not (self._labelled_for(person_id, existing) and existing.subjects == subjects
                  and existing.role == role):
            raise self._taken(doing)

    @serialised
    def delete_binding(self, binding: ObservedBinding) -> None:
        self._call(f"delete binding {binding.name}", write=True)
        self.bindings.pop((binding.namespace, binding.name), None)

    @serialised
    def delete_token_secret(self, name: str) -> None:
        self._call(f"delete token Secret {name}", write=True)
        self.secrets.pop(name, None)

    @serialised
    def delete_account(self, service_accounts: tuple[str, ...], token_secrets: tuple[str, ...]) -> None:
        for name in token_secrets:
            self.delete_token_secret(name)
        for name in service_accounts:
            self._call(f"delete ServiceAccount {name}", write=True)
            account = self.service_accounts.pop(name, None)
            if account is not None:  # the garbage collector deletes the Secrets it owns
                for owned in [s.name for s in self.secrets.values() if s.owner_uid == account.uid]:
                    del self.secrets[owned]

    def close(self) -> None:
        self.closed = True

    # For tests: what people do by hand

    def add_service_account(self, name: str, **labels: str) -> FakeObject:
        """A ServiceAccount someone else made in syncd's namespace, with these labels only."""
        obj = self.service_accounts[name] = FakeObject(name, self.namespace, dict(labels))
        return obj

    @serialised
    def bindings_of(self, person_id: str) -> set[Scope]:
        """The scopes bound to a person's ServiceAccount right now."""
        subject = ("ServiceAccount", service_account_name(person_id), self.namespace)
        return {Scope(b.namespace, RoleKind(b.role[0]), b.role[1]) for b in self.bindings.values()
                if subject in b.subjects}


def _jwt(subject: str, expires_at: datetime) -> str:
    """A token shaped like a service account JWT (its `exp` readable, as `syncd credential` reads it), unsigned."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return ".".join([part({"alg": "none", "typ": "JWT"}),
                     part({"sub": subject, "exp": int(expires_at.timestamp()), "jti": secrets.token_hex(8)}),
                     secrets.token_urlsafe(32)])


class FakeSource:
    """A source whose people tests set: `people` (by id), `problems` for a partial read, `failure` to make the
    next reads raise (a `SourceUnavailable` by default)."""

    def __init__(self, name: str, *people: Identity) -> None:
        self.name = name
        self.people: dict[str, Identity] = {p.id: p for p in people}
        self.problems: tuple[str, ...] = ()
        self.failure: SyncdError | None = None
        self.reads = 0
        self.closed = False

    def set(self, *people: Identity, problems: tuple[str, ...] = ()) -> None:
        """Everyone the source holds from now on."""
        self.people = {p.id: p for p in people}
        self.problems = problems

    def fail(self, error: SyncdError | None = None) -> None:
        self.failure = error or SourceUnavailable(f"source {self.name}: cannot be read (a fault set by a test)")

    def _check(self) -> None:
        self.reads += 1
        if self.failure is not None:
            raise self.failure

    def read(self) -> Snapshot:
        self._check()
        return Snapshot(self.name, tuple(self.people.values()), complete=not self.problems, problems=self.problems)

    def close(self) -> None:
        self.closed = True


class FakeTargetedSource(FakeSource):
    """A source that reads just the people asked for (`TargetedSource`), as the SCIM push source does."""

    def read_people(self, ids: Collection[str]) -> Snapshot:
        self._check()
        return Snapshot(self.name, tuple(p for i, p in self.people.items() if i in ids), complete=not self.problems,
                        problems=self.problems, population=len(self.people))


class FakeIncrementalSource(FakeSource):
    """A source that tells the people changed since the last read or poll (`IncrementalSource`), as LDAP does;
    deletions show up in the next full read only."""

    def __init__(self, name: str, *people: Identity) -> None:
        super().__init__(name, *people)
        self._seen: dict[str, Identity] = {}

    def read(self) -> Snapshot:
        snapshot = super().read()
        self._seen = dict(self.people)
        return snapshot

    def poll(self) -> Snapshot:
        self._check()
        changed = tuple(p for i, p in self.people.items() if self._seen.get(i) != p)
        self._seen = dict(self.people)
        return Snapshot(self.name, changed, complete=not self.problems, problems=self.problems)


def person(person_id: str, username: str | None = None, *groups: str, active: bool = True) -> Identity:
    """A person for tests: `person("1", "alice", "developers")`."""
    return Identity(person_id, username or f"user{person_id}", f"{username or person_id}@example.org",
                    groups=frozenset(groups), active=active)


def moved(who: Identity, *groups: str) -> Identity:
    return replace(who, groups=frozenset(groups))
