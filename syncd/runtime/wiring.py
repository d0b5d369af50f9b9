"""Wiring: the one place that builds the real adapters from configuration."""

from __future__ import annotations

from syncd.adapters.ledger import Database
from syncd.config import FileSourceSettings, LdapSourceSettings, ScimSourceSettings, SourceSettings
from syncd.errors import ConfigError
from syncd.ports import Source


def reads_ledger(settings: SourceSettings) -> bool:
    """A SCIM push source finds what identity providers pushed in the ledger database."""
    return isinstance(settings, ScimSourceSettings) and settings.mode == "push"


def open_source(settings: SourceSettings, ledger: Database | None = None) -> Source:
    """`ledger` is needed by sources that `reads_ledger`."""
    if isinstance(settings, FileSourceSettings):
        from syncd.adapters.file import FileSource

        return FileSource(settings)
    if isinstance(settings, LdapSourceSettings):
        from syncd.adapters.ldap import LdapSource

        return LdapSource(settings)
    if isinstance(settings, ScimSourceSettings):
        from syncd.adapters.scim_pull import ScimPullSource
        from syncd.scim.source import ScimPushSource

        if not reads_ledger(settings):
            return ScimPullSource(settings)
        if ledger is None:
            raise ConfigError(f"source {settings.name}: a scim push source reads the ledger, and none is open")
        return ScimPushSource(settings, ledger)
    raise ConfigError(f"source {settings.name}: no source of type {settings.type}")
