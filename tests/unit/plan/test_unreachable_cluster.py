"""A cluster that cannot be read delays only its own actions; nothing is planned for it."""

from tests.unit.plan.builders import CLUSTER, kinds, person, plan


def test_unreachable_cluster_is_skipped():
    result = plan((person(),), reachable=False)
    assert kinds(result) == []
    assert result.skipped_clusters == (CLUSTER,)
