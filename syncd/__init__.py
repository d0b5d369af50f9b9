"""syncd: people from a directory become Kubernetes credentials that follow them through join, move and leave."""

__version__ = "0.1.0"
