"""Delivered files: atomic, mode 0600, in the person's own folder, a kubeconfig that points at its token file."""

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from syncd.adapters.delivery import Delivery
from syncd.config import DeliverySettings
from syncd.core.model import Endpoint, delivery_problem, fingerprint, person_key
from syncd.errors import DeliveryError

ENDPOINT = Endpoint("https://127.0.0.1:6443", "Q0E=")


def test_kubeconfig_and_token_are_private_and_linked(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("1001", "alice", "dev", ENDPOINT, "secret-token", "team-a")
    token_path = delivery.token_path("1001", "dev")
    assert path.parent == tmp_path / "1001"
    for file in (path, token_path):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = yaml.safe_load(path.read_text())
    assert config["users"][0] == {"name": "alice@dev", "user": {"tokenFile": str(token_path)}}
    assert config["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
    assert config["contexts"][0]["context"]["namespace"] == "team-a"
    assert "secret-token" not in path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_delivery_syncs_each_file_and_then_its_folder_once(tmp_path, monkeypatch):
    """Each file is synced before its rename; the folder once, after both renames, before `deliver` returns."""
    synced: list[str] = []
    sync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or sync(fd))
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    delivery.deliver("1001", "alice", "dev", ENDPOINT, "secret-token", None)
    folder = str(tmp_path / "1001")
    assert synced[-1] == folder and synced.count(folder) == 1
    assert len(synced) == 3  # the token file, the kubeconfig, their folder


def test_refresh_replaces_only_the_token_file(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("1001", "alice", "dev", ENDPOINT, "one", None)
    before = path.stat().st_mtime_ns
    delivery.replace_token("1001", "alice", "dev", ENDPOINT, "two", None)
    assert delivery.read_token(path) == "two"
    assert path.stat().st_mtime_ns == before


def test_inline_mode_puts_the_token_in_the_kubeconfig(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path, mode="inline"))
    path = delivery.deliver("1001", "alice", "dev", ENDPOINT, "inline-token", None)
    assert delivery.read_token(path) == "inline-token"
    assert not delivery.token_path("1001", "dev").exists()


@pytest.mark.parametrize("name", ["josé.garcía", "李雷", "Zoë", "frank castle", "a/b", "..", "../etc", "x" * 300])
def test_any_readable_username_is_delivered_and_stays_readable_in_the_kubeconfig(tmp_path, name):
    assert delivery_problem(name) is None
    key = person_key("2001")
    path = Delivery(DeliverySettings(directory=tmp_path)).deliver(key, name, "dev", ENDPOINT, "tok", None)
    assert path == tmp_path / key / "dev.kubeconfig"
    config = yaml.safe_load(path.read_text())
    assert config["users"][0]["name"] == config["contexts"][0]["context"]["user"] == f"{name}@dev"


@pytest.mark.parametrize("cluster", ["123", "clüster: {x}"])
@pytest.mark.parametrize("endpoint", [Endpoint("https://[::1]:6443/prefix", None),
                                      Endpoint("https://api.example.org", "Q0E=" * 600)])
@pytest.mark.parametrize("namespace", [None, "team-a"])
@pytest.mark.parametrize("name", ["李雷: x", "yes", "- x #c", "'q' \\ \"d\"", "x" * 300])
@pytest.mark.parametrize("user", [{"tokenFile": "/d/k/dev.token"},
                                  {"exec": {"command": "/usr/bin/syncd", "args": ["credential", "--token-file", "007"],
                                            "interactiveMode": "Never"}}])
def test_a_kubeconfig_is_the_text_yaml_dump_gives_though_its_cluster_part_is_rendered_once(cluster, endpoint,
                                                                                            namespace, name, user):
    whole = {"apiVersion": "v1", "kind": "Config",
             "clusters": [{"name": cluster, "cluster": {"server": endpoint.server} | (
                 {"certificate-authority-data": endpoint.ca_data} if endpoint.ca_data else {})}],
             "users": [{"name": f"{name}@{cluster}", "user": user}],
             "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": f"{name}@{cluster}"} | (
                 {"namespace": namespace} if namespace else {})}],
             "current-context": cluster}
    for _ in range(2):  # the second from the cached cluster part
        text = Delivery.render(name, cluster, endpoint, user, namespace)
        assert text == yaml.safe_dump(whole, sort_keys=False, allow_unicode=True)
        assert yaml.safe_load(text) == whole


@pytest.mark.parametrize("name", ["", "  ", "sam\nroot", "nul\x00", "bell\x07", "lone\ud800", "x" * 1025])
def test_a_username_no_kubeconfig_can_carry_is_named(name):
    assert delivery_problem(name)


