"""Directory entries -> `Identity`: attribute map, group membership (memberOf or group members, nested groups),
disabled accounts, and the watermark an incremental poll starts from."""

from __future__ import annotations

import gc
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import structlog

from syncd.adapters.identity import group_name
from syncd.adapters.ldap import ad, psearch, syncrepl
from syncd.adapters.ldap.client import DIRSYNC, NO_ATTRIBUTES, Entry, LdapClient, escape, first_text
from syncd.config import LdapSourceSettings
from syncd.core.model import Identity, Snapshot

log = structlog.get_logger("syncd.sources.ldap")

MEMBER_CHUNK = 50  # usernames per (|(uid=..)..) filter when a poll looks people up by name


def dn_key(dn: str) -> str:
    """Compare DNs the way the directory does for our purposes: case and spaces after separators ignored."""
    key = dn.lower()
    return ",".join(part.strip() for part in key.split(",")) if " " in key else key


@contextmanager
def gc_paused() -> Iterator[None]:
    """A read allocates hundreds of thousands of objects that all stay alive; Python's cycle collector would scan
    them again and again (a third of a large read's time) and find nothing to free."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Groups:
    """The groups read last: names, direct members (DN keys, or lower-case usernames for memberUid) and nesting."""

    names: dict[str, str] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    nested: bool = True
    uuids: dict[str, str] = field(default_factory=dict)  # entryUUID -> key, for changes that name only the UUID
    _member_of: dict[str, set[str]] | None = None
    _parents: dict[str, set[str]] | None = None
    _closure: dict[str, frozenset[str]] = field(default_factory=dict)
    _effective: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)

    def put(self, key: str, name: str, members: set[str]) -> None:
        self.names[key], self.members[key] = name, members
        self._member_of, self._parents, self._closure, self._effective = None, None, {}, {}

    def drop(self, key: str) -> None:
        self.names.pop(key, None)
        self.members.pop(key, None)
        self._member_of, self._parents, self._closure, self._effective = None, None, {}, {}

    def affected(self, before: Mapping[str, set[str]]) -> set[str]:
        """The member keys whose groups changed when these groups (key -> members before) took their members now:
        members gained or lost, and everyone under a nested group gained or lost."""
        affected: set[str] = set()
        for key, members in before.items():
            affected |= members ^ self.members.get(key, set())
        return affected | self.descendants(key for key in affected if key in self.members)

    def member_of(self) -> dict[str, set[str]]:
        """Member key -> groups that list it directly."""
        if self._member_of is None:
            self._member_of = self._index(lambda member: True)
        return self._member_of

    def parents(self) -> dict[str, set[str]]:
        """Group key -> groups that list it directly (the nesting alone: small even when groups are large)."""
        if self._parents is None:
            self._parents = self._index(self.members.__contains__)
        return self._parents

    def _index(self, wanted) -> dict[str, set[str]]:
        index: dict[str, set[str]] = {}
        for group, members in self.members.items():
            for member in members:
                if wanted(member):
                    index.setdefault(member, set()).add(group)
        return index

    def ancestors(self, group: str) -> frozenset[str]:
        """The group and every group that contains it, through any depth of nesting (cycles are fine)."""
        cached = self._closure.get(group)
        if cached is not None:
            return cached
        seen, todo = {group}, [group]
        index = self.parents()
        while todo and self.nested:
            for parent in index.get(todo.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        self._closure[group] = result = frozenset(seen)
        return result

    def descendants(self, groups: Iterable[str]) -> set[str]:
        """Every member key under these groups, through nested groups."""
        found: set[str] = set()
        todo = list(groups)
        while todo:
            for member in self.members.get(todo.pop(), ()):
                if member not in found:
                    found.add(member)
                    if member in self.members and self.nested:
                        todo.append(member)
        return found

    def effective(self, direct: Mapping[str, str]) -> frozenset[str]:
        """Names of the groups (DN key -> DN as written) and of every group they are nested in. People with the
        same groups share one set."""
        cache_key = tuple(direct)
        cached = self._effective.get(cache_key)
        if cached is None:
            keys: set[str] = set()
            for group in direct:
                keys |= self.ancestors(group)
            cached = frozenset(self.names.get(key) or group_name(direct.get(key) or key) for key in keys)
            self._effective[cache_key] = cached
        return cached


class Watermark:
    """The highest change mark seen (modifyTimestamp and entryCSN sort as text, uSNChanged as a number)."""

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self.highest: str | None = None

    def add(self, mark: str) -> None:
        if not mark or (self.numeric and not mark.isdigit()):
            return
        if self.highest is None or (int(mark) > int(self.highest) if self.numeric else mark > self.highest):
            self.highest = mark


@dataclass(frozen=True)
class _AttributeNames:
    """The attribute map in lower case (entries' attribute names are), worked out once per source."""

    id: str
    username: str
    email: str
    display_name: str
    extra: tuple[tuple[str, str], ...]  # (name as configured, lower case)
    groups_from_member_of: bool

    @classmethod
    def of(cls, settings: LdapSourceSettings) -> _AttributeNames:
        a, m = settings.attributes, settings.membership
        return cls(a.id.lower(), a.username.lower(), a.email.lower(), a.display_name.lower(),
                   tuple((name, name.lower()) for name in a.extra),
                   m.source == "memberOf" and m.nested != "in_chain")


class LdapSource:
    def __init__(self, settings: LdapSourceSettings) -> None:
        self.settings = settings
        self._names = _AttributeNames.of(settings)
        self.name = settings.name
        self.client = LdapClient(settings)
        self.lock = threading.RLock()  # reads, polls and a watch's group changes take turns on `groups`
        self.groups: Groups | None = None
        self.population: int | None = None  # people the last full read found
        self.watermark: str | None = None
        self._disabled_dns: set[str] = set()

    def close(self) -> None:
        self.client.close()

    # What to ask for.

    @property
    def _by_uid(self) -> bool:
        return self.settings.membership.member_attribute == "memberUid"

    def _people_attributes(self) -> list[str]:
        s = self.settings
        names = [s.attributes.id, s.attributes.username, s.attributes.email, s.attributes.display_name,
                 *s.attributes.extra, s.incremental.attribute]
        if s.membership.source == "memberOf":
            names.append("memberOf")
        if s.disabled.ad_user_account_control:
            names.append("userAccountControl")
        if s.disabled.ns_account_lock:
            names.append("nsAccountLock")
        if s.disabled.ppolicy_locked:
            names.append("pwdAccountLockedTime")
        return list(dict.fromkeys(names))

    def _marks(self) -> Watermark:
        return Watermark(self.settings.incremental.attribute == "uSNChanged")

    def _changed_since(self, base_filter: str) -> str:
        attribute, mark = self.settings.incremental.attribute, self.watermark
        if attribute == "uSNChanged":
            mark = str(int(mark or "0") + 1)
        return f"(&{base_filter}({attribute}>={escape(mark or '0')}))"

    # Reads.

    def read(self) -> Snapshot:
        with self.lock, gc_paused():
            return self._read()

    def poll(self) -> Snapshot:
        """People changed since the last read or poll, and the members a changed group gained or lost."""
        with self.lock, gc_paused():
            return self._poll()

    def read_people(self, ids: Collection[str]) -> Snapshot:
        """Only these people (by id), mapped with the groups read last (read now if none were): a watch's
        targeted run. Someone missing from the answer is gone from the directory."""
        s = self.settings
        with self.lock:
            if self.groups is None:
                self.groups = self._read_groups(s.group_filter, Groups(nested=s.membership.nested == "client"),
                                                self._marks())
            self._disabled_dns = self._read_disabled()
            wanted = sorted(ids)
            entries: list[Entry] = []
            for start in range(0, len(wanted), MEMBER_CHUNK):
                any_of = "".join(f"({s.attributes.id}={self._id_value(i)})" for i in wanted[start:start + MEMBER_CHUNK])
                entries += self.client.search(s.people_base, f"(&{s.people_filter}(|{any_of}))",
                                              self._people_attributes())
            snapshot = self._snapshot(entries, self._marks())
            if self.population is None:
                self.population = sum(1 for _ in self.client.search(s.people_base, s.people_filter, [NO_ATTRIBUTES]))
            return replace(snapshot, population=self.population)

    def _id_value(self, person_id: str) -> str:
        """A person id as a filter value: objectGUID is compared as its 16 bytes."""
        if self._names.id == "objectguid":
            return "".join(f"\\{byte:02x}" for byte in ad.guid_bytes(person_id))
        return escape(person_id)

    def people_ids(self, keys: set[str]) -> set[str]:
        """The ids of the people behind these member keys (DN keys, or usernames for memberUid groups): a targeted
        read of the members a group change affects."""
        with self.lock:
            people = keys - set(self.groups.names) if self.groups else keys
            ids = set()
            for entry in self._people_by_key(people).values():
                try:
                    ids.add(self.person_id(entry))
                except ValueError:
                    continue
            return ids

    def group_changed(self, entry: Entry) -> set[str] | None:
        """A group added or changed (a watch saw it): the member keys whose groups this alters; None before the
        groups were first read (the full read that comes will see it)."""
        with self.lock:
            if self.groups is None:
                return None
            key = dn_key(entry.dn)
            before = {key: set(self.groups.members.get(key, ()))}
            old = self.groups.uuids.get(entry.text("entryuuid"))
            if old is not None and old != key:  # renamed: its old name is gone
                before[old] = set(self.groups.members.get(old, ()))
                self.groups.drop(old)
            self._put_group(self.groups, entry, self._marks())
            return self.groups.affected(before)

    def group_deleted(self, entry_uuid: str) -> set[str] | None:
        """A group deleted (a watch saw its entryUUID): the member keys it alters; None when no group read has that
        entryUUID (the change cannot be attributed)."""
        with self.lock:
            key = self.groups.uuids.pop(entry_uuid, None) if self.groups else None
            if key is None or self.groups is None:
                return None
            before = {key: set(self.groups.members.get(key, ()))}
            affected = self.groups.descendants([key])
            self.groups.drop(key)
            return affected | self.groups.affected(before)

    def is_group(self, entry_uuid: str) -> bool:
        with self.lock:
            return self.groups is not None and entry_uuid in self.groups.uuids

    def _read(self) -> Snapshot:
        s = self.settings
        marks = self._marks()
        self.groups = self._read_groups(s.group_filter, Groups(nested=s.membership.nested == "client"), marks)
        self._disabled_dns = self._read_disabled()
        people = self.client.search(s.people_base, s.people_filter, self._people_attributes())
        snapshot = self._snapshot(people, marks)
        self.population = len(snapshot.identities) + len(snapshot.problems)
        self._advance(marks)
        log.info("read the directory", source=self.name, server=self.client.server_url,
                 people=len(snapshot.identities), groups=len(self.groups.names), problems=len(snapshot.problems))
        return snapshot

    def _poll(self) -> Snapshot:
        if self.groups is None or self.watermark is None:
            return self._read()
        s = self.settings
        marks = self._marks()
        before = {key: set(members) for key, members in self.groups.members.items()}
        changed_groups = set()
        for entry in self.client.search(s.group_base, self._changed_since(s.group_filter), self._group_attributes()):
            changed_groups.add(self._put_group(self.groups, entry, marks))
        # Members a changed group gained or lost, and everyone in a group it did.
        affected = self.groups.affected({key: before.get(key, set()) for key in changed_groups})
        self._disabled_dns = self._read_disabled()
        entries = {dn_key(e.dn): e for e in self.client.search(
            s.people_base, self._changed_since(s.people_filter), self._people_attributes())}
        entries.update(self._people_by_key(affected - set(entries) - set(self.groups.names)))
        snapshot = self._snapshot(entries.values(), marks)
        self._advance(marks)
        if snapshot.identities:
            log.info("poll the directory for changes", source=self.name, people=len(snapshot.identities),
                     changed_groups=len(changed_groups))
        return snapshot

    def watch_mode(self) -> str:
        """The watch the server's root DSE `supportedControl` allows: syncrepl (content sync, OpenLDAP), psearch
        (persistent search, 389-ds and others), dirsync (Active Directory), or poll."""
        controls = self.client.supported_controls()
        if syncrepl.SYNC_REQUEST in controls:
            return "syncrepl"
        if psearch.PERSISTENT_SEARCH in controls:
            return "psearch"
        return "dirsync" if DIRSYNC in controls else "poll"

    def check(self) -> dict:
        """For `syncd source test`: bind, count people and groups, map one person. One read: every person entry
        becomes an identity or a problem, every group entry a group."""
        snapshot = self.read()
        assert self.groups is not None
        return {"server": self.client.server_url, "bind_dn": self.settings.bind_dn,
                "people": len(snapshot.identities) + len(snapshot.problems), "groups": len(self.groups.names),
                "sample": snapshot.identities[0] if snapshot.identities else None,
                "watch": self.watch_mode(),
                "problems": list(snapshot.problems[:5])}

    # Groups.

    def _group_attributes(self) -> list[str]:
        m = self.settings.membership
        return list(dict.fromkeys([m.group_name_attribute, m.member_attribute, self.settings.incremental.attribute,
                                   "entryUUID"]))

    def _put_group(self, groups: Groups, entry: Entry, marks: Watermark) -> str:
        m = self.settings.membership
        key = dn_key(entry.dn)
        if m.nested == "in_chain":
            found = self.client.search(self.settings.people_base,
                                       f"(&{self.settings.people_filter}{ad.in_chain_filter(escape(entry.dn))})",
                                       [NO_ATTRIBUTES])
            members = {dn_key(person.dn) for person in found}
        else:
            values = self.client.ranged_values(entry, m.member_attribute)
            members = {(v.decode("utf-8", "replace").strip().lower() if self._by_uid
                        else dn_key(v.decode("utf-8", "replace"))) for v in values}
        groups.put(key, entry.text(m.group_name_attribute) or group_name(entry.dn), members)
        if entry.text("entryuuid"):
            groups.uuids[entry.text("entryuuid")] = key
        mark = entry.text(self.settings.incremental.attribute)
        if mark:
            marks.add(mark)
        return key

    def _read_groups(self, filter_: str, groups: Groups, marks: Watermark) -> Groups:
        for entry in self.client.search(self.settings.group_base, filter_, self._group_attributes()):
            self._put_group(groups, entry, marks)
        return groups

    def _read_disabled(self) -> set[str]:
        custom = self.settings.disabled.filter
        if not custom:
            return set()
        filter_ = f"(&{self.settings.people_filter}{custom if custom.startswith('(') else f'({custom})'})"
        return {dn_key(e.dn) for e in self.client.search(self.settings.people_base, filter_, [NO_ATTRIBUTES])}

    def _people_by_key(self, keys: set[str]) -> dict[str, Entry]:
        """Look up people a group change affected: by DN, or by username for memberUid groups."""
        s, found = self.settings, {}
        if self._by_uid:
            names = sorted(keys)
            for start in range(0, len(names), MEMBER_CHUNK):
                any_of = "".join(f"({s.attributes.username}={escape(n)})" for n in names[start:start + MEMBER_CHUNK])
                for entry in self.client.search(s.people_base, f"(&{s.people_filter}(|{any_of}))",
                                                self._people_attributes()):
                    found[dn_key(entry.dn)] = entry
            return found
        for key in sorted(keys):
            for entry in self.client.search(key, s.people_filter, self._people_attributes(), scope="base",
                                            paged=False):
                found[dn_key(entry.dn)] = entry
        return found

    # Mapping.

    def map_entries(self, entries: Iterable[Entry]) -> Snapshot:
        """Map entries read elsewhere (a recorded export, say) with the groups read last, if any."""
        if self.groups is None:
            self.groups = Groups(nested=self.settings.membership.nested == "client")
        return self._snapshot(entries, self._marks())

    def _snapshot(self, entries: Iterable[Entry], marks: Watermark) -> Snapshot:
        identities: dict[str, Identity] = {}
        problems: list[str] = []
        for entry in entries:
            try:
                identity = self._identity(entry)
            except ValueError as error:
                problems.append(f"{entry.dn}: {error}")
                continue
            if identity.id in identities:
                problems.append(f"{entry.dn}: id {identity.id!r} appears twice")
                continue
            identities[identity.id] = identity
            mark = entry.text(self.settings.incremental.attribute)
            if mark:
                marks.add(mark)
        return Snapshot(self.name, tuple(identities.values()), complete=not problems, problems=tuple(problems))

    def _identity(self, entry: Entry) -> Identity:
        a, values = self._names, entry.attributes
        raw_id, username = values.get(a.id), first_text(values.get(a.username))
        if not raw_id:
            raise ValueError(f"no {self.settings.attributes.id}")
        if not username:
            raise ValueError(f"no {self.settings.attributes.username}")
        person_id = self.person_id(entry)
        key = dn_key(entry.dn)
        assert self.groups is not None
        if a.groups_from_member_of:
            direct = {dn_key(dn): dn for dn in (v.decode("utf-8", "replace") for v in values.get("memberof", ()))}
        else:
            direct = dict.fromkeys(self.groups.member_of().get(username.lower() if self._by_uid else key, ()), "")
        return Identity(
            id=person_id,
            username=username,
            email=first_text(values.get(a.email)),
            display_name=first_text(values.get(a.display_name)),
            groups=self.groups.effective(direct),
            active=not self._disabled(entry, key),
            attributes={name: first_text(values[lower]) for name, lower in a.extra if lower in values},
            origin=f"dn {entry.dn}",
        )

    def person_id(self, entry: Entry) -> str:
        raw_id = entry.attributes.get(self._names.id)
        if not raw_id:
            raise ValueError(f"no {self.settings.attributes.id}")
        return ad.object_guid(raw_id[0]) if self._names.id == "objectguid" else raw_id[0].decode("utf-8").strip()

    def _disabled(self, entry: Entry, key: str) -> bool:
        d = self.settings.disabled
        if key in self._disabled_dns:
            return True
        if d.ad_user_account_control:
            value = entry.first("userAccountControl")
            if value is not None and ad.account_disabled(value):
                return True
        if d.ns_account_lock and entry.text("nsAccountLock").lower() == "true":
            return True
        return d.ppolicy_locked and entry.first("pwdAccountLockedTime") is not None

    def _advance(self, marks: Watermark) -> None:
        marks.add(self.watermark or "")
        self.watermark = marks.highest or self.watermark
