"""Watch an LDAP source for changes as they happen: RFC 4533 content synchronisation (`refreshAndPersist`) against
OpenLDAP's syncprov, on the people base and the group base. Each change becomes the ids of the people whose access it
can alter, for a targeted run; a change that cannot be attributed safely asks for a full read instead of a guess."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import structlog

from syncd.adapters.ldap import psearch, syncrepl
from syncd.adapters.ldap.client import Entry, Message, Stream
from syncd.adapters.ldap.directory import LdapSource
from syncd.adapters.ldap.syncrepl import State
from syncd.errors import SourceUnavailable

log = structlog.get_logger("syncd.sources.ldap")

KINDS = ("people", "groups")


@dataclass
class Batch:
    """What the messages read at once ask for: a targeted run of `people` (ids), or a full read; and the cookies to
    keep once that run is done."""

    people: set[str] = field(default_factory=set)
    full_read: bool = False
    cookies: dict[str, bytes | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.people or self.full_read or self.cookies)


def affects(source: LdapSource, keys: set[str] | None, batch: Batch, what: str) -> None:
    """Read the members a group change affects (never guess them); a change the groups read last cannot place asks
    for a full read."""
    if keys is None:
        log.warning("read the directory in full: a group change cannot be attributed", source=source.name,
                    change=what)
        batch.full_read = True
    elif keys:
        batch.people |= source.people_ids(keys)


@dataclass
class _Search:
    kind: str
    cookie: bytes | None
    message_id: int = 0
    refreshing: bool = True
    resumed: bool = False  # started from a cookie: its refresh carries changes, not the whole content
    present: set[str] = field(default_factory=set)


class Watch:
    """One stream per source: content sync (`mode` syncrepl) or persistent search (psearch). `cookies` (kind ->
    cookie) are where the last content sync stopped; `known()` gives the ids of the people the ledger holds for the
    source (to find who a present phase left out). A persistent search has no cookie: once its searches run, it
    asks for one full read, which covers what changed while none ran."""

    def __init__(self, source: LdapSource, cookies: Mapping[str, bytes | None],
                 known: Callable[[], Collection[str]], mode: str = "syncrepl") -> None:
        self.source = source
        self.known = known
        self.mode = mode
        self._catch_up = False
        self.searches = {kind: _Search(kind, cookies.get(kind)) for kind in KINDS}
        self.stream: Stream | None = None
        self._by_id: dict[int, _Search] = {}
        self._by_uuid = source.settings.attributes.id.lower() == "entryuuid"

    @property
    def resumed(self) -> bool:
        """Started from where a previous watch stopped."""
        return any(search.cookie for search in self.searches.values())

    @property
    def last_heard(self) -> float | None:
        """time.monotonic() when the server last sent anything (a keepalive's answer too)."""
        return None if self.stream is None else self.stream.last_heard

    @property
    def resyncing(self) -> bool:
        return any(search.refreshing for search in self.searches.values())

    def open(self) -> None:
        self.stream = self.source.client.stream()
        for search in self.searches.values():
            self._start(search)
        self._catch_up = self.mode == "psearch"

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def _start(self, search: _Search) -> None:
        assert self.stream is not None
        s = self.source.settings
        base, filter_, attributes = ((s.people_base, s.people_filter, [s.attributes.id]) if search.kind == "people"
                                     else (s.group_base, s.group_filter, self.source._group_attributes()))
        if self.mode == "psearch":
            search.refreshing, search.resumed = False, True
            control = (psearch.PERSISTENT_SEARCH, True, psearch.request())
        else:
            search.refreshing, search.resumed, search.present = True, search.cookie is not None, set()
            control = (syncrepl.SYNC_REQUEST, True, syncrepl.sync_request(search.cookie))
        search.message_id = self.stream.search(base, filter_, attributes, [control])
        self._by_id[search.message_id] = search

    def next_batch(self, timeout: float) -> Batch | None:
        """The changes that arrived within `timeout` seconds and everything queued behind them, once no refresh is
        half done; None when nothing came. A lost connection raises `SourceUnavailable`."""
        assert self.stream is not None
        batch, wait, took = Batch(full_read=self._catch_up), timeout, False
        self._catch_up = False
        while True:
            message = self.stream.next(wait)
            if message is None:
                if self.resyncing and took:
                    wait, took = timeout, False  # a refresh is read whole before anything is acted on
                    continue
                return batch or None
            self._take(message, batch)
            wait, took = 0.0, True

    def _take(self, message: Message, batch: Batch) -> None:
        search = self._by_id.get(message.search)
        if search is None:
            return
        if message.kind == "entry" and self.mode == "psearch":
            raw = message.controls.get(psearch.ENTRY_CHANGE)
            if raw is not None:
                self._notified(search, psearch.entry_change(raw), Entry(message.dn, message.attributes), batch)
        elif message.kind == "entry":
            raw = message.controls.get(syncrepl.SYNC_STATE)
            if raw is None:
                return
            state = syncrepl.sync_state(raw)
            self._entry(search, state, Entry(message.dn, message.attributes), batch)
            self._cookie(search, state.cookie, batch)
        elif message.kind == "intermediate" and message.name == syncrepl.SYNC_INFO and message.value:
            self._info(search, syncrepl.sync_info(message.value), batch)
        elif message.kind == "done":
            self._done(search, message, batch)

    def _cookie(self, search: _Search, cookie: bytes | None, batch: Batch) -> None:
        if cookie:
            search.cookie = batch.cookies[search.kind] = cookie

    def _entry(self, search: _Search, state: syncrepl.SyncState, entry: Entry, batch: Batch) -> None:
        search.present.add(state.entry_uuid)
        if state.state is State.PRESENT or (search.refreshing and not search.resumed):
            return  # the whole content of a first refresh: the full read that ends it covers it
        if state.state is State.DELETE:
            self._deleted(search, state.entry_uuid, batch)
        else:
            self._changed(search, entry, batch, state.entry_uuid)

    def _notified(self, search: _Search, change: psearch.EntryChange, entry: Entry, batch: Batch) -> None:
        """A persistent search's entry: the entry as it is (or was, when deleted), whatever the change."""
        if change.change is psearch.Change.DELETE and search.kind == "groups":
            affects(self.source, self.source.group_deleted(entry.text("entryuuid")), batch, f"group {entry.dn} deleted")
        else:
            self._changed(search, entry, batch)  # a deleted person's entry still names them

    def _changed(self, search: _Search, entry: Entry, batch: Batch, entry_uuid: str | None = None) -> None:
        if search.kind == "people":
            try:
                batch.people.add(entry_uuid if entry_uuid and self._by_uuid else self.source.person_id(entry))
            except ValueError:
                log.warning("skip a changed entry without an id", source=self.source.name, dn=entry.dn)
        else:
            affects(self.source, self.source.group_changed(entry), batch, f"group {entry.dn} changed")

    def _deleted(self, search: _Search, entry_uuid: str, batch: Batch) -> None:
        if search.kind == "groups":
            affects(self.source, self.source.group_deleted(entry_uuid), batch, f"group {entry_uuid} deleted")
        elif self._by_uuid:
            batch.people.add(entry_uuid)
        else:
            log.warning("read the directory in full: a deleted entry names no person id", source=self.source.name,
                        entry_uuid=entry_uuid)
            batch.full_read = True

    def _info(self, search: _Search, info: syncrepl.SyncInfo, batch: Batch) -> None:
        if info.kind == "syncIdSet":
            for entry_uuid in info.uuids:
                if info.refresh_deletes:
                    if search.resumed or not search.refreshing:
                        self._deleted(search, entry_uuid, batch)
                else:
                    search.present.add(entry_uuid)
        elif info.kind in ("refreshDelete", "refreshPresent") and info.refresh_done:
            self._refreshed(search, present_phase=info.kind == "refreshPresent", batch=batch)
        self._cookie(search, info.cookie, batch)

    def _refreshed(self, search: _Search, present_phase: bool, batch: Batch) -> None:
        """The end of a refresh: a first one asks for a full read; a present phase deletes what it left out."""
        search.refreshing = False
        if not search.resumed:
            batch.full_read = True
        elif present_phase:
            if search.kind == "groups":
                known = set(self.source.groups.uuids) if self.source.groups else set()
            elif self._by_uuid:
                known = set(self.known())
            else:
                batch.full_read = True
                known = set()
            for entry_uuid in known - search.present:
                self._deleted(search, entry_uuid, batch)
        search.present = set()
        log.info("finish a refresh of the directory's changes", source=self.source.name, base=search.kind,
                 resumed=search.resumed, present_phase=present_phase)

    def _done(self, search: _Search, message: Message, batch: Batch) -> None:
        if message.result == syncrepl.REFRESH_REQUIRED:
            log.warning("read the directory in full: the server no longer knows our cookie", source=self.source.name,
                        base=search.kind)
            search.cookie, batch.cookies[search.kind] = None, None
            batch.full_read = True
            self._start(search)
            return
        done = syncrepl.sync_done(message.controls.get(syncrepl.SYNC_DONE))
        self._cookie(search, done.cookie, batch)
        raise SourceUnavailable(f"source {self.source.name}: the server ended the watch of {search.kind} "
                                f"({message.description or message.result})")
