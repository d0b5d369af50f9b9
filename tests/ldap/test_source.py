"""The LDAP source against a real slapd: TLS, failover, paged reads, membership, disabled accounts, polls, and
every way a read can fail without passing for a complete one."""

from __future__ import annotations

import pytest

from syncd.errors import ConfigError, SourceRejected, SourceUnavailable
from tests.ldap.conftest import Directory, start_slapd
from tests.ldap.slapd import BIND_PASSWORD, Slapd, free_port


def by_name(snapshot) -> dict:
    return {identity.username: identity for identity in snapshot.identities}


def test_reads_people_with_ids_groups_and_extra_attributes_over_ldaps(directory: Directory):
    alice = directory.person("alice", departmentNumber="platform")
    directory.person("bob")
    directory.group("developers", alice)
    source = directory.source(attributes={"extra": ["departmentNumber"]})
    snapshot = source.read()
    people = by_name(snapshot)
    assert snapshot.complete and set(people) == {"alice", "bob"}
    assert people["alice"].id == directory.entry_uuid(alice)
    assert people["alice"].email == "alice@example.org" and people["alice"].display_name == "Alice"
    assert people["alice"].groups == {"developers"} and people["bob"].groups == set()
    assert people["alice"].attributes == {"departmentNumber": "platform"}
    assert source.client.server_url.startswith("ldaps://")


@pytest.mark.parametrize("source", ["memberOf", "group"])
def test_nested_groups_are_resolved_both_from_memberof_and_from_group_members(directory: Directory, source: str):
    alice, bob = directory.person("alice"), directory.person("bob")
    directory.group("developers", alice)
    directory.group("engineering", directory.group_dn("developers"), bob)
    directory.group("everyone", directory.group_dn("engineering"))
    people = by_name(directory.source(membership={"source": source}).read())
    assert people["alice"].groups == {"developers", "engineering", "everyone"}
    assert people["bob"].groups == {"engineering", "everyone"}
    flat = by_name(directory.source(membership={"source": source, "nested": "none"}).read())
    assert flat["alice"].groups == {"developers"}


def test_unique_member_and_member_uid_groups(directory: Directory):
    alice = directory.person("alice")
    directory.person("bob")
    directory.group("auditors", alice, kind="groupOfUniqueNames")
    directory.group("unix", "bob", kind="posixGroup")
    unique = by_name(directory.source(membership={"source": "group", "member_attribute": "uniqueMember"}).read())
    assert unique["alice"].groups == {"auditors"} and unique["bob"].groups == set()
    uid = by_name(directory.source(membership={"source": "group", "member_attribute": "memberUid"}).read())
    assert uid["bob"].groups == {"unix"} and uid["alice"].groups == set()


def test_starttls_and_the_certificate_checks(directory: Directory):
    directory.person("alice")
    port = directory.server.port
    assert directory.source(servers=[f"ldap://localhost:{port}"], tls="starttls").read().identities
    # The certificate names localhost, not 127.0.0.1: refused unless the hostname check is turned off.
    ip_url = f"ldaps://127.0.0.1:{directory.server.tls_port}"
    with pytest.raises(SourceUnavailable, match="no directory server could be reached"):
        directory.source(servers=[ip_url]).read()
    assert directory.source(servers=[ip_url], verify_hostname=False).read().identities
    # A CA that did not sign the server's certificate is refused.
    with pytest.raises(SourceUnavailable):
        directory.source(ca_file="/etc/ssl/certs/ca-certificates.crt").read()


def test_fails_over_to_the_next_server_and_retries_with_backoff(directory: Directory):
    directory.person("alice")
    dead = f"ldaps://localhost:{free_port()}"
    source = directory.source(servers=[dead, directory.server.tls_url])
    assert by_name(source.read())["alice"]
    assert source.client.server_url == directory.server.tls_url
    with pytest.raises(SourceUnavailable, match="no directory server"):
        directory.source(servers=[dead], retries=1, backoff=1).read()


def test_a_wrong_password_is_a_clear_error_and_never_shown(directory: Directory, tmp_path, monkeypatch):
    password_file = tmp_path / "bind.password"
    password_file.write_text(BIND_PASSWORD + "\n")
    assert directory.source(password_env=None, password_file=str(password_file)).read() is not None
    monkeypatch.setenv("SYNCD_TEST_LDAP_PASSWORD", "not-the-password")
    with pytest.raises(SourceRejected, match="refused the bind") as refused:
        directory.source().read()
    assert "not-the-password" not in str(refused.value)
    monkeypatch.delenv("SYNCD_TEST_LDAP_PASSWORD")
    with pytest.raises(ConfigError, match="SYNCD_TEST_LDAP_PASSWORD is not set"):
        directory.source().read()


