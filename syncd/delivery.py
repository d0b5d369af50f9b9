"""Delivery: a kubeconfig per person per cluster, and beside it the token file it points to.

Layout: DIRECTORY/USERNAME/CLUSTER.kubeconfig and DIRECTORY/USERNAME/CLUSTER.token. Every file is written
atomically (temporary file, fsync, rename) with mode 0600, so kubectl or K9s never read half a token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

from syncd.config import DeliverySettings
from syncd.errors import PermanentError
from syncd.model import Endpoint

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._@+-]+$")
EXEC_API_VERSION = "client.authentication.k8s.io/v1"


def _this_syncd() -> str:
    beside_python = Path(sys.executable).parent / "syncd"
    return str(beside_python) if beside_python.exists() else (shutil.which("syncd") or "syncd")


def token_expiry(token: str) -> datetime | None:
    """The `exp` claim of a service account token (a JWT), read without verifying: only for display and
    ExecCredential's expirationTimestamp, never for trust."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError):
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


class DeliveryError(PermanentError):
    """A kubeconfig or token file could not be written."""


def write_secret_file(path: Path, content: str) -> None:
    """Atomically replace `path` with `content`, readable by its owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Delivery:
    def __init__(self, settings: DeliverySettings) -> None:
        self.directory = settings.directory
        self.mode = settings.mode
        self.token_file = settings.mode != "inline"
        self.exec_command = settings.exec_command or _this_syncd()

    def folder(self, username: str) -> Path:
        if not _SAFE_NAME.match(username) or username in (".", ".."):
            raise DeliveryError(
                f"username {username!r} cannot name a folder; it has characters outside A-Z a-z 0-9 ._@+-"
            )
        return self.directory / username

    def kubeconfig_path(self, username: str, cluster: str) -> Path:
        return self.folder(username) / f"{cluster}.kubeconfig"

    def token_path(self, username: str, cluster: str) -> Path:
        return self.folder(username) / f"{cluster}.token"

    def deliver(self, username: str, cluster: str, target: Endpoint, token: str, namespace: str | None) -> Path:
        """Write the token (to its own file when configured) and a kubeconfig that uses it."""
        try:
            user: dict[str, object]
            if self.token_file:
                write_secret_file(self.token_path(username, cluster), token)
            if self.mode == "token-file":
                user = {"tokenFile": str(self.token_path(username, cluster).resolve())}
            elif self.mode == "exec":
                user = {"exec": {
                    "apiVersion": EXEC_API_VERSION,
                    "command": self.exec_command,
                    "args": ["credential", "--token-file", str(self.token_path(username, cluster).resolve())],
                    "interactiveMode": "Never",
                }}
            else:
                user = {"token": token}
            path = self.kubeconfig_path(username, cluster)
            write_secret_file(path, self.render(username, cluster, target, user, namespace))
            return path
        except OSError as error:
            raise DeliveryError(
                f"cannot deliver the kubeconfig of {username} for {cluster}: {error.strerror}"
            ) from None

    def replace_token(self, username: str, cluster: str, target: Endpoint, token: str, namespace: str | None) -> Path:
        """A refresh: with a token file only that file changes, and running clients pick it up."""
        if self.token_file and self.kubeconfig_path(username, cluster).exists():
            try:
                write_secret_file(self.token_path(username, cluster), token)
            except OSError as error:
                raise DeliveryError(
                    f"cannot replace the token of {username} for {cluster}: {error.strerror}"
                ) from None
            return self.kubeconfig_path(username, cluster)
        return self.deliver(username, cluster, target, token, namespace)

    def read_token(self, username: str, cluster: str) -> str | None:
        """The delivered token, so a revocation can be confirmed by TokenReview. Never logged."""
        try:
            if self.token_file:
                return self.token_path(username, cluster).read_text().strip() or None
            config = yaml.safe_load(self.kubeconfig_path(username, cluster).read_text())
            return config["users"][0]["user"].get("token")
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
            return None

    def move(self, old_username: str, new_username: str, cluster: str, target: Endpoint, namespace: str | None
             ) -> Path | None:
        """A rename: the same token under the new name. None when there was nothing to move."""
        token = self.read_token(old_username, cluster)
        if token is None:
            return None
        path = self.deliver(new_username, cluster, target, token, namespace)
        self.remove(old_username, cluster)
        return path

    def remove(self, username: str, cluster: str) -> None:
        for path in (self.kubeconfig_path(username, cluster), self.token_path(username, cluster)):
            path.unlink(missing_ok=True)
        folder = self.folder(username)
        if folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def render(username: str, cluster: str, target: Endpoint, user: dict[str, object], namespace: str | None) -> str:
        cluster_entry: dict[str, str] = {"server": target.server}
        if target.ca_data:
            cluster_entry["certificate-authority-data"] = target.ca_data
        context: dict[str, str] = {"cluster": cluster, "user": f"{username}@{cluster}"}
        if namespace:
            context["namespace"] = namespace
        return yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": cluster_entry}],
            "users": [{"name": f"{username}@{cluster}", "user": user}],
            "contexts": [{"name": cluster, "context": context}],
            "current-context": cluster,
        }, sort_keys=False)
