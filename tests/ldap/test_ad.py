"""Active Directory parsing on entries recorded from AD (no AD server runs here): objectGUID bytes, the
userAccountControl disable bit, range retrieval of large groups, and mapping a whole user entry."""

from __future__ import annotations

import pytest

from syncd.adapters.ldap import LdapSource, ad
from syncd.adapters.ldap.client import Entry, escape
from syncd.config import LdapSourceSettings

# objectGUID as AD returns it (little-endian first three fields) and as AD tools print it.
RECORDED_GUID = bytes.fromhex("e004253f894fd3119a0c0305e82c3301")
RECORDED_GUID_TEXT = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

AD_USER = Entry(
    "CN=Alice Archer,OU=Staff,DC=corp,DC=example",
    {
        "objectguid": [RECORDED_GUID],
        "samaccountname": [b"aarcher"],
        "mail": [b"alice.archer@corp.example"],
        "displayname": [b"Alice Archer"],
        "department": [b"Platform"],
        "useraccountcontrol": [b"66050"],  # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD | ACCOUNTDISABLE
        "memberof": [b"CN=Developers,OU=Groups,DC=corp,DC=example", b"CN=VPN Users,OU=Groups,DC=corp,DC=example"],
        "usnchanged": [b"1209934"],  # the source's incremental attribute, as every AD entry carries it
    },
)


def ad_source() -> LdapSource:
    return LdapSource(LdapSourceSettings.model_validate({
        "type": "ldap", "name": "corp", "servers": ["ldaps://dc1.corp.example"], "bind_dn": "CN=syncd,DC=corp",
        "password_env": "UNUSED", "people_base": "DC=corp,DC=example", "group_base": "OU=Groups,DC=corp,DC=example",
        "attributes": {"id": "objectGUID", "username": "sAMAccountName", "display_name": "displayName",
                       "extra": ["department"]},
        "disabled": {"ad_user_account_control": True}, "incremental": {"attribute": "uSNChanged"},
    }))


def test_object_guid_bytes_become_the_guid_ad_shows():
    assert ad.object_guid(RECORDED_GUID) == RECORDED_GUID_TEXT
    with pytest.raises(ValueError, match="16 bytes"):
        ad.object_guid(b"\x01\x02")


@pytest.mark.parametrize(("uac", "disabled"), [
    (b"512", False),     # NORMAL_ACCOUNT
    (b"514", True),      # NORMAL_ACCOUNT | ACCOUNTDISABLE
    (b"66048", False),   # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
    (b"66050", True),
    (b"544", False),     # NORMAL_ACCOUNT | PASSWD_NOTREQD
    (b"4260352", False),  # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD | DONT_REQ_PREAUTH
    ("546", True),
])
def test_user_account_control_bit_2_means_disabled(uac, disabled):
    assert ad.account_disabled(uac) is disabled


def test_range_retrieval_walks_the_ranges_ad_returns():
    first = {"cn": [b"All Staff"], "member;range=0-1499": [f"CN=u{i}".encode() for i in range(1500)]}
    values, following = ad.ranged(first, "member")
    assert len(values) == 1500 and following == "member;range=1500-*"
    middle = {"member;range=1500-2999": [b"CN=u1500"] * 1500}
    assert ad.ranged(middle, "member")[1] == "member;range=3000-*"
    last = {"member;range=3000-*": [b"CN=u3000", b"CN=u3001"]}
    assert ad.ranged(last, "member") == ([b"CN=u3000", b"CN=u3001"], None)
    assert ad.ranged({"member": [b"CN=a"]}, "member") == ([b"CN=a"], None)
    assert ad.ranged({"cn": [b"Empty"]}, "member") == ([], None)


def test_a_recorded_ad_user_maps_to_a_disabled_identity():
    snapshot = ad_source().map_entries([AD_USER])
    (alice,) = snapshot.identities
    assert alice.id == RECORDED_GUID_TEXT and alice.username == "aarcher"
    assert alice.display_name == "Alice Archer" and alice.email == "alice.archer@corp.example"
    assert alice.groups == {"Developers", "VPN Users"} and alice.attributes == {"department": "Platform"}
    assert alice.active is False
    enabled = Entry(AD_USER.dn, AD_USER.attributes | {"useraccountcontrol": [b"512"]})
    assert ad_source().map_entries([enabled]).identities[0].active is True


def test_a_broken_object_guid_is_a_problem_not_a_crash():
    broken = Entry(AD_USER.dn, AD_USER.attributes | {"objectguid": [b"short"]})
    snapshot = ad_source().map_entries([broken, Entry("CN=Bob,DC=corp", {"samaccountname": [b"bob"]})])
    assert not snapshot.complete and len(snapshot.problems) == 2


def test_filter_values_are_escaped():
    assert escape("a*(b)\\c\x00") == "a\\2a\\28b\\29\\5cc\\00"
    assert ad.in_chain_filter(escape("CN=R&D (EU),OU=Groups,DC=corp")) == (
        "(memberOf:1.2.840.113556.1.4.1941:=CN=R&D \\28EU\\29,OU=Groups,DC=corp)")
