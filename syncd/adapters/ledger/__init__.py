"""The ledger: what syncd knows about people and credentials, and an append-only, hash-chained log of changes."""

from syncd.adapters.ledger.scim import ScimResource, ScimStore
from syncd.adapters.ledger.store import Event, Ledger

__all__ = ["Event", "Ledger", "ScimResource", "ScimStore"]
