"""Delivered files: atomic, mode 0600, in the person's own folder, a kubeconfig that points at its token file."""

import contextlib
import ctypes
import errno
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from syncd.adapters import delivery as delivery_module
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


class Recorded:
    """What a delivery does to the disk, in order: ("write", name), ("place", name), ("sync", names) where names are
    the files it asked to be durable (with syncfs the whole filesystem is)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, syncfs: bool) -> None:
        self.steps: list[tuple[str, object]] = []
        self.syncfs_calls = 0
        stage, place = delivery_module.stage, delivery_module.place
        monkeypatch.setattr(delivery_module, "stage", lambda path, content: self._step(("write", path.name),
                                                                                      stage(path, content)))
        monkeypatch.setattr(delivery_module, "place", lambda temporary, path: self._step(("place", path.name),
                                                                                         place(temporary, path)))
        real_fsync = delivery_module.fsync
        if syncfs:
            real_syncfs = delivery_module.SYNCFS
            assert real_syncfs is not None, "this machine's libc has syncfs"
            monkeypatch.setattr(delivery_module, "SYNCFS", lambda descriptor: self._syncfs() or real_syncfs(descriptor))
        else:
            monkeypatch.setattr(delivery_module, "SYNCFS", None)
        monkeypatch.setattr(delivery_module, "fsync", lambda path: self._step(("fsync", os.path.basename(path)),
                                                                              real_fsync(path)))
        grouped_sync = delivery_module.Durable.sync
        monkeypatch.setattr(delivery_module.Durable, "sync", lambda durable, paths: self._step(
            ("sync", sorted(os.path.basename(p).split(".")[1] if os.path.basename(p).startswith(".")
                            else os.path.basename(p) for p in paths)), grouped_sync(durable, paths)))

    def _step(self, step: tuple[str, object], result: object) -> object:
        self.steps.append(step)
        return result

    def _syncfs(self) -> None:
        self.syncfs_calls += 1


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_a_delivery_syncs_both_files_before_placing_them_and_their_folder_after(tmp_path, monkeypatch, syncfs):
    """Old or new, whole, after a crash: each file's content is durable before its rename, the renames before
    `deliver` returns; the token file is placed first."""
    recorded = Recorded(monkeypatch, syncfs)
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    delivery.deliver("1001", "alice", "dev", ENDPOINT, "secret-token", None)
    steps = [step for step in recorded.steps if step[0] != "fsync"]
    assert steps == [("write", "dev.token"), ("write", "dev.kubeconfig"), ("sync", ["dev", "dev"]),
                     ("place", "dev.token"), ("place", "dev.kubeconfig"), ("sync", ["1001"])]
    if syncfs:
        assert recorded.syncfs_calls == 2
    else:
        fsyncs = [name for kind, name in recorded.steps if kind == "fsync"]
        assert [name.split(".")[2] for name in fsyncs[:2]] == ["token", "kubeconfig"] and fsyncs[2:] == ["1001"]


def test_concurrent_deliveries_share_syncs(tmp_path, monkeypatch):
    """Deliveries that wait for a sync together are made durable by one: while one sync is under way, the 31
    deliveries that staged their files meanwhile are all served by the next."""
    groups: list[int] = []
    sync = delivery_module.Durable._sync
    monkeypatch.setattr(delivery_module.Durable, "_sync", lambda durable, group: groups.append(len(group)) or sync(
        durable, group))
    # Folders share locks by hash: none of these 32 waits for another's folder.
    monkeypatch.setattr(Delivery, "_changing", lambda self, folder: contextlib.nullcontext())
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    real_syncfs, first_under_way, go_on = delivery_module.SYNCFS, threading.Event(), threading.Event()

    def held(descriptor: int) -> int:
        if not first_under_way.is_set():
            first_under_way.set()
            assert go_on.wait(10)
        return real_syncfs(descriptor)

    monkeypatch.setattr(delivery_module, "SYNCFS", held)
    with ThreadPoolExecutor(32) as pool:
        first = pool.submit(delivery.deliver, person_key("0"), "p0", "dev", ENDPOINT, "token-0", None)
        assert first_under_way.wait(10)
        rest = [pool.submit(delivery.deliver, person_key(str(n)), f"p{n}", "dev", ENDPOINT, f"token-{n}", None)
                for n in range(1, 32)]
        while delivery._durable._grouped.waiting < 31:  # noqa: SLF001 - all waiting for the next sync
            threading.Event().wait(0.005)
        go_on.set()
        paths = [future.result() for future in (first, *rest)]
    assert [delivery.read_token(path) for path in paths] == [f"token-{n}" for n in range(32)]
    assert groups[0] == 1 and groups[1] >= 31
    assert len(groups) < 2 * 32


def test_a_failed_sync_is_a_delivery_error_and_leaves_the_files_as_they_were(tmp_path, monkeypatch):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("1001", "alice", "dev", ENDPOINT, "old-token", None)
    before = {p.name: p.read_text() for p in path.parent.iterdir()}

    def failing(descriptor: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(delivery_module, "SYNCFS", failing)
    with pytest.raises(DeliveryError, match="Input/output error") as raised:
        delivery.deliver("1001", "alice", "dev", ENDPOINT, "new-token", None)
    assert "new-token" not in str(raised.value)
    assert {p.name: p.read_text() for p in path.parent.iterdir()} == before  # no temporary file left


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


def test_removal_takes_the_files_a_killed_delivery_staged_and_no_others(tmp_path):
    delivery = Delivery(DeliverySettings(directory=tmp_path))
    path = delivery.deliver("2101", "sam", "dev", ENDPOINT, "tok", None)
    killed = [path.parent / ".dev.kubeconfig.k1ll3d", path.parent / ".dev.token.k1ll3d"]
    for staged in killed:
        staged.write_text("tok")
    delivery.deliver("2101", "sam", "prod", ENDPOINT, "prod-tok", None)
    assert delivery.remove(path, None) == "tok"
    assert sorted(p.name for p in path.parent.iterdir()) == ["prod.kubeconfig", "prod.token"]
    (path.parent / ".prod.token.k1ll3d").write_text("prod-tok")
    assert delivery.remove(delivery.kubeconfig_path("2101", "prod"), None) == "prod-tok"
    assert not path.parent.exists()


@pytest.mark.parametrize("how", ["symlink", "relative"])
def test_a_kubeconfig_names_its_token_file_by_its_absolute_resolved_path(tmp_path, monkeypatch, how):
    real = tmp_path / "real"
    real.mkdir()
    if how == "symlink":
        directory = tmp_path / "link"
        directory.symlink_to(real)
    else:
        monkeypatch.chdir(tmp_path)
        directory = Path("real")
    delivery = Delivery(DeliverySettings(directory=directory))
    path = delivery.deliver("1001", "alice", "dev", ENDPOINT, "tok", None)
    token_file = yaml.safe_load(path.read_text())["users"][0]["user"]["tokenFile"]
    assert token_file == str(real.resolve() / "1001" / "dev.token")
    assert Path(token_file).read_text() == "tok"
