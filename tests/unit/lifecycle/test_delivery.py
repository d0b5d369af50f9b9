"""How a new token reaches the person: a refresh or rotation replaces only the token file."""

import pytest

from syncd.core.lifecycle import Lifecycle, TokenDelivery
from syncd.core.model import Kind


@pytest.mark.parametrize("kind", [Kind.REFRESH, Kind.ROTATE])
def test_a_renewed_token_replaces_only_the_token_file(kind: Kind):
    """Running kubectl or K9s sessions keep their kubeconfig and read the new token file."""
    assert Lifecycle.delivery(kind) is TokenDelivery.REPLACE_FILE


@pytest.mark.parametrize("kind", [Kind.ISSUE, Kind.REPAIR])
def test_an_issued_or_repaired_token_is_delivered_in_full(kind: Kind):
    """A joiner, drift or relocation gets the kubeconfig written with its token."""
    assert Lifecycle.delivery(kind) is TokenDelivery.FULL