def test_disabled_accounts_from_ppolicy_lock_and_from_a_filter(directory: Directory):
    alice = directory.person("alice")
    directory.person("bob", employeeType="left")
    directory.person("carol")
    directory.lock(alice)
    people = by_name(directory.source(disabled={"ppolicy_locked": True, "filter": "(employeeType=left)"}).read())
    assert (people["alice"].active, people["bob"].active, people["carol"].active) == (False, False, True)


def test_a_broken_entry_makes_the_snapshot_partial(directory: Directory):
    directory.person("alice")
    directory.person("nomail")
    snapshot = directory.source(attributes={"username": "mail", "id": "entryUUID"}).read()
    assert snapshot.complete
    snapshot = directory.source(attributes={"username": "employeeNumber"}).read()
    assert not snapshot.complete and not snapshot.identities
    assert any("no employeeNumber" in problem for problem in snapshot.problems)


def test_a_referral_aborts_the_read(directory: Directory):
    directory.person("alice")
    directory.server.ldap("ldapadd", f"dn: ou=elsewhere,{directory.base}\nobjectClass: referral\n"
                          "objectClass: extensibleObject\nou: elsewhere\nref: ldap://ldap.example.net/ou=x\n",
                          manage_dsa_it=True)
    with pytest.raises(SourceUnavailable, match="referrals are not followed"):
        directory.source().read()


def test_a_size_limit_that_cuts_the_read_short_aborts_it(tmp_path):
    server = start_slapd(tmp_path / "slapd", sizelimit=3)
    try:
        directory = Directory(server, "limited").create()
        for index in range(5):
            directory.person(f"user{index}")
        with pytest.raises(SourceUnavailable, match="cut short: sizeLimitExceeded"):
            directory.source().read()
    finally:
        server.stop()


def test_slapd_stopping_in_the_middle_of_a_paged_read_aborts_it(own_slapd: Slapd):
    directory = Directory(own_slapd, "midrun").create()
    for index in range(6):
        directory.person(f"user{index}")
    source = directory.source(page_size=1)
    pages = source.client.search(directory.base, "(objectClass=inetOrgPerson)", ["uid"])
    assert next(pages).dn
    own_slapd.stop()
    with pytest.raises(SourceUnavailable, match="failed"):
        list(pages)
    with pytest.raises(SourceUnavailable, match="no directory server could be reached"):
        source.read()


def test_poll_returns_changed_people_and_members_a_group_gained_or_lost(directory: Directory):
    alice, bob = directory.person("alice"), directory.person("bob")
    carol = directory.person("carol")
    directory.group("developers", alice, carol)
    directory.group("sre", "cn=nobody")
    directory.group("platform", directory.group_dn("sre"))
    # entryCSN is exact to the microsecond, so a poll returns exactly what changed (modifyTimestamp: to the second).
    source = directory.source(incremental={"attribute": "entryCSN"})
    assert len(source.read().identities) == 3
    assert source.poll().identities == ()
    directory.join("developers", bob)
    directory.leave("developers", carol)
    changed = by_name(source.poll())
    assert set(changed) == {"bob", "carol"}
    assert changed["bob"].groups == {"developers"} and changed["carol"].groups == set()
    directory.change(alice, "replace", "mail", "alice@example.net")
    assert [(i.username, i.email) for i in source.poll().identities] == [("alice", "alice@example.net")]
    directory.join("sre", alice)
    assert by_name(source.poll())["alice"].groups == {"developers", "sre", "platform"}
    directory.lock(alice)
    assert by_name(source.poll())["alice"].active is False
    directory.join("platform", directory.group_dn("developers"))  # a nested group change reaches its members
    assert {i.username: i.groups for i in source.poll().identities} == {
        "alice": {"developers", "sre", "platform"}, "bob": {"developers", "platform"}}


def test_member_uid_values_are_escaped_when_a_poll_looks_people_up(directory: Directory):
    directory.person("alice")
    directory.person("bob")
    directory.group("decoy", kind="posixGroup")
    source = directory.source(membership={"source": "group", "member_attribute": "memberUid"},
                              incremental={"attribute": "entryCSN"})
    assert len(source.read().identities) == 2
    directory.group("unix", "*", "alice)(uid=bob", kind="posixGroup")
    # Unescaped, `*` would match everyone and `alice)(uid=bob` would smuggle in a second clause.
    assert source.poll().identities == ()
    directory.change(directory.group_dn("unix"), "add", "memberUid", "bob")
    assert [(i.username, i.groups) for i in source.poll().identities] == [("bob", {"unix"})]
