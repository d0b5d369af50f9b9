"""A real slapd for the LDAP tests, and a per-test corner of it (its own OU) so tests stay independent."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.adapters.ldap import LdapSource
from syncd.config import LdapSourceSettings
from tests.integration.conftest import World, world  # noqa: F401  (the World harness, reused here)
from tests.ldap.slapd import BASE_LDIF, BIND_DN, BIND_PASSWORD, SUFFIX, Slapd


def start_slapd(directory: Path, sizelimit: int | str = "unlimited") -> Slapd:
    if shutil.which("slapd") is None:
        pytest.fail("slapd is not installed; run scripts/setup (it installs the slapd package)")
    server = Slapd(directory)
    server.configure(sizelimit)
    server.slapadd(BASE_LDIF)
    server.start()
    return server


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A server of this test's own, for tests that stop it."""
    server = start_slapd(tmp_path / "slapd")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Directory:
    """People and groups under `ou=<test>,dc=example,dc=org` on a running slapd, changed online through the
    overlays (memberOf, ppolicy) exactly as an administrator would."""

    server: Slapd
    ou: str

    @property
    def base(self) -> str:
        return f"ou={self.ou},{SUFFIX}"

    def dn(self, uid: str, unit: str = "people") -> str:
        return f"uid={uid},ou={unit},{self.base}"

    def group_dn(self, name: str) -> str:
        return f"cn={name},ou=groups,{self.base}"

    def create(self) -> Directory:
        self.server.add("".join(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {ou}\n\n" for dn, ou in (
            (self.base, self.ou), (f"ou=people,{self.base}", "people"), (f"ou=contractors,{self.base}", "contractors"),
            (f"ou=groups,{self.base}", "groups"))))
        return self

    def person(self, uid: str, *, unit: str = "people", mail: str | None = None, **extra: str) -> str:
        lines = [f"dn: {self.dn(uid, unit)}", "objectClass: inetOrgPerson", f"uid: {uid}", f"cn: {uid.title()}",
                 f"sn: {uid}", f"mail: {mail or uid + '@example.org'}"]
        lines += [f"{key}: {value}" for key, value in extra.items()]
        self.server.add("\n".join(lines) + "\n")
        return self.dn(uid, unit)

    def group(self, name: str, *members: str, kind: str = "groupOfNames") -> str:
        attribute = {"groupOfNames": "member", "groupOfUniqueNames": "uniqueMember", "posixGroup": "memberUid"}[kind]
        lines = [f"dn: {self.group_dn(name)}", f"objectClass: {kind}", f"cn: {name}"]
        if kind == "posixGroup":
            lines.append(f"gidNumber: {abs(hash(name)) % 60000}")
        lines += [f"{attribute}: {member}" for member in members]
        self.server.add("\n".join(lines) + "\n")
        return self.group_dn(name)

    def change(self, dn: str, operation: str, attribute: str, *values: str) -> None:
        body = "".join(f"{attribute}: {value}\n" for value in values)
        self.server.modify(f"dn: {dn}\nchangetype: modify\n{operation}: {attribute}\n{body}")

    def join(self, group: str, member_dn: str) -> None:
        self.change(self.group_dn(group), "add", "member", member_dn)

    def leave(self, group: str, member_dn: str) -> None:
        self.change(self.group_dn(group), "delete", "member", member_dn)

    def move(self, uid: str, new_uid: str, unit: str, old_unit: str = "people") -> None:
        """Rename and move in one modrdn, as HR tools do; the entryUUID stays."""
        self.server.modify(f"dn: {self.dn(uid, old_unit)}\nchangetype: modrdn\nnewrdn: uid={new_uid}\n"
                           f"deleteoldrdn: 1\nnewsuperior: ou={unit},{self.base}\n")

    def lock(self, dn: str) -> None:
        """OpenLDAP ppolicy: an administrative lock."""
        self.change(dn, "replace", "pwdAccountLockedTime", "000001010000Z")

    def entry_uuid(self, dn: str) -> str:
        found = self.server.search(dn, "(objectClass=*)", "entryUUID")
        return next(line.split(": ", 1)[1] for line in found.splitlines() if line.startswith("entryUUID: "))

    def source_settings(self, **overrides) -> dict:
        """The syncd.yaml `sources` entry for this corner of the directory (LDAPS, real CA, hostname checked)."""
        return {
            "name": "directory", "type": "ldap", "servers": [self.server.tls_url], "tls": "ldaps",
            "ca_file": str(self.server.ca_file), "bind_dn": BIND_DN, "password_env": "SYNCD_TEST_LDAP_PASSWORD",
            "people_base": self.base, "group_base": f"ou=groups,{self.base}", "page_size": 2, "retries": 0,
            "connect_timeout": "3s", "timeout": "10s", "disabled": {"ppolicy_locked": True},
        } | overrides

    def source(self, **overrides) -> LdapSource:
        return LdapSource(LdapSourceSettings.model_validate(self.source_settings(**overrides)))


@pytest.fixture(autouse=True)
def _bind_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_TEST_LDAP_PASSWORD", BIND_PASSWORD)


@pytest.fixture
def directory(slapd: Slapd) -> Directory:
    return Directory(slapd, f"t{uuid.uuid4().hex[:8]}").create()


@pytest.fixture
def ldap_world(world: World, directory: Directory, syncd_env: dict[str, str]) -> World:  # noqa: F811
    """The World harness with its people coming from `directory` instead of a CSV file."""
    world.env["SYNCD_TEST_LDAP_PASSWORD"] = BIND_PASSWORD
    world.configure(sources=[directory.source_settings()])
    return world
