"""The file source: a CSV or LDIF export, read in full on every run."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

from ldif import LDIFParser

from syncd.adapters.identity import group_name, parse_active
from syncd.config import FileSourceSettings
from syncd.core.model import Identity, Snapshot
from syncd.errors import InputError, SourceUnavailable


class FileSource:
    def __init__(self, settings: FileSourceSettings) -> None:
        self.settings = settings
        self.name = settings.name

    @property
    def format(self) -> str:
        if self.settings.format != "auto":
            return self.settings.format
        return "ldif" if self.settings.path.suffix.lower() == ".ldif" else "csv"

    def close(self) -> None:
        pass

    def read(self) -> Snapshot:
        path = self.settings.path
        try:
            data = path.read_bytes()
        except OSError as error:
            raise SourceUnavailable(f"source {self.name}: cannot read {path}: {error.strerror}") from None
        records = self._ldif_records(data) if self.format == "ldif" else self._csv_records(data)
        return self._snapshot(records)

    def _csv_records(self, data: bytes) -> list[tuple[str, Mapping[str, Sequence[str]]]]:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InputError(f"source {self.name}: {self.settings.path} is not UTF-8 ({error.reason})") from None
        reader = csv.DictReader(io.StringIO(text))
        required = {self.settings.id_attribute, self.settings.username_attribute}
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise InputError(
                f"source {self.name}: {self.settings.path} has no column {', '.join(sorted(missing))}",
                hint="set id_attribute/username_attribute to the export's column names",
            )
        records = []
        for row in reader:
            values = {
                key: ([g for g in (value or "").split(";") if g.strip()] if key == self.settings.groups_attribute
                      else [value or ""])
                for key, value in row.items() if key is not None
            }
            records.append((f"line {reader.line_num}", values))
        return records

    def _ldif_records(self, data: bytes) -> list[tuple[str, Mapping[str, Sequence[str]]]]:
        """RFC 2849 entries (comments, folded lines and base64 values are the parser's); `changetype: add`
        records are entries too. Other change records make no export of everyone: the file is refused."""
        records: list[tuple[str, Mapping[str, Sequence[str]]]] = []
        try:
            for dn, entry in LDIFParser(io.BytesIO(data), strict=True).parse():
                if dn is None:
                    # The parser yields `version: 1` on its own lines (as exports write it) as a record with no
                    # DN; in strict mode any other record without one is an error.
                    continue
                changetype = [str(v).lower() for key in list(entry) if key.lower() == "changetype"
                              for v in entry.pop(key)]
                if changetype not in ([], ["add"]):
                    raise InputError(f"source {self.name}: {self.settings.path}: dn {dn}: changetype "
                                     f"{', '.join(changetype)} is a change, not an entry",
                                     hint="export every entry (ldapsearch -LLL or the directory's export tool)")
                records.append((f"dn {dn}", entry))
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(f"source {self.name}: {self.settings.path} is not valid LDIF: {error}") from None
        return records

    def _snapshot(self, records: Iterable[tuple[str, Mapping[str, Sequence[str]]]]) -> Snapshot:
        s = self.settings
        identities: dict[str, Identity] = {}
        problems: list[str] = []
        mapped = {s.id_attribute, s.username_attribute, s.email_attribute, s.display_name_attribute,
                  s.groups_attribute, s.active_attribute}
        for where, record in records:
            lowered = {key.lower(): values for key, values in record.items()}

            def first(attribute: str, lowered: dict = lowered) -> str:
                values = lowered.get(attribute.lower()) or [""]
                return str(values[0]).strip()

            person_id, username = first(s.id_attribute), first(s.username_attribute)
            if not person_id or not username:
                absent = s.id_attribute if not person_id else s.username_attribute
                problems.append(f"{self.settings.path}: {where}: no {absent}")
                continue
            if person_id in identities:
                problems.append(f"{self.settings.path}: {where}: id {person_id!r} appears twice")
                continue
            try:
                active = parse_active(first(s.active_attribute))
            except ValueError as error:
                problems.append(f"{self.settings.path}: {where}: {s.active_attribute}: {error}")
                continue
            identities[person_id] = Identity(
                id=person_id,
                username=username,
                email=first(s.email_attribute),
                display_name=first(s.display_name_attribute),
                groups=frozenset(group_name(g) for g in lowered.get(s.groups_attribute.lower(), []) if g.strip()),
                active=active,
                # Binary values (base64 in LDIF that is no UTF-8, such as a jpegPhoto) are no attributes to match.
                attributes={key: str(values[0]) for key, values in record.items()
                            if key not in mapped and values and not isinstance(values[0], bytes)
                            and key.lower() != "dn"},
                origin=f"{self.settings.path} {where}",
            )
        return Snapshot(self.name, tuple(identities.values()), complete=not problems, problems=tuple(problems))