def test_person_keys_never_collide_even_for_ids_that_look_hashed():
    hashed = person_key("José")
    assert hashed.startswith("h") and len(hashed) == 33
    assert person_key(hashed) != hashed  # an id spelled like a hashed key is hashed too
    assert person_key("2101") == "2101"


@pytest.mark.parametrize("key", ["../etc", "a/b", "..", "", "Sam"])
def test_folders_are_named_by_person_keys_only(tmp_path, key):
    with pytest.raises(DeliveryError):
        Delivery(DeliverySettings(directory=tmp_path)).folder(key)


def test_removal_keeps_files_whose_token_is_someone_elses(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("2102", "sam", "dev", ENDPOINT, "token-of-2102", None)
    assert delivery.remove(path, {fingerprint("token-of-2101")}) is None
    assert delivery.read_token(path) == "token-of-2102"
    assert delivery.remove(path, {fingerprint("token-of-2102")}) == "token-of-2102"
    assert not (tmp_path / "2102").exists()


def test_removal_that_cannot_read_the_token_is_a_delivery_error(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("2101", "sam", "dev", ENDPOINT, "tok", None)
    delivery.token_path("2101", "dev").unlink()
    delivery.token_path("2101", "dev").mkdir()
    with pytest.raises(DeliveryError, match="cannot read"):
        delivery.remove(path, None)


def test_find_takes_an_id_or_a_username_and_refuses_ambiguity(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    delivery.deliver("2101", "sam", "dev", ENDPOINT, "a", None)
    delivery.deliver("2102", "sam", "dev", ENDPOINT, "b", None)
    delivery.deliver(person_key("u-9"), "zoë", "dev", ENDPOINT, "c", None)
    assert delivery.find("2102", "dev") == tmp_path / "2102"
    assert delivery.find("u-9", "dev") == delivery.find("zoë", "dev") == tmp_path / person_key("u-9")
    with pytest.raises(DeliveryError, match="several"):
        delivery.find("sam", "dev")
    with pytest.raises(DeliveryError, match="no kubeconfig"):
        delivery.find("nobody", "dev")


def test_syncd_credential_finds_the_folder_by_username_or_id(tmp_path, capsys):
    from syncd.app.cli import main

    delivery = Delivery(DeliverySettings(directory=tmp_path))
    delivery.deliver("2101", "sam", "dev", ENDPOINT, "token-of-2101", None)
    delivery.deliver("2102", "sam", "dev", ENDPOINT, "token-of-2102", None)
    delivery.deliver("2103", "zoë", "dev", ENDPOINT, "token-of-2103", None)
    for user, token in (("2102", "token-of-2102"), ("zoë", "token-of-2103")):
        with pytest.raises(SystemExit) as done:
            main(["credential", "--cluster", "dev", "--user", user, "--directory", str(tmp_path)])
        assert done.value.code == 0 and f'"token": "{token}"' in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["credential", "--cluster", "dev", "--user", "sam", "--directory", str(tmp_path)])
    assert done.value.code != 0 and "several" in capsys.readouterr().err


def test_one_persons_clusters_change_their_shared_folder_at_the_same_time(tmp_path):
    """Apply runs each cluster in its own pool: a leaver's files on two clusters are removed at once, and a mover's
    new cluster is delivered while the old one is removed. Neither may fail or lose the other's files."""
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    key = person_key("1001")
    for round_ in range(200):
        for cluster in ("dev", "prod"):
            delivery.deliver(key, "alice", cluster, ENDPOINT, f"{cluster}-{round_}", None)
        both_removed = _at_once(lambda: delivery.remove(delivery.kubeconfig_path(key, "dev"), None),
                                lambda: delivery.remove(delivery.kubeconfig_path(key, "prod"), None))
        assert both_removed == [f"dev-{round_}", f"prod-{round_}"]
        assert not delivery.folder(key).exists()

        delivery.deliver(key, "alice", "dev", ENDPOINT, "old", None)
        _at_once(lambda: delivery.remove(delivery.kubeconfig_path(key, "dev"), None),
                 lambda: delivery.deliver(key, "alice", "prod", ENDPOINT, "new", None))
        assert delivery.read_token(delivery.kubeconfig_path(key, "prod")) == "new"
        assert not delivery.kubeconfig_path(key, "dev").exists()
        delivery.remove(delivery.kubeconfig_path(key, "prod"), None)


def _at_once(*calls):  # type: ignore[no-untyped-def]
    """Run each call in its own thread, released together; their results in order (an exception is raised)."""
    barrier = threading.Barrier(len(calls))

    def released(call):  # type: ignore[no-untyped-def]
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(released, call) for call in calls]]
