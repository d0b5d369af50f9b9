"""The watch of an Active Directory source by DirSync (1.2.840.113556.1.4.841): AD offers neither content sync nor
persistent search, so every `interval` the watch asks for the objects changed since its cookie (the control's
value is ldap3's). A deleted object comes back with isDeleted, under CN=Deleted Objects, keeping its objectGUID.
The cookie is kept in the ledger like content sync's, under the stream name `dirsync`."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping

import structlog

from syncd.adapters.ldap.client import Entry, LdapClient
from syncd.adapters.ldap.directory import LdapSource
from syncd.adapters.ldap.watch import Batch, affects

log = structlog.get_logger("syncd.sources.ldap")

STREAM = "dirsync"
ATTRIBUTES = ("objectGUID", "objectClass", "isDeleted")


def naming_context(dn: str) -> str:
    """The domain a DN lies in (its DC= components): DirSync searches only from the root of a naming context."""
    parts = [part.strip() for part in dn.split(",")]
    return ",".join(part for part in parts if part.lower().startswith("dc="))


def _under(dn: str, base: str) -> bool:
    dn, base = dn.lower().replace(" ", ""), base.lower().replace(" ", "")
    return dn == base or dn.endswith("," + base)


class DirSyncWatch:
    """What changed in the domain since the cookie, as the same batches `Watch` gives: people to read, or a full
    read. The first DirSync (no cookie) lists every object: it asks for a full read instead."""

    def __init__(self, source: LdapSource, cookies: Mapping[str, bytes | None], known: Callable[[], Collection[str]],
                 interval: float) -> None:
        self.source = source
        self.client = LdapClient(source.settings)  # a connection of its own: the runs read through the source's
        self.known = known
        self.interval = interval
        self.cookie = cookies.get(STREAM)
        self.resumed = self.cookie is not None
        self.resyncing = False
        self.last_heard: float | None = None
        self._due = 0.0
        s = source.settings
        self._base = naming_context(s.people_base)
        self._attributes = list(dict.fromkeys([*ATTRIBUTES, s.attributes.id]))

    def open(self) -> None:
        self._due = 0.0

    def close(self) -> None:
        self.client.close()

    def next_batch(self, timeout: float) -> Batch | None:
        """The changes since the last DirSync, asked for once `interval` passed (waiting at most `timeout`)."""
        wait = self._due - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            if wait > timeout:
                return None
        self._due = time.monotonic() + self.interval
        first, batch, more = self.cookie is None, Batch(), True
        while more:
            entries, more, cookie = self.client.dirsync(self._base, "(objectClass=*)", self._attributes,
                                                               self.cookie)
            self.last_heard = time.monotonic()
            if not first:
                for entry in entries:
                    self._changed(entry, batch)
            if cookie:
                self.cookie = cookie
        if first:
            log.info("read the directory in full: a first DirSync lists every object", source=self.source.name)
            batch.full_read = True
        if batch:  # a DirSync that found nothing moves the cookie, not worth a ledger write
            batch.cookies[STREAM] = self.cookie
        return batch or None

    def _changed(self, entry: Entry, batch: Batch) -> None:
        s = self.source.settings
        classes = {value.decode("utf-8", "replace").lower() for value in entry.attributes.get("objectclass", [])}
        if entry.text("isDeleted").upper() == "TRUE":
            self._deleted(entry, classes, batch)
        elif _under(entry.dn, s.group_base) and (not _under(entry.dn, s.people_base) or "group" in classes):
            # DirSync sends the changed attributes only: read the whole group, then its affected members.
            group = next(self.client.search(entry.dn, s.group_filter, self.source._group_attributes(),
                                                   scope="base", paged=False), None)
            if group is not None:
                affects(self.source, self.source.group_changed(group), batch, f"group {entry.dn} changed")
        elif _under(entry.dn, s.people_base) and "group" not in classes:
            try:
                batch.people.add(self.source.person_id(entry))
            except ValueError:
                log.warning("skip a changed entry without an id", source=self.source.name, dn=entry.dn)

    def _deleted(self, entry: Entry, classes: set[str], batch: Batch) -> None:
        try:
            person = self.source.person_id(entry)
        except ValueError:
            person = None
        if person is not None and person in set(self.known()):
            batch.people.add(person)
        elif "group" in classes or not classes:
            log.warning("read the directory in full: a deleted object may be a group", source=self.source.name,
                        dn=entry.dn)
            batch.full_read = True
