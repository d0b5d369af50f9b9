"""The SCIM 2.0 endpoint identity providers push to (`create_app`), and what it reconciles."""

from syncd.scim.app import create_app, scim_provider

__all__ = ["create_app", "scim_provider"]
