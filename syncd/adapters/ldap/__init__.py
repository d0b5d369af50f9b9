"""The LDAP source: OpenLDAP, 389-ds and Active Directory through ldap3 (imported by `client` alone)."""

from syncd.adapters.ldap.directory import LdapSource

__all__ = ["LdapSource"]
