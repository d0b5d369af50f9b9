"""Wiring: the one place that builds the real adapters from configuration."""

from __future__ import annotations

from dataclasses import dataclass

from syncd.adapters.delivery import Delivery as FileDelivery
from syncd.adapters.kube import KubernetesCluster, KubernetesLease
from syncd.adapters.ledger import Database, Journal, LedgerLeaderLease, ReadModel, ScimStore
from syncd.config import (
    FileSourceSettings,
    LdapSourceSettings,
    ScimSourceSettings,
    Settings,
    SourceSettings,
    load_policy,
)
from syncd.core.policy import Policy
from syncd.errors import ConfigError
from syncd.ports import Cluster, Delivery, LeaderLease, Source


@dataclass
class Parts:
    """What an engine works with: the policy and one adapter per port. Closing the parts closes the adapters."""

    policy: Policy
    database: Database
    journal: Journal
    read_model: ReadModel
    clusters: dict[str, Cluster]
    delivery: Delivery
    sources: dict[str, Source]

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.close()
        for source in self.sources.values():
            source.close()
        self.database.close()


def build(settings: Settings, policy: Policy | None = None) -> Parts:
    """The real parts: the policy file (unless given), the ledger, a client per cluster, file delivery, and each
    source (a SCIM push source reads the ledger)."""
    policy = policy or load_policy(settings)
    # Every apply worker of every cluster may read the ledger at once, beside the group commit, the apply lock and
    # the daemon's requests.
    database = Database(settings.ledger.url, connections=sum(c.workers for c in settings.clusters) + 4)
    clusters: dict[str, Cluster] = {c.name: KubernetesCluster(c) for c in settings.clusters}
    return Parts(policy, database, Journal(database), ReadModel(database), clusters, FileDelivery(settings.delivery),
                 {s.name: open_source(s, database) for s in settings.sources})


def leader_lease(settings: Settings) -> LeaderLease:
    """Where this replica takes part in the leader election: the ledger database (its own connections, which
    outlive reloads) or a Kubernetes Lease."""
    lease = settings.daemon.leader.kubernetes
    if lease is not None:
        return KubernetesLease(settings.cluster(lease.cluster), lease.namespace, lease.name)
    return LedgerLeaderLease(Database(settings.ledger.url))


def reads_ledger(settings: SourceSettings) -> bool:
    """A SCIM push source finds what identity providers pushed in the ledger database."""
    return isinstance(settings, ScimSourceSettings) and settings.mode == "push"


def pushed_resources(database: Database) -> ScimStore:
    """Where the SCIM endpoint keeps what identity providers push, and push sources read it: the ledger database."""
    return ScimStore(database)


def open_source(settings: SourceSettings, database: Database | None = None) -> Source:
    """`database` is needed by sources that `reads_ledger`."""
    if isinstance(settings, FileSourceSettings):
        from syncd.adapters.file import FileSource

        return FileSource(settings)
    if isinstance(settings, LdapSourceSettings):
        from syncd.adapters.ldap import LdapSource

        return LdapSource(settings)
    if isinstance(settings, ScimSourceSettings):
        from syncd.adapters.scim_pull import ScimPullSource
        from syncd.scim.source import ScimPushSource

        if not reads_ledger(settings):
            return ScimPullSource(settings)
        if database is None:
            raise ConfigError(f"source {settings.name}: a scim push source reads the ledger, and none is open")
        return ScimPushSource(settings, pushed_resources(database))
    raise ConfigError(f"source {settings.name}: no source of type {settings.type}")
