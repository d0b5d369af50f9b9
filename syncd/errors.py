"""syncd's own errors. Each carries its exit code, its HTTP status and whether retrying can help.

Adapters turn the exceptions of their client library into these; `syncd.app.cli.main` alone maps them to exit codes.
Messages never contain a secret.
"""

from __future__ import annotations

import os


class SyncdError(Exception):
    """Base of every error syncd reports on purpose."""

    exit_code: int = os.EX_SOFTWARE
    http_status: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TemporaryError(SyncdError):
    """Something outside syncd is down or busy; the same call may succeed later."""

    exit_code = os.EX_TEMPFAIL
    http_status = 503
    retryable = True


class PermanentError(SyncdError):
    """Retrying the same call cannot help until someone changes something."""


class ConfigError(PermanentError):
    """The configuration or policy is invalid."""

    exit_code = os.EX_CONFIG
    http_status = 500


class InputError(PermanentError):
    """Data read from a source or a request is malformed."""

    exit_code = os.EX_DATAERR
    http_status = 400


class SourceUnavailable(TemporaryError):
    """A source could not be read completely; nothing may be revoked from what it returned."""

    exit_code = os.EX_UNAVAILABLE


class SourceRejected(PermanentError):
    """A source refused syncd (bad credentials, no permission, an invalid filter): fix the configuration."""

    exit_code = os.EX_NOPERM
    http_status = 502


class ClusterUnavailable(TemporaryError):
    """A Kubernetes API server could not be reached or answered 5xx/429."""

    exit_code = os.EX_UNAVAILABLE


class ClusterRejected(PermanentError):
    """A Kubernetes API server refused a request (authorisation, validation). The Kubernetes adapter raises the
    subclass saying what happened (kopf-style); this class itself for any other 4xx."""

    exit_code = os.EX_NOPERM
    http_status = 502


class Unauthorized(ClusterRejected):
    """401: the API server does not accept syncd's credentials."""


class Forbidden(ClusterRejected):
    """403: syncd's credentials may not do this."""


class NotFound(ClusterRejected):
    """404: the object (or its namespace) does not exist."""


class Conflict(ClusterRejected):
    """409: the object already exists, or changed meanwhile."""


class Invalid(ClusterRejected):
    """422: the API server refused the object as invalid."""


class DeliveryError(PermanentError):
    """A kubeconfig or token file could not be written or read."""


class LedgerError(TemporaryError):
    """The ledger database could not be read or written."""


class LeaseLost(TemporaryError):
    """This process no longer holds the apply lock (its lock connection died, or another process took the lease
    over): the run stops before its next write, its unfinished work left for the next holder to recover."""


class LedgerSchemaUnknown(PermanentError):
    """The ledger's schema was migrated by a newer syncd."""

    exit_code = os.EX_CONFIG


class LedgerSchemaOutdated(LedgerError):
    """A read-only command found the ledger's schema older than this syncd's: `syncd ledger upgrade` (or any command
    that writes) migrates it. Exit 75: it goes away once a writing syncd has opened the ledger."""


class LedgerMissing(PermanentError):
    """A read-only command found no ledger at `ledger.url`: nothing has written one yet, or the URL is wrong."""

    exit_code = os.EX_CONFIG


class LedgerTampered(PermanentError):
    """The ledger's hash chain is broken."""

    exit_code = os.EX_DATAERR


class ActionError(PermanentError):
    """An action failed with an exception syncd did not turn into one of its own: that action fails, the run goes on."""

    @classmethod
    def of(cls, error: Exception) -> ActionError:
        # Our adapters keep secrets out of what they raise; the text is cut short all the same.
        return cls(f"{error.__class__.__name__}: {str(error)[:300]}")


class UnsafePlan(PermanentError):
    """The plan would revoke more than the configured threshold; a human must allow it."""

    exit_code = 4
    http_status = 409


class ApplyFailed(SyncdError):
    """Some actions of a plan failed; the others were applied and recorded."""

    exit_code = 3

    def __init__(self, message: str, *, failed: int, retryable: bool) -> None:
        super().__init__(message)
        self.failed = failed
        self.retryable = retryable


class ChangesPending(SyncdError):
    """`--check` found work to do."""

    exit_code = 1


class StaleVersion(PermanentError):
    """A write expected a version of a stored record that is no longer the stored one (someone wrote it meanwhile)."""

    http_status = 412


class ValueTaken(PermanentError):
    """A write would give a record a value another record already holds where values are unique."""

    http_status = 409
