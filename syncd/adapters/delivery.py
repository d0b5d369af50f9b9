"""Delivery: a kubeconfig per person per cluster, and beside it the token file it points to.

Layout: DIRECTORY/KEY/CLUSTER.kubeconfig and DIRECTORY/KEY/CLUSTER.token, KEY being `person_key` of the person's
stable id: two people never share a folder, whatever their usernames, and a rename moves nothing. The username
names the user and context inside the kubeconfig only. Every file is written atomically with mode 0600 (temporary
file, sync, rename, sync of its folder: `Delivery._write_files`), so kubectl or K9s never read half a token, and a
crash leaves each file old or new, whole. Apply works on several clusters at once, so
one person's folder may be written and emptied by two threads: each folder is changed by one thread at a time.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import structlog
import yaml

from syncd.adapters.grouped import Grouped, Request
from syncd.config import DeliverySettings
from syncd.core.model import Endpoint, fingerprint, is_person_key, person_key, token_claims
from syncd.errors import DeliveryError

EXEC_API_VERSION = "client.authentication.k8s.io/v1"
FOLDER_LOCKS = 64  # folders share locks by hash: bounded memory, and two folders rarely wait for each other
# libyaml's emitter where PyYAML has it: the same text, at a tenth of the pure-Python emitter's CPU (which, run once per
# person, competed with every apply worker for the interpreter).
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
STR_TAG, SEQ_TAG, MAP_TAG = (f"tag:yaml.org,2002:{kind}" for kind in ("str", "seq", "map"))
log = structlog.get_logger("syncd.delivery")


def _this_syncd() -> str:
    beside_python = Path(sys.executable).parent / "syncd"
    return str(beside_python) if beside_python.exists() else (shutil.which("syncd") or "syncd")


def token_expiry(token: str) -> datetime | None:
    """The `exp` claim of a service account token (a JWT), read without verifying: only for display and
    ExecCredential's expirationTimestamp, never for trust."""
    try:
        return datetime.fromtimestamp(int(token_claims(token)["exp"]), UTC)
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        return None


