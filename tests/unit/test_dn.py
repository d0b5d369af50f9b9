"""Distinguished names read as RFC 4514 says, and group names taken from them."""

import pytest

from syncd.adapters.dn import parse_dn
from syncd.adapters.identity import group_name


@pytest.mark.parametrize(("dn", "name"), [
    ("cn=developers,ou=groups,dc=example,dc=org", "developers"),
    (r"cn=dev\,elopers,ou=groups,dc=x", "dev,elopers"),
    (r"cn=dev\2Celopers,ou=groups,dc=x", "dev,elopers"),
    (r"cn=J\C3\BCrgen,ou=groups,dc=x", "Jürgen"),
    (r"cn=\#hash\+plus\;semi\<\>\=\"\\,ou=g", '#hash+plus;semi<>="\\'),
    ('cn="dev, elopers",ou=groups,dc=x', "dev, elopers"),
    ("cn=developers, ou=groups, dc=x", "developers"),
    ("uid=x+cn=developers,ou=groups", "developers"),
    ("CN=Domain Admins,CN=Users,DC=corp,DC=example", "Domain Admins"),
    (r"cn=\ padded\ ,ou=g", " padded "),
    ("developers", "developers"),
    ("cn=developers", "cn=developers"),  # one RDN: a plain name, as before
    ("a=b,c", "a=b,c"),
])
def test_group_names_from_dns(dn: str, name: str):
    assert group_name(dn) == name


def test_multi_valued_rdns_and_separators():
    assert parse_dn(r"cn=a\+b+uid=c, ou=x\,y") == [[("cn", "a+b"), ("uid", "c")], [("ou", "x,y")]]


@pytest.mark.parametrize("text", ["no equals here", "cn=a,", "cn=bad\\", 'cn="open,ou=x', "1x=a,ou=b", r"cn=\FF,ou=x"])
def test_what_is_no_dn(text: str):
    with pytest.raises(ValueError):
        parse_dn(text)
