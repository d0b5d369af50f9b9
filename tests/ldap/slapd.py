"""A throwaway OpenLDAP server: slapd.conf in a temp dir (no root config, no cn=config), mdb, memberof, ppolicy and
syncprov overlays, TLS with a CA generated here, loopback ports. Used by the tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "admin-secret"
BIND_DN = f"cn=syncd,ou=system,{SUFFIX}"
BIND_PASSWORD = "syncd-secret"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

CONF = """\
{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload ppolicy
moduleload syncprov
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {dir}/ca.crt
TLSCertificateFile {dir}/server.crt
TLSCertificateKeyFile {dir}/server.key
sizelimit {sizelimit}

database mdb
maxsize 1073741824
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {dir}/data
index objectClass,entryCSN,entryUUID,uid eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
overlay memberof
memberof-refint TRUE
overlay ppolicy
overlay syncprov
"""

BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=system,{SUFFIX}
objectClass: organizationalUnit
ou: system

dn: {BIND_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: syncd
userPassword: {BIND_PASSWORD}

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=leavers,{SUFFIX}
objectClass: organizationalUnit
ou: leavers

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups
"""



def make_tls(directory: Path, hostnames: tuple[str, ...] = ("localhost",)) -> None:
    """A CA and a server certificate it signs for `hostnames` (not for 127.0.0.1: tests connect to that address
    to see a hostname mismatch refused)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=syncd test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={hostnames[0]}")
    san = ",".join(f"DNS:{name}" for name in hostnames)
    (directory / "san.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    (directory / "server.key").chmod(0o600)


@dataclass
class Slapd:
    directory: Path
    port: int = 0
    tls_port: int = 0

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"ldaps://localhost:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def conf(self) -> Path:
        return self.directory / "slapd.conf"

    def configure(self, sizelimit: int | str = "unlimited") -> None:
        """Write slapd.conf, the TLS files and the empty database with the base entries (offline)."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        if not self.ca_file.exists():
            make_tls(self.directory)
        includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
        self.conf.write_text(CONF.format(includes=includes, dir=self.directory, suffix=SUFFIX, rootdn=ROOT_DN,
                                         rootpw=ROOT_PASSWORD, sizelimit=sizelimit))

    def slapadd(self, ldif: str | Path) -> None:
        """Load entries offline (fast; memberOf is not filled by offline adds)."""
        path = Path(ldif) if isinstance(ldif, Path) else self.directory / "slapadd.ldif"
        if not isinstance(ldif, Path):
            path.write_text(ldif)
        subprocess.run(["slapadd", "-q", "-f", str(self.conf), "-l", str(path)], check=True, capture_output=True,
                       timeout=600)

    def start(self, *, tls: bool = True) -> None:
        """Listen on both ports, or (not `tls`) on the plain one only: reachable by ldapmodify, not by syncd."""
        self.port, self.tls_port = self.port or free_port(), self.tls_port or free_port()
        urls = f"ldap://127.0.0.1:{self.port}/" + (f" ldaps://127.0.0.1:{self.tls_port}/" if tls else "")
        subprocess.run(["slapd", "-f", str(self.conf), "-h", urls], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"slapd did not listen on {self.port}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        pidfile = self.directory / "slapd.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def signal(self, signum: int) -> None:
        """SIGSTOP freezes the server (its sockets stay open, nothing answers); SIGCONT thaws it."""
        assert self.pid is not None
        os.kill(self.pid, signum)

    def stop(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def ldap(self, command: str, ldif: str, *, manage_dsa_it: bool = False) -> None:
        """ldapadd/ldapmodify/ldapdelete as the root DN, online (so the memberof overlay sees the change)."""
        extra = ["-M"] if manage_dsa_it else []
        done = subprocess.run([command, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *extra],
                              input=ldif, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed: {done.stderr}\n{ldif}")

    def add(self, ldif: str) -> None:
        self.ldap("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self.ldap("ldapmodify", ldif)

    def delete(self, *dns: str) -> None:
        self.ldap("ldapdelete", "\n".join(dns) + "\n")

    def search(self, base: str, filter_: str, *attributes: str) -> str:
        done = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD,
                               "-b", base, filter_, *attributes], capture_output=True, text=True, timeout=60,
                              check=True)
        return done.stdout
