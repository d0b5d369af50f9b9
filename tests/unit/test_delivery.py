"""Delivered files: atomic, mode 0600, a kubeconfig that points at its token file."""

import stat

import pytest
import yaml

from syncd.config import DeliverySettings
from syncd.delivery import Delivery, DeliveryError
from syncd.model import Endpoint

ENDPOINT = Endpoint("https://127.0.0.1:6443", "Q0E=")


def test_kubeconfig_and_token_are_private_and_linked(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("alice", "dev", ENDPOINT, "secret-token", "team-a")
    token_path = delivery.token_path("alice", "dev")
    for file in (path, token_path):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = yaml.safe_load(path.read_text())
    assert config["users"][0]["user"] == {"tokenFile": str(token_path)}
    assert config["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
    assert config["contexts"][0]["context"]["namespace"] == "team-a"
    assert "secret-token" not in path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_refresh_replaces_only_the_token_file(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("alice", "dev", ENDPOINT, "one", None)
    before = path.stat().st_mtime_ns
    delivery.replace_token("alice", "dev", ENDPOINT, "two", None)
    assert delivery.read_token("alice", "dev") == "two"
    assert path.stat().st_mtime_ns == before


def test_inline_mode_puts_the_token_in_the_kubeconfig(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path, mode="inline"))
    delivery.deliver("alice", "dev", ENDPOINT, "inline-token", None)
    assert delivery.read_token("alice", "dev") == "inline-token"
    assert not delivery.token_path("alice", "dev").exists()


def test_rename_moves_the_same_token(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    delivery.deliver("alice", "dev", ENDPOINT, "tok", None)
    delivery.move("alice", "alice.archer", "dev", ENDPOINT, None)
    assert delivery.read_token("alice.archer", "dev") == "tok"
    assert not (tmp_path / "alice").exists()


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ""])
def test_usernames_cannot_escape_the_directory(tmp_path, name):
    with pytest.raises(DeliveryError):
        Delivery(DeliverySettings(directory=tmp_path)).folder(name)
