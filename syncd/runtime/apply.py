"""Apply a plan: the only module that changes clusters, delivered files and the ledger.

Each action is one log event and one ledger event. A dry run walks the same path and logs "would ..." instead.
An action that fails is recorded as failed and the others go on; a cluster that becomes unreachable stops only
its own remaining actions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from syncd.adapters.ledger.journal import LEFT_FOR_FULL_RUN
from syncd.core.lifecycle import Lifecycle, TokenDelivery
from syncd.core.model import UNOWNED, KnownAccess, fingerprint, person_key
from syncd.core.plan import Action, Kind, Plan
from syncd.errors import ActionError, ClusterUnavailable, LeaseLost, SyncdError, TemporaryError
from syncd.ports import Cluster, Delivery, Event, Intent, IssuedToken, Journal, NewCredential, ReadModel, RunRef

log = structlog.get_logger("syncd.apply")

TOKEN_KINDS = frozenset({str(Kind.ISSUE), str(Kind.REPAIR), str(Kind.REFRESH), str(Kind.ROTATE)})


@dataclass(frozen=True)
class PendingRejection:
    """A revoked token to confirm dead by TokenReview. The token stays in memory only."""

    cluster: str
    person_id: str
    fingerprint: str
    token: str = field(repr=False)


@dataclass
class Outcome:
    applied: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, SyncdError]] = field(default_factory=list)
    pending_rejections: list[PendingRejection] = field(default_factory=list)


class Applier:
    """Every write of a run: to the clusters, the delivered files and (through the journal alone) the ledger."""

    def __init__(self, journal: Journal, read_model: ReadModel, clusters: Mapping[str, Cluster],
                 delivery: Delivery, *, run_id: str | None = None, dry_run: bool, lifecycle: Lifecycle,
                 deadline: float | None = None) -> None:
        self.lifecycle = lifecycle
        self.deadline = deadline  # time.monotonic() after which the remaining actions wait for the next run
        self.journal = journal
        self.read_model = read_model
        self.clusters = clusters
        self.delivery = delivery
        self.run_id = run_id
        self.dry_run = dry_run
        self._namespace_ready: set[str] = set()
        self._intent: int | None = None

    def begin_run(self, source: str, *, approved: bool = False) -> str:
        """Start the run in the ledger (`approved`: a human allowed its revocations); its actions record under it."""
        self.run_id = self.journal.start_run(source, dry_run=self.dry_run, approved=approved)
        return self.run_id

    def finish_run(self, result: str, summary: dict) -> None:
        if self.run_id is not None:
            self.journal.finish_run(self.run_id, result, summary)

    def lose_lease(self) -> None:
        """The run stopped on `LeaseLost`: recorded `lost-lease`, its intents left open for recovery."""
        if self.run_id is not None:
            self.journal.lose_lease(self.run_id)

    def apply(self, plan: Plan) -> Outcome:
        outcome = Outcome()
        down: set[str] = set()
        for action in plan.actions:
            fields = dict(person=action.username, person_id=action.person_id, cluster=action.cluster,
                          reason=str(action.reason), kind=str(action.kind))
            if self.dry_run:
                log.info(f"would {action.message}", **fields)
                outcome.applied.append(action)
                continue
            if action.cluster in down:
                error = ClusterUnavailable(f"cluster {action.cluster} is unreachable; action postponed")
                self._fail(plan.source, action, error, outcome, fields)
                continue
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self._fail(plan.source, action, TemporaryError("the run's deadline passed; action postponed",
                                                               hint="raise run_deadline if runs need longer"),
                           outcome, fields)
                continue
            # The fencing check before the action's first external write: once another process holds the apply
            # lock, this write fails (LeaseLost) and the run stops here.
            self._intent = self.journal.begin_intent(self.run_id, self._event(action))
            try:
                recorded_failure = self._apply_one(plan.source, action, outcome)
            except LeaseLost:
                raise  # not this action's failure: the run stops, its intent left for the new holder to recover
            except Exception as raised:  # noqa: BLE001 - whatever breaks one action fails that action only
                error = raised if isinstance(raised, SyncdError) else ActionError.of(raised)
                if isinstance(error, ClusterUnavailable):
                    down.add(action.cluster)
                self.journal.end_intent(self._intent, "failed")
                self._fail(plan.source, action, error, outcome, fields)
                continue
            if recorded_failure is not None:
                log.error(action.message, result="failed", error=str(recorded_failure),
                          retryable=recorded_failure.retryable, **fields)
                outcome.failed.append((action, recorded_failure))
                continue
            log.info(action.message, result="ok", **fields)
            outcome.applied.append(action)
        if not self.dry_run:
            # Held actions wait for a human: visible and auditable in the ledger, once per hold, not applied.
            self.journal.record_holds(self.run_id, [self._event(h.action, result="held", error=h.why)
                                                   for h in plan.held])
        return outcome

    def interrupt_dead_runs(self) -> list[RunRef]:
        """Mark every other run still `running` interrupted (see `Journal.interrupt_dead_runs`); under the apply
        lock only."""
        return self.journal.interrupt_dead_runs(self.run_id or "")

    def recover(self, settles: Callable[[str], bool]) -> list[tuple[Intent, str]]:
        """Before this run plans, under the apply lock: finish or roll back what each intent a dead run left open
        had half done, and close it with a `recover` event saying which. A token recorded and delivered is kept
        (finished); one recorded but not delivered is undone (rolled-back), as is a token never recorded, whose
        Secret the plan retires as stale. Other work is planned again by a run that reads the person from the source
        (`settles`); any other run (a sweep) leaves it, and the person's objects, for such a run."""
        intents = self.read_model.interrupted_intents()
        known = self.read_model.known_people({intent.person_id for intent in intents})
        results = []
        for intent in intents:
            person = known.get(intent.person_id)
            access = person.access.get(intent.cluster) if person else None
            if access is not None and intent.action in TOKEN_KINDS:
                result = self._recover_token(intent, access)
            else:
                result = "replanned" if settles(intent.person_id) else LEFT_FOR_FULL_RUN
            self.journal.settle_intent(self.run_id, intent, result)
            results.append((intent, result))
        return results

    def _recover_token(self, intent: Intent, access: KnownAccess) -> str:
        credential = access.credential
        if credential is None or credential.issued_at < intent.started_at:
            return "rolled-back"
        key = person_key(intent.person_id)
        kubeconfig = self.delivery.kubeconfig_path(key, intent.cluster)
        delivered = self.delivery.read_token(kubeconfig)
        if delivered is None or fingerprint(delivered) != credential.fingerprint:
            self._undo_credential(intent.person_id, intent.cluster, credential.fingerprint)
            return "rolled-back"
        cluster = self.clusters.get(intent.cluster)
        if cluster is not None and not kubeconfig.exists():
            # Killed between the token file and its kubeconfig.
            namespace = min((s.namespace for s in access.scopes if s.namespace), default=None)
            try:
                self.delivery.deliver(key, intent.username, intent.cluster, cluster.endpoint(), delivered, namespace)
            except SyncdError as error:
                log.error("deliver the kubeconfig of a recovered token", person=intent.username,
                          cluster=intent.cluster, error=str(error))
        return "finished"

    def _fail(self, source: str, action: Action, error: SyncdError, outcome: Outcome, fields: dict) -> None:
        log.error(action.message, result="failed", error=str(error), retryable=error.retryable, **fields)
        outcome.failed.append((action, error))
        self.journal.record(self.run_id, self._event(action, result="failed", error=str(error)))

    @staticmethod
    def _event(action: Action, **extra) -> Event:
        return Event(action.person_id, action.username, str(action.kind), str(action.reason), cluster=action.cluster,
                     before=action.before, after=action.after, **extra)

    def _apply_one(self, source: str, action: Action, outcome: Outcome) -> SyncdError | None:
        """Apply one action. Returns the failure it already recorded in the ledger, if any."""
        cluster = self.clusters[action.cluster]
        if action.kind in (Kind.REVOKE, Kind.ORPHAN):
            return self._remove(cluster, action, outcome)
        if action.kind is Kind.RETIRE:
            self._retire(cluster, action, outcome)
            return None
        if action.cluster not in self._namespace_ready:
            cluster.ensure_namespace()
            self._namespace_ready.add(action.cluster)

        # Stale or edited bindings go first, so no moment grants more than policy allows.
        for binding in action.delete_bindings:
            cluster.delete_binding(binding)
        account = cluster.ensure_service_account(action.person_id, action.username)
        for scope in action.create_bindings:
            cluster.create_binding(action.person_id, action.username, scope)

        assert action.identity is not None
        token: IssuedToken | None = None
        if action.new_token:
            token = cluster.issue_token(account, action.person_id, action.username, action.access.token_ttl)
            # Recorded before its file is written (the intent still pending): a crash after delivery never leaves
            # a working token the ledger does not know; recovery undoes one recorded but not delivered.
            self.journal.record_token(source, action.identity, action.cluster, action.after,
                                      NewCredential(token.secret_name, token.fingerprint, token.issued_at,
                                                    token.expires_at),
                                      grace=self.lifecycle.grace(action.kind), reason=str(action.reason))
        try:
            kubeconfig = self._deliver(cluster, action, token)
        except Exception:
            if token is not None:
                self._undo_credential(action.person_id, action.cluster, token.fingerprint)
            raise

        self.journal.record_delivery(self.run_id, source, action.identity,
                                     self._event(action, fingerprint=token.fingerprint if token else None),
                                     str(kubeconfig or ""), self._intent)
        if action.old_kubeconfig and token is not None:
            # Delivered under the old layout (DIRECTORY/USERNAME/): those files go only if they hold this person's
            # token; another person with that username may have been delivered there.
            try:
                self.delivery.remove(Path(action.old_kubeconfig), action.known_fingerprints)
            except SyncdError as error:
                log.warning("keep old delivered files that cannot be removed", person_id=action.person_id,
                            cluster=action.cluster, error=str(error))
        return None

    def _undo_credential(self, person_id: str, cluster: str, fingerprint_recorded: str) -> None:
        """The token recorded under `fingerprint_recorded` never reached the person: forget it, and make the token
        they do hold (if it is one the ledger still knows) the active one again."""
        delivered = self.delivery.read_token(self.delivery.kubeconfig_path(person_key(person_id), cluster))
        self.journal.undo_credential(person_id, cluster, fingerprint_recorded,
                                     delivered=fingerprint(delivered) if delivered else None)

    def _deliver(self, cluster: Cluster, action: Action, token: IssuedToken | None) -> Path:
        namespace = min((s.namespace for s in action.after if s.namespace), default=None)
        endpoint = cluster.endpoint()
        who = (action.key, action.username, action.cluster, endpoint)
        if token is not None:
            if self.lifecycle.delivery(action.kind) is TokenDelivery.REPLACE_FILE:
                return self.delivery.replace_token(*who, token.token, namespace)
            return self.delivery.deliver(*who, token.token, namespace)
        path = self.delivery.kubeconfig_path(action.key, action.cluster)
        token_text = self.delivery.read_token(path)
        if token_text is not None:
            # The username (a rename) or the default namespace (new scopes) in the kubeconfig may have changed.
            return self.delivery.deliver(*who, token_text, namespace)
        return path

    def _remove(self, cluster: Cluster, action: Action, outcome: Outcome) -> SyncdError | None:
        """Permissions first (instant), then the token Secrets and the ServiceAccount, then the delivered files.
        The cluster side and the ledger record complete even when the files cannot be removed; that failure is
        returned, recorded as the action's."""
        for binding in action.delete_bindings:
            cluster.delete_binding(binding)
        cluster.delete_account(action.service_accounts, action.token_secrets)
        # The files of the credentials this revokes go first; the ledger then records it all in one transaction.
        removed, error = self._remove_files(action, self.read_model.live_fingerprints(action.person_id,
                                                                                      action.cluster))
        failed = dict(result="failed", error=str(error)) if error is not None else {}
        self.journal.record_revocation(self.run_id, self._event(action, **failed),
                                       remove_access=action.kind is Kind.REVOKE, intent_id=self._intent)
        for token in removed:
            outcome.pending_rejections.append(
                PendingRejection(action.cluster, action.person_id, fingerprint(token), token))
        return error

    def _remove_files(self, action: Action, retired: set[str]) -> tuple[list[str], SyncdError | None]:
        """Remove the person's delivered files for the cluster: in their own folder unless the token there is
        known and not theirs, and in an old-layout folder only if the token there is theirs. The tokens removed."""
        if action.key == UNOWNED:
            return [], None  # objects naming no person: nobody was delivered anything
        mine = retired | set(action.known_fingerprints)
        places = [(self.delivery.kubeconfig_path(action.key, action.cluster), mine or None)]
        if action.old_kubeconfig:
            places.append((Path(action.old_kubeconfig), mine))
        removed: list[str] = []
        try:
            for kubeconfig, fingerprints in places:
                token = self.delivery.remove(kubeconfig, fingerprints)
                if token is not None:
                    removed.append(token)
        except Exception as raised:  # noqa: BLE001 - the cluster side is done; the file failure is reported
            return removed, raised if isinstance(raised, SyncdError) else ActionError.of(raised)
        return removed, None

    def _retire(self, cluster: Cluster, action: Action, outcome: Outcome) -> None:
        """Delete old token Secrets: each deletion kills exactly the token bound to it."""
        for name in action.token_secrets:
            cluster.delete_token_secret(name)
        retired = self.journal.record_revocation(self.run_id, self._event(action), remove_access=False,
                                                 secret_names=action.token_secrets, intent_id=self._intent)
        try:
            delivered = self.delivery.read_token(self.delivery.kubeconfig_path(action.key, action.cluster))
        except SyncdError as error:
            log.warning("read the delivered token", person_id=action.person_id, cluster=action.cluster,
                        error=str(error))
            delivered = None
        if delivered is not None and fingerprint(delivered) in retired:
            # The token people hold right now was revoked (e.g. exposed): confirm it dies.
            outcome.pending_rejections.append(
                PendingRejection(action.cluster, action.person_id, fingerprint(delivered), delivered))

    def confirm_rejections(self, pending: list[PendingRejection], timeout: float, interval: float = 1.0) -> int:
        """Poll TokenReview until each revoked token is rejected or `timeout` passes. Returns how many are dead."""
        deadline = time.monotonic() + timeout
        remaining = list(pending)
        confirmed = 0
        while remaining:
            still = []
            for item in remaining:
                try:
                    alive = self.clusters[item.cluster].token_authenticates(item.token)
                except SyncdError as error:
                    log.warning("check a revoked token", cluster=item.cluster, error=str(error))
                    alive = True
                if alive:
                    still.append(item)
                    continue
                confirmed += 1
                self.journal.confirm_rejected(self.run_id, item.fingerprint, datetime.now(UTC))
                log.info("confirm a revoked token is rejected", cluster=item.cluster, person_id=item.person_id,
                         fingerprint=item.fingerprint)
            remaining = still
            if remaining and time.monotonic() + interval > deadline:
                for item in remaining:
                    log.warning("revoked token still authenticates at the deadline", cluster=item.cluster,
                                person_id=item.person_id, fingerprint=item.fingerprint, timeout_s=timeout)
                break
            if remaining:
                time.sleep(interval)
        return confirmed
