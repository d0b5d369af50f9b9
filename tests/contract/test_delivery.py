"""The `Delivery` port's contract, run against the file delivery in each of its modes. The fast tier uses this real
delivery on a temporary folder (local files cost microseconds), so there is no fake of it to drift."""

from __future__ import annotations

import pytest

from syncd.adapters.delivery import Delivery
from syncd.config import DeliverySettings
from syncd.core.model import Endpoint, fingerprint, person_key
from syncd.ports import Delivery as DeliveryPort

TARGET = Endpoint("https://dev.cluster.invalid:6443", None)
KEY = person_key("p1")


class DeliveryContract:
    @pytest.fixture
    def delivery(self, tmp_path) -> DeliveryPort:
        raise NotImplementedError

    def test_nothing_delivered_reads_as_no_token(self, delivery: DeliveryPort):
        assert delivery.read_token(delivery.kubeconfig_path(KEY, "dev")) is None
        assert delivery.remove(delivery.kubeconfig_path(KEY, "dev"), None) is None

    def test_a_delivered_token_reads_back_from_a_private_file(self, delivery: DeliveryPort):
        path = delivery.deliver(KEY, "alice", "dev", TARGET, "token-one", "team-a")
        assert path == delivery.kubeconfig_path(KEY, "dev")
        assert delivery.read_token(path) == "token-one" and path.stat().st_mode & 0o777 == 0o600

    def test_a_replaced_token_is_the_one_read(self, delivery: DeliveryPort):
        path = delivery.deliver(KEY, "alice", "dev", TARGET, "token-one", None)
        assert delivery.replace_token(KEY, "alice", "dev", TARGET, "token-two", None) == path
        assert delivery.read_token(path) == "token-two"

    def test_removal_only_of_the_tokens_named(self, delivery: DeliveryPort):
        path = delivery.deliver(KEY, "alice", "dev", TARGET, "token-one", None)
        assert delivery.remove(path, {fingerprint("someone-else")}) is None
        assert delivery.read_token(path) == "token-one"
        assert delivery.remove(path, {fingerprint("token-one")}) == "token-one"
        assert not path.exists() and delivery.read_token(path) is None


@pytest.mark.fast
@pytest.mark.parametrize("mode", ["token-file", "inline", "exec"])
class TestFileDelivery(DeliveryContract):
    @pytest.fixture
    def delivery(self, tmp_path, mode: str) -> DeliveryPort:
        return Delivery(DeliverySettings(directory=tmp_path / "kubeconfigs", mode=mode))  # type: ignore[arg-type]
