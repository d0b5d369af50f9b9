"""The fast tier: the engine's behaviour on in-memory ports (tests/fakes.py, held to the real adapters by
tests/contract/), the real ledger over a temporary SQLite file and the real delivery on a temporary folder. No
control plane, no directory server: every test here is marked `fast`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.adapters.delivery import Delivery
from syncd.adapters.ledger import Database, Journal, ReadModel
from syncd.config import ClusterSettings, DeliverySettings, FileSourceSettings, LedgerSettings, Settings
from syncd.core.model import Identity, person_key
from syncd.core.policy import Policy
from syncd.ports import Source
from syncd.runtime.engine import Engine, RunReport
from syncd.runtime.wiring import Parts
from tests.fakes import FakeCluster, FakeSource

TEAM_A, TEAM_B = "team-a", "team-b"
POLICY = {
    "defaults": {"token_ttl": "1h", "rotation_period": "1d"},
    "rules": [
        {"name": "developers", "match": {"groups": ["developers"]},
         "grant": [{"cluster": "dev", "namespaces": [TEAM_A], "role": "edit"}]},
        {"name": "sre", "match": {"groups": ["sre"]},
         "grant": [{"cluster": "dev", "namespaces": [TEAM_B], "role": "view"},
                   {"cluster": "prod", "namespaces": [TEAM_B], "role": "view"}]},
    ],
}


@dataclass
class Rig:
    """An engine on fakes, with handles on each part."""

    engine: Engine
    source: FakeSource
    clusters: dict[str, FakeCluster]
    directory: Path

    @property
    def dev(self) -> FakeCluster:
        return self.clusters["dev"]

    def reconcile(self, **options: object) -> RunReport:
        (report,) = self.engine.reconcile(self.source.name, **options)  # type: ignore[arg-type]
        return report

    def token(self, who: Identity, cluster: str = "dev") -> str | None:
        return self.engine.delivery.read_token(self.engine.delivery.kubeconfig_path(person_key(who.id), cluster))

    def actions(self, report: RunReport) -> list[tuple[str, str, str, str]]:
        """(kind, reason, username, cluster) of each action the run planned."""
        assert report.plan is not None
        return sorted((str(a.kind), str(a.reason), a.username, a.cluster) for a in report.plan.actions)


def make_settings(directory: Path, source: str = "hr", clusters: tuple[str, ...] = ("dev",), **sections: object
                  ) -> Settings:
    """Settings for an engine on fakes: the cluster and source entries only name what the fakes stand for
    (`sources=[...]` replaces the file source named `source`)."""
    sections.setdefault("sources", [FileSourceSettings(name=source, path=directory / "unused.csv")])
    return Settings(
        policy=directory / "policy.yaml",
        ledger=LedgerSettings(url=f"sqlite:///{directory}/ledger.db"),
        clusters=[ClusterSettings(name=name, kubeconfig=directory / "unused", namespace="syncd") for name in clusters],
        delivery=DeliverySettings(directory=directory / "kubeconfigs"),
        **sections,  # type: ignore[arg-type]
    )


def make_engine(settings: Settings, source: Source | Callable[[Database], Source], clusters: dict[str, FakeCluster],
                policy: dict = POLICY) -> Engine:
    """An engine on these fakes, the real ledger and the real delivery; `source` may be made from the ledger."""
    database = Database(settings.ledger.url)
    source = source(database) if callable(source) else source
    parts = Parts(Policy.model_validate(policy), database, Journal(database), ReadModel(database), dict(clusters),
                  Delivery(settings.delivery), {source.name: source})
    return Engine(settings, parts)


def fake_clusters(*names: str) -> dict[str, FakeCluster]:
    return {name: FakeCluster(name, "syncd", namespaces={TEAM_A, TEAM_B}) for name in names}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    source, clusters = FakeSource("hr"), fake_clusters("dev", "prod")
    settings = make_settings(tmp_path, clusters=tuple(clusters), tokens={"rotation_grace": timedelta(minutes=5)},
                             safety={"max_revocations": 2, "max_revocation_percent": 100})
    with make_engine(settings, source, clusters) as engine:
        yield Rig(engine, source, clusters, tmp_path)