def exec_credential(token_file: Path) -> dict:
    """What `syncd credential` prints for kubectl: client.authentication.k8s.io/v1 ExecCredential."""
    try:
        token = token_file.read_text().strip()
    except OSError as error:
        raise DeliveryError(f"cannot read the token file {token_file}: {error.strerror}") from None
    if not token:
        raise DeliveryError(f"the token file {token_file} is empty")
    status: dict[str, str] = {"token": token}
    expiry = token_expiry(token)
    if expiry is not None:
        status["expirationTimestamp"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential", "status": status}


def stage(path: Path, content: str) -> str:
    """A new temporary file beside `path` holding `content`, readable by its owner only (mkstemp creates it 0600,
    never anything wider); its name. Not yet durable."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        data = memoryview(content.encode())
        while data:
            data = data[os.write(descriptor, data):]
    except BaseException:
        os.unlink(temporary)
        raise
    finally:
        os.close(descriptor)
    return temporary


def place(temporary: str, path: Path) -> None:
    """Rename a staged file over `path`: a reader sees the old file or the new one, whole."""
    os.replace(temporary, path)


def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2) (Linux), None where there is none."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


SYNCFS = _syncfs()


def fsync(path: Path | str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Durable:
    """Makes written files and renames durable for many deliveries at once. The cost of a sync is per call (a
    journal commit), not per file: a delivery's three fsyncs (two files, their folder) took more CPU than the rest of
    its work, CPU every apply worker competes for. So concurrent callers' paths are synced as a group (`Grouped`),
    by one syncfs(2) of the delivery directory's filesystem, or an fsync of each path where there is no syncfs.

    syncfs reports a writeback error to each descriptor open when it happened: the directory's is opened before the
    first file is staged (`ready`), and kept."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._descriptor: int | None = None
        self._opening = threading.Lock()
        self._grouped: Grouped[Sequence[Path | str]] = Grouped(self._sync)

    def ready(self) -> None:
        """Call before writing files that `sync` will be asked to make durable (the directory exists)."""
        if SYNCFS is None or self._descriptor is not None:
            return
        with self._opening:
            if self._descriptor is None:
                self._descriptor = os.open(self._directory, os.O_RDONLY)
                weakref.finalize(self, os.close, self._descriptor)

    def sync(self, paths: Sequence[Path | str]) -> None:
        """Return once `paths` (files written, and folders whose entries changed) are durable."""
        self._grouped.run(paths)

    def _sync(self, group: list[Request[Sequence[Path | str]]]) -> None:
        try:
            if SYNCFS is None or self._descriptor is None:
                for request in group:
                    for path in request.request:
                        fsync(path)
            elif SYNCFS(self._descriptor) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
        except OSError as error:
            for request in group:  # each caller raises its own
                request.error = OSError(error.errno, error.strerror)


class Delivery:
    def __init__(self, settings: DeliverySettings) -> None:
        self.directory = settings.directory
        self.mode = settings.mode
        self.token_file = settings.mode != "inline"
        self.exec_command = settings.exec_command or _this_syncd()
        self._folder_locks = [threading.Lock() for _ in range(FOLDER_LOCKS)]
        self._durable = Durable(self.directory)

    @functools.cached_property
    def _absolute(self) -> Path:
        """The directory as kubeconfigs name their token files: absolute, its symbolic links resolved."""
        return self.directory.resolve()

    @contextmanager
    def _changing(self, folder: Path) -> Iterator[None]:
        """Change `folder` alone: another cluster's action for the same person may create or remove it meanwhile."""
        with self._folder_locks[hash(folder) % FOLDER_LOCKS]:
            yield

    def folder(self, key: str) -> Path:
        """The person's folder. `key` is `person_key` of their id (label-safe: it cannot leave the directory)."""
        if not is_person_key(key):
            raise DeliveryError(f"{key!r} is not a person key")
        return self.directory / key

    def kubeconfig_path(self, key: str, cluster: str) -> Path:
        return self.folder(key) / f"{cluster}.kubeconfig"

    def token_path(self, key: str, cluster: str) -> Path:
        return self.folder(key) / f"{cluster}.token"

    def deliver(self, key: str, username: str, cluster: str, target: Endpoint, token: str,
                namespace: str | None) -> Path:
        """Write the token (to its own file when configured) and a kubeconfig that uses it."""
        try:
            with self._changing(self.folder(key)):
                return self._write(key, username, cluster, target, token, namespace)
        except OSError as error:
            raise DeliveryError(
                f"cannot deliver the kubeconfig of {username!r} for {cluster}: {error.strerror}"
            ) from None

    def _write(self, key: str, username: str, cluster: str, target: Endpoint, token: str,
               namespace: str | None) -> Path:
        token_path = self.token_path(key, cluster)
        named = self._absolute / key / token_path.name  # as the kubeconfig names it
        files: list[tuple[Path, str]] = []
        user: dict[str, object]
        if self.token_file:
            # Placed before the kubeconfig, and both synced once: a crash may leave either file old or missing,
            # each whole, and the intent still open; recovery keeps the token only if the token file holds it
            # (`Applier.recover`), so a kubeconfig that came through without its token file is delivered again.
            # The caller records the delivery only once both are durable.
            files.append((token_path, token))
        if self.mode == "token-file":
            user = {"tokenFile": str(named)}
        elif self.mode == "exec":
            user = {"exec": {
                "apiVersion": EXEC_API_VERSION,
                "command": self.exec_command,
                "args": ["credential", "--token-file", str(named)],
                "interactiveMode": "Never",
            }}
        else:
            user = {"token": token}
        path = self.kubeconfig_path(key, cluster)
        files.append((path, self.render(username, cluster, target, user, namespace)))
        self._write_files(files)
        return path

    def _write_files(self, files: list[tuple[Path, str]]) -> None:
        """Replace each file of one folder with its content, in order, durable on return: all staged and synced,
        then renamed into place, then the folder synced. A crash leaves each file old or new, whole."""
        folder = files[0][0].parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._durable.ready()
        staged: list[str] = []
        try:
            for path, content in files:
                staged.append(stage(path, content))
            self._durable.sync(staged)
            for temporary, (path, _) in zip(staged, files, strict=True):
                place(temporary, path)
        except BaseException:
            for temporary in staged:
                Path(temporary).unlink(missing_ok=True)  # those placed are gone already
            raise
        self._durable.sync([folder])

    def replace_token(self, key: str, username: str, cluster: str, target: Endpoint, token: str,
                      namespace: str | None) -> Path:
        """A refresh: with a token file only that file changes, and running clients pick it up."""
        path = self.kubeconfig_path(key, cluster)
        try:
            with self._changing(path.parent):
                if self.token_file and path.exists():
                    self._write_files([(self.token_path(key, cluster), token)])
                    return path
                return self._write(key, username, cluster, target, token, namespace)
        except OSError as error:
            raise DeliveryError(
                f"cannot replace the token of {username!r} for {cluster}: {error.strerror}"
            ) from None

    @staticmethod
    def read_token(kubeconfig: Path) -> str | None:
        """The token delivered with this kubeconfig (the token file beside it, else inline), None when there is
        none. Never logged. A file that exists but cannot be read is a DeliveryError."""
        try:
            beside = kubeconfig.with_suffix(".token")
            if beside.exists():
                return beside.read_text().strip() or None
            if not kubeconfig.exists():
                return None
            config = yaml.safe_load(kubeconfig.read_text())
            return config["users"][0]["user"].get("token")
        except (yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError):
            return None
        except OSError as error:
            raise DeliveryError(f"cannot read the token delivered with {kubeconfig}: {error.strerror}") from None

    def remove(self, kubeconfig: Path, fingerprints: Collection[str] | None) -> str | None:
        """Delete a delivered kubeconfig and its token file, and their folder once empty, but only when the token
        is one of `fingerprints` (None: the caller knows the files are the person's). Returns the token removed,
        None when nothing was (no files, or someone else's token)."""
        with self._changing(kubeconfig.parent):
            token = self.read_token(kubeconfig)
            if token is None and not kubeconfig.exists():
                return None
            if fingerprints is not None and (token is None or fingerprint(token) not in fingerprints):
                log.warning("keep delivered files whose token is not the one removed", kubeconfig=str(kubeconfig))
                return None
            names = (kubeconfig.name, kubeconfig.with_suffix(".token").name)
            folder = kubeconfig.parent
            try:
                for name in names:
                    (folder / name).unlink(missing_ok=True)
                staged = tuple(f".{name}." for name in names)  # by a process killed before it placed them
                if folder.is_dir():
                    others = False
                    for path in folder.iterdir():
                        if path.name.startswith(staged):
                            path.unlink(missing_ok=True)
                        else:
                            others = True
                    if not others:
                        folder.rmdir()
            except OSError as error:
                raise DeliveryError(f"cannot remove the delivered files {kubeconfig}: {error.strerror}") from None
            return token

    def find(self, user: str, cluster: str) -> Path:
        """The folder delivering `cluster` to `user`, a person id or the username its kubeconfig names. Refuses
        when none or several match."""
        by_id = self.folder(person_key(user))
        found = {by_id} if (by_id / f"{cluster}.kubeconfig").is_file() else set()
        for kubeconfig in self.directory.glob(f"*/{cluster}.kubeconfig"):
            try:
                names = [u.get("name") for u in yaml.safe_load(kubeconfig.read_text()).get("users") or []]
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if f"{user}@{cluster}" in names:
                found.add(kubeconfig.parent)
        if not found:
            raise DeliveryError(f"no kubeconfig for {user!r} on {cluster} in {self.directory}")
        if len(found) > 1:
            raise DeliveryError(f"{user!r} names several people's kubeconfigs for {cluster}: "
                                f"{', '.join(sorted(map(str, found)))}", hint="pass the person id or --token-file")
        return found.pop()

    @staticmethod
    def render(username: str, cluster: str, target: Endpoint, user: dict[str, object], namespace: str | None) -> str:
        context: dict[str, str] = {"cluster": cluster, "user": f"{username}@{cluster}"}
        if namespace:
            context["namespace"] = namespace
        return _cluster_part(cluster, target) + _dump({
            "users": [{"name": f"{username}@{cluster}", "user": user}],
            "contexts": [{"name": cluster, "context": context}],
            "current-context": cluster,
        })


def _dump(mapping: dict) -> str:
    """The YAML text of a kubeconfig's mapping, as `yaml.dump` writes it: its nodes are built directly (every value
    is a string, a list or a mapping), without the representer's per-object dispatch, at half the CPU."""
    return yaml.serialize(_node(mapping), Dumper=DUMPER, allow_unicode=True)


def _node(value: object) -> yaml.Node:
    if isinstance(value, dict):
        return yaml.MappingNode(MAP_TAG, [(yaml.ScalarNode(STR_TAG, key), _node(item)) for key, item in value.items()])
    if isinstance(value, list):
        return yaml.SequenceNode(SEQ_TAG, [_node(item) for item in value])
    if not isinstance(value, str):
        raise TypeError(f"a kubeconfig holds strings, not {type(value).__name__}")
    return yaml.ScalarNode(STR_TAG, value)


@functools.lru_cache(maxsize=64)
def _cluster_part(cluster: str, target: Endpoint) -> str:
    """The head of every kubeconfig for `cluster`, the same for everyone: rendered once, not once per person (the CA
    is most of a kubeconfig's text). Two block mappings' texts, one after the other, are the mapping of both."""
    entry: dict[str, str] = {"server": target.server}
    if target.ca_data:
        entry["certificate-authority-data"] = target.ca_data
    return _dump({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": cluster, "cluster": entry}]})
