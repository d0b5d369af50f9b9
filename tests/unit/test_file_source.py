"""The file source: CSV and LDIF exports; broken entries make the snapshot partial, never silently dropped."""

from pathlib import Path

import pytest

from syncd.adapters.file import FileSource
from syncd.config import FileSourceSettings
from syncd.errors import InputError, SourceUnavailable


def read(tmp_path, name, text, **settings):
    path = tmp_path / name
    path.write_text(text)
    return FileSource(FileSourceSettings(name="hr", path=path, **settings)).read()


def test_csv_rows_become_identities_with_groups_and_extra_attributes(tmp_path):
    snapshot = read(tmp_path, "p.csv", "id,username,email,groups,active,department\n"
                                       "1,alice,a@x,developers;sre,true,eng\n2,bob,b@x,,false,ops\n")
    alice, bob = snapshot.identities
    assert snapshot.complete
    assert alice.groups == {"developers", "sre"} and alice.attributes == {"department": "eng"}
    assert not bob.active and bob.groups == frozenset()


def test_broken_rows_are_skipped_and_mark_the_snapshot_partial(tmp_path):
    snapshot = read(tmp_path, "p.csv", "id,username,active\n1,alice,true\n,nobody,true\n3,carol,maybe\n1,dup,true\n")
    assert [i.username for i in snapshot.identities] == ["alice"]
    assert not snapshot.complete
    assert len(snapshot.problems) == 3
    assert "line 3: no id" in snapshot.problems[0]


def test_csv_without_the_id_column_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no column id"):
        read(tmp_path, "p.csv", "uid,username\n1,alice\n")


def test_missing_file_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable):
        FileSource(FileSourceSettings(name="hr", path=tmp_path / "nope.csv")).read()


def test_ldif_with_member_of_dns_and_base64_values(tmp_path):
    snapshot = read(
        tmp_path, "p.ldif",
        "dn: uid=alice,ou=people,dc=example,dc=org\nentryUUID: 6f1e-1\nuid: alice\ncn:: QWxpY2Ugw4FyY2hlcg==\n"
        "memberOf: cn=developers,ou=groups,dc=example,dc=org\nmemberOf: cn=sre,ou=groups,dc=example,dc=org\n\n",
        id_attribute="entryUUID", username_attribute="uid", display_name_attribute="cn",
        groups_attribute="memberOf",
    )
    (alice,) = snapshot.identities
    assert alice.id == "6f1e-1" and alice.display_name == "Alice Árcher"
    assert alice.groups == {"developers", "sre"}


def test_malformed_ldif_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not valid LDIF"):
        read(tmp_path, "p.ldif", "dn: uid=a\nnot a line\n\n")


EXPORT = Path(__file__).parent / "data" / "export.ldif"


def test_an_rfc_2849_export_reads_in_full(tmp_path):
    # `version: 1`, comments, folded lines, base64 DNs and values, a `changetype: add` record, escaped DNs.
    snapshot = FileSource(FileSourceSettings(
        name="hr", path=EXPORT, id_attribute="entryUUID", username_attribute="uid", display_name_attribute="cn",
        groups_attribute="memberOf")).read()
    assert snapshot.complete, snapshot.problems
    alice, juergen = snapshot.identities
    assert alice.id == "6f1e-0001" and alice.groups == {"dev,elopers", "s,re", "plat, form"}
    assert alice.attributes["description"] == ("a description long enough that the export tool folded it onto "
                                               "a second line")
    assert juergen.id == "6f1e-0002" and juergen.display_name == "Jürgen Ölschläger"
    assert juergen.groups == {"developers"}
    assert "jpegPhoto" not in juergen.attributes and "changetype" not in juergen.attributes


def test_ldif_change_records_are_no_export(tmp_path):
    with pytest.raises(InputError, match="changetype delete is a change"):
        read(tmp_path, "p.ldif", "version: 1\n\ndn: uid=a,dc=x\nchangetype: delete\n\n")
