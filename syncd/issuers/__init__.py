"""Issuers create, change and remove credentials in the systems people log in to. Today: Kubernetes."""
