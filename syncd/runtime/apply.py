"""Apply a plan: the only module that changes clusters, delivered files and the ledger.

Each action is one log event and one ledger event. A dry run walks the same path and logs "would ..." instead.
An action that fails is recorded as failed and the others go on; a cluster that becomes unreachable stops only
its own remaining actions.

Actions run concurrently: each cluster has a pool of workers (`ClusterSettings.workers`; its adapter caps the
requests in flight), and the actions of one person on one cluster (a lane) run in plan order on one worker, so each
person's steps keep their order. Interrupted (Ctrl-C, or
`stop` set: the daemon's SIGTERM), a run finishes the actions in flight and begins no other.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from syncd.adapters.ledger.journal import LEFT_FOR_FULL_RUN
from syncd.core.lifecycle import Lifecycle, TokenDelivery
from syncd.core.model import UNOWNED, KnownAccess, Reason, fingerprint, person_key
from syncd.core.plan import Action, Kind, Plan
from syncd.errors import ActionError, ClusterUnavailable, LeaseLost, SyncdError, TemporaryError
from syncd.ports import Cluster, Delivery, Event, Intent, IssuedToken, Journal, NewCredential, ReadModel, RunRef

log = structlog.get_logger("syncd.apply")

TOKEN_KINDS = frozenset({str(Kind.ISSUE), str(Kind.REPAIR), str(Kind.REFRESH), str(Kind.ROTATE)})
Progress = Callable[[str, int, int], None]  # (source, actions done, actions planned), after each action


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
    not_begun: int = 0  # actions left for the next run because the run was stopped


@dataclass
class _Run:
    """What the workers applying one plan share; every change to it under `lock`."""

    source: str
    outcome: Outcome
    total: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    down: set[str] = field(default_factory=set)  # clusters found unreachable: their remaining actions wait
    stopping: threading.Event = field(default_factory=threading.Event)  # interrupted: begin no other action
    done: int = 0
    intents: dict[str, IntentBlocks] = field(default_factory=dict)  # per cluster


class IntentBlocks:
    """The intents of one cluster's lanes, begun a block of lanes at a time: the worker that starts a lane whose
    intents are not begun yet begins those of the lanes queued after it too, up to `block` lanes, in one transaction
    (one ledger round trip instead of one per action). Each intent is still durable before its action's first write;
    a run stopped cleanly closes those of the lanes it never started (`abandoned`), a crash leaves them to recovery."""

    def __init__(self, begin: Callable[[list[Action]], list[int]], lanes: list[list[Action]], block: int) -> None:
        self._begin = begin
        self._lanes = lanes
        self._block = block
        self._ids: dict[int, list[int]] = {}  # lane index -> its actions' intent ids, once begun
        self._begun_up_to = 0  # lanes [0, begun_up_to) have their intents
        self._started: set[int] = set()
        self._left: list[int] = []  # intents of started lanes whose actions were not begun
        self._lock = threading.Lock()

    def start(self, lane: int) -> list[int]:
        """The intents of lane `lane`, begun now if they were not."""
        with self._lock:
            if lane >= self._begun_up_to:
                upto = min(max(lane + 1, self._begun_up_to + self._block), len(self._lanes))
                block = range(self._begun_up_to, upto)
                ids = iter(self._begin([action for n in block for action in self._lanes[n]]))
                for n in block:
                    self._ids[n] = [next(ids) for _ in self._lanes[n]]
                self._begun_up_to = upto
            self._started.add(lane)
            return self._ids[lane]

    def leave(self, intents: list[int]) -> None:
        """Intents of a started lane whose actions will not begin (the run is stopping)."""
        with self._lock:
            self._left.extend(intents)

    def abandoned(self) -> list[int]:
        """The intents begun for actions that never began."""
        with self._lock:
            return [*self._left, *(i for n, ids in self._ids.items() if n not in self._started for i in ids)]


def lanes(actions: Iterable[Action]) -> list[list[Action]]:
    """The actions grouped by person and cluster, each group in plan order, groups in order of first action."""
    grouped: dict[tuple[str, str], list[Action]] = {}
    for action in actions:
        grouped.setdefault((action.cluster, action.person_id), []).append(action)
    return list(grouped.values())


class Applier:
    """Every write of a run: to the clusters, the delivered files and (through the journal alone) the ledger."""

    def __init__(self, journal: Journal, read_model: ReadModel, clusters: Mapping[str, Cluster],
                 delivery: Delivery, *, run_id: str | None = None, dry_run: bool, lifecycle: Lifecycle,
                 deadline: float | None = None, workers: Mapping[str, int] | None = None,
                 progress: Progress | None = None, stop: threading.Event | None = None) -> None:
        self.lifecycle = lifecycle
        self.deadline = deadline  # time.monotonic() after which the remaining actions wait for the next run
        self.journal = journal
        self.read_model = read_model
        self.clusters = clusters
        self.delivery = delivery
        self.run_id = run_id
        self.dry_run = dry_run
        self.workers = workers or {}  # per cluster; 1 where not given
        self.progress = progress
        self.stop = stop or threading.Event()  # once set, no action begins and confirmations stop waiting
        self._namespace_ready: set[str] = set()
        self._namespace_locks = {name: threading.Lock() for name in clusters}

    def begin_run(self, source: str, *, approved: bool = False) -> str:
        """Start the run in the ledger (`approved`: a human allowed its revocations); its actions record under it."""
        self.run_id = self.journal.start_run(source, dry_run=self.dry_run, approved=approved)
        return self.run_id

    def finish_run(self, result: str, summary: dict) -> None:
        if self.run_id is not None:
            self.journal.finish_run(self.run_id, result, summary)

    def save_cursors(self, source: str, cookies: Mapping[str, bytes | None]) -> None:
        """Where a source's watch stopped: only once the changes before it were applied."""
        if not self.dry_run:
            self.journal.save_cursors(source, cookies)

    def lose_lease(self) -> None:
        """The run stopped on `LeaseLost`: recorded `lost-lease`, its intents left open for recovery."""
        if self.run_id is not None:
            self.journal.lose_lease(self.run_id)

    def apply(self, plan: Plan) -> Outcome:
        outcome = Outcome()
        if self.dry_run:
            for action in plan.actions:
                log.info(f"would {action.message}", **self._fields(action))
                outcome.applied.append(action)
            return outcome
        run = _Run(plan.source, outcome, len(plan.actions))
        by_cluster: dict[str, list[list[Action]]] = {}
        for lane in lanes(plan.actions):
            by_cluster.setdefault(lane[0].cluster, []).append(lane)
        for name, cluster_lanes in by_cluster.items():
            run.intents[name] = IntentBlocks(
                lambda actions: self.journal.begin_intents(self.run_id, [self._event(a) for a in actions]),
                cluster_lanes, self.workers.get(name, 1))
        try:
            with self._pools(by_cluster) as pools:
                try:
                    futures = [pools[name].submit(self._apply_lane, run, name, n, lane)
                               for name, cluster_lanes in by_cluster.items() for n, lane in enumerate(cluster_lanes)]
                    for future in futures:
                        future.result()
                except BaseException:
                    run.stopping.set()  # Ctrl-C: the actions in flight finish (the pools wait), no other begins
                    raise
        finally:
            self._abandon(run)  # every worker is done: no block of intents begins after this
        if self.stop.is_set() and run.done < run.total:
            outcome.not_begun = run.total - run.done
            log.warning("stop applying: the actions in flight finished, the others wait for the next run",
                        source=plan.source, run_id=self.run_id, not_begun=outcome.not_begun)
        # Held actions wait for a human: visible and auditable in the ledger, once per hold, not applied.
        self.journal.record_holds(self.run_id, [self._event(h.action, result="held", error=h.why)
                                               for h in plan.held])
        return outcome

    @contextmanager
    def _pools(self, clusters: Iterable[str]) -> Iterator[dict[str, ThreadPoolExecutor]]:
        """A pool of workers per cluster (`workers`). On leaving, queued work is dropped and the work in flight is
        waited for."""
        tag = f"apply-{uuid.uuid4().hex[:8]}"
        pools = {name: ThreadPoolExecutor(self.workers.get(name, 1), thread_name_prefix=f"{tag}-{name}")
                 for name in sorted(set(clusters))}
        try:
            yield pools
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)
            # A Ctrl-C while a pool started a worker leaves that worker out of the pool's list: wait for it too.
            for thread in threading.enumerate():
                if thread.name.startswith(tag) and thread is not threading.current_thread():
                    thread.join()

    def _abandon(self, run: _Run) -> None:
        """Close the intents begun for actions that never began (a stopped run): nothing of them was written."""
        abandoned = [i for blocks in run.intents.values() for i in blocks.abandoned()]
        if abandoned:
            with suppress(LeaseLost):  # another process holds the apply lock: its recovery closes them
                self.journal.end_intents(abandoned, "not-begun")

    def _apply_lane(self, run: _Run, cluster: str, lane: int, actions: list[Action]) -> None:
        """One person's actions on one cluster (lane number `lane` of its cluster), in plan order."""
        if run.stopping.is_set() or self.stop.is_set():
            return
        intents = run.intents[cluster].start(lane)
        for n, action in enumerate(actions):
            if run.stopping.is_set() or self.stop.is_set():
                run.intents[cluster].leave(intents[n:])
                return
            self._apply_action(run, action, intents[n])
            with run.lock:
                run.done += 1
                if self.progress is not None:
                    self.progress(run.source, run.done, run.total)

    def _apply_action(self, run: _Run, action: Action, intent: int) -> None:
        """Apply one action under its intent (begun): its writes, its ledger event; a failure fails this action
        only."""
        fields = self._fields(action)
        if action.cluster in run.down:
            error = ClusterUnavailable(f"cluster {action.cluster} is unreachable; action postponed")
            self._fail(run, action, error, fields, intent)
            return
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._fail(run, action, TemporaryError("the run's deadline passed; action postponed",
                                                   hint="raise run_deadline if runs need longer"), fields, intent)
            return
        try:
            # The fencing check before the action's first external write (its intent was begun with others'): once
            # this process knows it lost the apply lock, the run stops here.
            self.journal.check_lease()
            recorded_failure = self._apply_one(run.source, action, run.outcome, intent)
        except LeaseLost:
            run.stopping.set()  # not this action's failure: the run stops, its intents left for the new holder
            raise
        except Exception as raised:  # noqa: BLE001 - whatever breaks one action fails that action only
            error = raised if isinstance(raised, SyncdError) else ActionError.of(raised)
            if isinstance(error, ClusterUnavailable):
                with run.lock:
                    run.down.add(action.cluster)
            self._fail(run, action, error, fields, intent)
            return
        if recorded_failure is not None:
            log.error(action.message, result="failed", error=str(recorded_failure),
                      retryable=recorded_failure.retryable, **fields)
            with run.lock:
                run.outcome.failed.append((action, recorded_failure))
            return
        log.info(action.message, result="ok", **fields)
        with run.lock:
            run.outcome.applied.append(action)

    def resume(self, person_id: str, username: str, cluster: str | None, reason: str) -> list[str]:
        """Lift a person's idle suspension on `cluster` (None: every cluster), with the operator's reason; the
        clusters resumed."""
        resumed = self.journal.resume(self.run_id, Event(person_id, username, "resume", reason, cluster=cluster))
        for name in resumed:
            log.info("resume an access suspended for want of use", person=username, person_id=person_id,
                     cluster=name, reason=reason)
        return resumed

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

    def _fail(self, run: _Run, action: Action, error: SyncdError, fields: dict, intent: int) -> None:
        log.error(action.message, result="failed", error=str(error), retryable=error.retryable, **fields)
        with run.lock:
            run.outcome.failed.append((action, error))
        self.journal.record(self.run_id, self._event(action, result="failed", error=str(error)), intent)

    @staticmethod
    def _fields(action: Action) -> dict:
        return dict(person=action.username, person_id=action.person_id, cluster=action.cluster,
                    reason=str(action.reason), kind=str(action.kind))

    @staticmethod
    def _event(action: Action, **extra) -> Event:
        return Event(action.person_id, action.username, str(action.kind), str(action.reason), cluster=action.cluster,
                     before=action.before, after=action.after, **extra)

    def _apply_one(self, source: str, action: Action, outcome: Outcome, intent: int) -> SyncdError | None:
        """Apply one action under its intent. Returns the failure it already recorded in the ledger, if any."""
        cluster = self.clusters[action.cluster]
        if action.kind in (Kind.REVOKE, Kind.ORPHAN):
            return self._remove(cluster, action, outcome, intent)
        if action.kind is Kind.RETIRE:
            self._retire(cluster, action, outcome, intent)
            return None
        with self._namespace_locks[action.cluster]:
            if action.cluster not in self._namespace_ready:
                cluster.ensure_namespace()
                self._namespace_ready.add(action.cluster)

        # Stale or edited bindings go first, so no moment grants more than policy allows.
        for binding in action.delete_bindings:
            cluster.delete_binding(binding)
        # The ServiceAccount is written only when it was not seen, a token is asked of it, or a rename changes the
        # username on it: a mover whose account stands costs only their bindings.
        account = None
        if action.create_service_account or action.new_token or action.previous_username != action.username:
            account = cluster.ensure_service_account(action.person_id, action.username)
        for scope in action.create_bindings:
            cluster.create_binding(action.person_id, action.username, scope)

        assert action.identity is not None
        token: IssuedToken | None = None
        if action.new_token:
            assert account is not None
            token = cluster.issue_token(account, action.person_id, action.username, action.access.token_ttl)
            # Recorded before its file is written (the intent still pending): a crash after delivery never leaves
            # a working token the ledger does not know; recovery undoes one recorded but not delivered. The
            # access records where the person's files are: an old layout's place until the new one is written.
            destination = str(self.delivery.kubeconfig_path(action.key, action.cluster))
            self.journal.record_token(source, action.identity, action.cluster, action.after,
                                      NewCredential(token.secret_name, token.fingerprint, token.issued_at,
                                                   token.expires_at, token.jti),
                                      kubeconfig=action.old_kubeconfig or destination,
                                      grace=self.lifecycle.grace(action.kind), reason=str(action.reason),
                                      purpose=action.access.purpose)
        try:
            kubeconfig = self._deliver(cluster, action, token)
        except Exception:
            if token is not None:
                self._undo_credential(action.person_id, action.cluster, token.fingerprint)
            raise

        if token is not None:
            # The person, their access and the token are recorded: the event and the intent's end remain.
            self.journal.record_delivered(self.run_id, self._event(action, fingerprint=token.fingerprint), intent,
                                          moved_to=str(kubeconfig) if action.old_kubeconfig else None)
        else:
            self.journal.record_delivery(self.run_id, source, action.identity, self._event(action),
                                         str(kubeconfig or ""), intent,
                                         purpose=action.access.purpose if action.access else None)
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

    def _remove(self, cluster: Cluster, action: Action, outcome: Outcome, intent: int) -> SyncdError | None:
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
                                       remove_access=action.kind is Kind.REVOKE, intent_id=intent,
                                       suspend=action.kind is Kind.REVOKE and action.reason is Reason.IDLE)
        outcome.pending_rejections.extend(
            [PendingRejection(action.cluster, action.person_id, fingerprint(token), token) for token in removed])
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

    def _retire(self, cluster: Cluster, action: Action, outcome: Outcome, intent: int) -> None:
        """Delete old token Secrets: each deletion kills exactly the token bound to it."""
        for name in action.token_secrets:
            cluster.delete_token_secret(name)
        retired = self.journal.record_revocation(self.run_id, self._event(action), remove_access=False,
                                                 secret_names=action.token_secrets, intent_id=intent)
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
        """Poll TokenReview until each revoked token is rejected or `timeout` passes, the tokens of each cluster
        asked concurrently (by its workers). Returns how many are dead."""
        deadline = time.monotonic() + timeout
        remaining = list(pending)
        confirmed = 0
        with self._pools(item.cluster for item in pending) as pools:
            while remaining:
                answers = [(item, pools[item.cluster].submit(self._authenticates, item)) for item in remaining]
                still, rejected = [], []
                for item, answer in answers:
                    (still if answer.result() else rejected).append(item)
                self.journal.confirm_rejected(self.run_id, [item.fingerprint for item in rejected], datetime.now(UTC))
                for item in rejected:
                    log.info("confirm a revoked token is rejected", cluster=item.cluster, person_id=item.person_id,
                             fingerprint=item.fingerprint)
                confirmed += len(rejected)
                remaining = still
                if remaining and self.stop.is_set():
                    log.warning("stop confirming revoked tokens: syncd is stopping", unconfirmed=len(remaining))
                    break
                if remaining and time.monotonic() + interval > deadline:
                    for item in remaining:
                        log.warning("revoked token still authenticates at the deadline", cluster=item.cluster,
                                    person_id=item.person_id, fingerprint=item.fingerprint, timeout_s=timeout)
                    break
                if remaining:
                    self.stop.wait(interval)
        return confirmed

    def _authenticates(self, item: PendingRejection) -> bool:
        """Whether a revoked token still logs in; a cluster that cannot say counts as yes (ask again)."""
        try:
            return self.clusters[item.cluster].token_authenticates(item.token)
        except SyncdError as error:
            log.warning("check a revoked token", cluster=item.cluster, error=str(error))
            return True
