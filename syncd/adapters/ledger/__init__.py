"""The ledger: what syncd knows about people and credentials, and an append-only, hash-chained log of changes.
A `Database` opens it; the `Journal` is the one path that writes it, the `ReadModel` reads it."""

from syncd.adapters.ledger.database import Database
from syncd.adapters.ledger.journal import Journal
from syncd.adapters.ledger.lease import LedgerLeaderLease
from syncd.adapters.ledger.read_model import ReadModel
from syncd.adapters.ledger.scim import ScimRecord, ScimResource, ScimStore

__all__ = ["Database", "Journal", "LedgerLeaderLease", "ReadModel", "ScimRecord", "ScimResource", "ScimStore"]
