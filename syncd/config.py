"""syncd's settings: one typed, documented group per concern, loaded from YAML. Unknown keys are errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from syncd.core.policy import Policy
from syncd.core.settings import Duration, SafetySettings, Strict, SweepSettings, TokenSettings
from syncd.errors import ConfigError


class LedgerSettings(Strict):
    url: str = Field(
        "sqlite:///syncd-ledger.db",
        description="SQLAlchemy URL of the ledger. A relative SQLite path is relative to the config file.",
    )


class FileSourceSettings(Strict):
    type: Literal["file"] = "file"
    name: str = Field(description="Name of this source in the ledger and the logs.")
    path: Path = Field(description="CSV or LDIF export. Relative paths are relative to the config file.")
    format: Literal["auto", "csv", "ldif"] = Field("auto", description="`auto` picks by the file's extension.")
    id_attribute: str = Field("id", description="Column/attribute holding the stable id (LDIF: e.g. entryUUID).")
    username_attribute: str = Field("username", description="Column/attribute holding the login name.")
    email_attribute: str = Field("email", description="Column/attribute holding the email address.")
    display_name_attribute: str = Field("display_name", description="Column/attribute holding the full name.")
    groups_attribute: str = Field(
        "groups", description="CSV: column of `;`-separated groups. LDIF: multi-valued attribute such as memberOf."
    )
    active_attribute: str = Field(
        "active", description="Column/attribute whose value says whether the account is enabled (true/false)."
    )


class LdapAttributeMap(Strict):
    id: str = Field("entryUUID", description="Stable id that survives renames and moves (AD: objectGUID).")
    username: str = Field("uid", description="Login name (AD: sAMAccountName).")
    email: str = Field("mail", description="Email address.")
    display_name: str = Field("cn", description="Full name (AD: displayName).")
    extra: list[str] = Field([], description="Further attributes handed to policy rules (first value of each).")


class LdapMembership(Strict):
    source: Literal["memberOf", "group"] = Field(
        "memberOf", description="memberOf: a person's groups come from their memberOf attribute. group: from the "
        "groups' member_attribute.")
    member_attribute: Literal["member", "uniqueMember", "memberUid"] = Field(
        "member", description="Group attribute listing members (DNs; memberUid lists usernames). Also used to "
        "find the people a changed group affects between full reads.")
    group_name_attribute: str = Field("cn", description="Attribute giving a group's name as policy sees it.")
    nested: Literal["none", "client", "in_chain"] = Field(
        "client", description="Nested groups: none; client (resolved from the groups read); in_chain (Active "
        "Directory's LDAP_MATCHING_RULE_IN_CHAIN, one query per group).")


class LdapDisabled(Strict):
    """Which signals mark an account disabled (its person is revoked). Any that applies wins."""

    ad_user_account_control: bool = Field(False, description="Active Directory userAccountControl bit 2.")
    ns_account_lock: bool = Field(False, description="389-ds nsAccountLock: true.")
    ppolicy_locked: bool = Field(False, description="OpenLDAP ppolicy pwdAccountLockedTime present.")
    filter: str | None = Field(None, description="An LDAP filter matching disabled people, e.g. (employeeType=left).")


class LdapIncremental(Strict):
    attribute: Literal["modifyTimestamp", "entryCSN", "uSNChanged"] = Field(
        "modifyTimestamp", description="Attribute whose value grows with every change; polls ask for newer ones.")
    poll_interval: Duration = Field(timedelta(minutes=1), description="How often the daemon polls for changes.")
    full_interval: Duration = Field(
        timedelta(hours=1), description="How often the daemon reads everything (deletions show up only then).")


class LdapWatch(Strict):
    """`syncd run` watching the directory for changes as they happen, each applied by a targeted run within
    seconds. The scheduled full reconcile stays the safety net."""

    mode: Literal["auto", "syncrepl", "psearch", "dirsync", "poll"] = Field(
        "poll", description="auto: RFC 4533 content sync when the root DSE offers it (OpenLDAP syncprov), else "
        "persistent search when offered (389-ds and others), else DirSync (Active Directory), else poll; syncrepl: "
        "content sync; psearch: persistent search (no cookie: a full read after each (re)connect); dirsync: AD's "
        "changes since a cookie, asked for every `interval`; poll: no watch, only the scheduled polls.")
    interval: Duration = Field(timedelta(seconds=2), description="How often a DirSync watch asks for changes.")
    gather_quiet: Duration = Field(
        timedelta(milliseconds=300), description="After a change, wait until the directory has been quiet this long "
        "and apply everything gathered as one targeted run, so that the safety thresholds see a burst (an OU "
        "deleted) whole and hold it whole rather than after its first dozen revocations.")
    gather_max_delay: Duration = Field(
        timedelta(seconds=1), description="Longest wait after the first change gathered: changes that keep coming "
        "are applied this often at most (a leaver's latency bound under constant change).")
    backoff: Duration = Field(timedelta(seconds=1), description="Wait before reconnecting a lost watch; doubles.")
    max_backoff: Duration = Field(timedelta(seconds=30), description="Longest wait between reconnections.")
    keepalive: Duration = Field(
        timedelta(seconds=30), description="After this much silence the watch checks the server answers (a bind and "
        "a root DSE read on a connection of its own; the stream has TCP keepalives too); no answer within the "
        "source's `timeout` reconnects (a hung server).")


class LdapSourceSettings(Strict):
    type: Literal["ldap"]
    name: str = Field(description="Name of this source in the ledger and the logs.")
    servers: list[str] = Field(min_length=1, description="ldap:// or ldaps:// URLs, tried in order (failover).")
    tls: Literal["ldaps", "starttls", "none"] = Field(
        "ldaps", description="ldaps, starttls, or none (plain text; for tests only, must be set explicitly).")
    ca_file: Path | None = Field(None, description="PEM CA bundle that signed the servers' certificates "
                                                   "(default: the system's).")
    verify_hostname: bool = Field(True, description="Check the server certificate names the host connected to.")
    bind_dn: str = Field(description="DN syncd binds as (simple bind; needs read access only).")
    password_file: Path | None = Field(None, description="File holding the bind password (one line).")
    password_env: str | None = Field(None, description="Environment variable holding the bind password.")
    connect_timeout: Duration = Field(timedelta(seconds=5), description="Timeout to open a connection.")
    timeout: Duration = Field(timedelta(seconds=60), description="Timeout for each answer from the server.")
    retries: int = Field(2, ge=0, description="Extra rounds over all servers when none could be reached.")
    backoff: Duration = Field(timedelta(seconds=1), description="Wait before the first retry; doubles each round.")
    people_base: str = Field(description="Base DN of the people search (subtree).")
    people_filter: str = Field("(objectClass=inetOrgPerson)", description="Filter selecting people.")
    group_base: str = Field(description="Base DN of the group search (subtree).")
    group_filter: str = Field("(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)"
                              "(objectClass=posixGroup))", description="Filter selecting groups.")
    page_size: int = Field(500, ge=1, le=10000, description="Entries per page of the paged searches.")
    attributes: LdapAttributeMap = LdapAttributeMap()
    membership: LdapMembership = LdapMembership()
    disabled: LdapDisabled = LdapDisabled()
    incremental: LdapIncremental = LdapIncremental()
    watch: LdapWatch = LdapWatch()

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapSourceSettings:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file or password_env (never the password itself)")
        for url in self.servers:
            if not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"server {url!r} must start with ldap:// or ldaps://")
            if self.tls == "ldaps" and not url.lower().startswith("ldaps://"):
                raise ValueError(f"server {url!r}: tls is ldaps, so use an ldaps:// URL (or set tls: starttls)")
        return self


class ScimSourceSettings(Strict):
    type: Literal["scim"] = "scim"
    name: str = Field(description="Name of this source in the ledger and the logs.")
    mode: Literal["push", "pull"] = Field(
        description="push: identity providers send SCIM requests to syncd's endpoint (a `scim.tenants` entry names "
        "this source). pull: syncd polls a SCIM server's /Users and /Groups."
    )
    url: str | None = Field(None, description="pull: base URL of the SCIM server, e.g. https://idp.example.org/scim/v2.")
    token_file: Path | None = Field(
        None, description="pull: file holding the bearer token for that server (relative to the config file)."
    )
    page_size: int = Field(100, ge=1, le=1000, description="pull: resources asked for per page.")
    timeout: Duration = Field(timedelta(seconds=30), description="pull: per-request timeout.")

    @model_validator(mode="after")
    def _pull_needs_url(self) -> ScimSourceSettings:
        if self.mode == "pull" and not self.url:
            raise ValueError("a scim source in pull mode needs `url`")
        return self


SourceSettings = Annotated[FileSourceSettings | LdapSourceSettings | ScimSourceSettings, Field(discriminator="type")]


class ClusterSettings(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                      description="Name used in policy rules, the ledger and delivered kubeconfigs; it names the "
                      "delivered files, so letters, digits and . _ - only (at most 63).")
    kubeconfig: Path = Field(description="Kubeconfig syncd itself uses to manage this cluster.")
    context: str | None = Field(None, description="Context in that kubeconfig; the current one when empty.")
    namespace: str = Field("syncd", description="Namespace where syncd keeps ServiceAccounts and token Secrets.")
    allow_cluster_wide: bool = Field(False, description="Whether policy may grant ClusterRoleBindings here.")
    server: str | None = Field(None, description="API server URL written to delivered kubeconfigs (default: ours).")
    timeout: Duration = Field(
        timedelta(seconds=15), description="Bound on each request to the API server: to connect, and to each read "
        "of the answer (a request that timed out is not sent again; one answered 429 or 5xx is, a few times).")
    concurrency: int = Field(
        16, ge=1, le=256, description="Requests in flight to this API server at most; also the connections kept "
        "open to it. Twice as many people are applied at once (each person's steps in order, on one worker), so that "
        "one person's ledger and file writes overlap others' requests.")
    qps: float = Field(
        200, ge=0, description="Requests per second syncd sends this API server at most, on average (0: no limit).")
    burst: int = Field(400, ge=1, description="Requests sent at once above `qps` after a quiet spell.")

    @property
    def workers(self) -> int:
        """People applied at once on this cluster."""
        return 2 * self.concurrency


class DeliverySettings(Strict):
    directory: Path = Field(
        Path("kubeconfigs"), description="Where kubeconfigs go, one folder per person (relative to the config file)."
    )
    mode: Literal["token-file", "inline", "exec"] = Field(
        "token-file",
        description="token-file: the kubeconfig reads the token from CLUSTER.token beside it, so refreshes reach "
        "running kubectl/K9s untouched. inline: the token sits in the kubeconfig. exec: kubectl runs "
        "`syncd credential`, which hands it the token file's token with its expiry (ExecCredential).",
    )
    exec_command: str | None = Field(
        None, description="Path of the syncd command written into exec-mode kubeconfigs (default: this syncd)."
    )


class ScimTenantSettings(Strict):
    name: str = Field(description="Name of this identity provider or tenant, in logs and the ledger.")
    source: str = Field(description="The `scim` source (mode: push) this tenant's users and groups feed.")
    token_file: Path = Field(
        description="File holding this tenant's bearer token (relative to the config file); tokens are read at start."
    )


class ScimSettings(Strict):
    """The SCIM 2.0 endpoint identity providers push to, served at /scim/v2 (`syncd serve`)."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8443, ge=1, le=65535, description="Port to listen on.")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain); with tls_key, serve HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies are refused with 413.")
    batch_interval: Duration = Field(
        timedelta(milliseconds=300), description="A lone change is reconciled at once; when changes to a source "
        "come faster, its targeted runs start at most this often, so that a burst of pushes gathers into few runs. "
        "0s starts one whenever a worker is free.")
    tenants: list[ScimTenantSettings] = Field(min_length=1, description="One entry, and one token, per tenant.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ScimSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError("tenant names must be unique")
        return self


class AuditSenderSettings(Strict):
    """One API server sending to the webhook, known by its bearer token, its TLS client certificate, or both (then
    both are required)."""

    cluster: str = Field(description="The cluster whose API server sends its audit events with these credentials.")
    token_file: Path | None = Field(
        None, description="File holding the bearer token this API server sends (the `token` of the user in its "
        "--audit-webhook-config-file; relative to the config file). Read at start.")
    client_ca: Path | None = Field(
        None, description="PEM file of the CA(s) that issued this API server's client certificate (its "
        "`client-certificate` in --audit-webhook-config-file; issued directly by one of them). Needs tls_cert.")
    client_cn: str | None = Field(
        None, description="The common name the client certificate's subject must have (with client_ca); required "
        "to tell apart senders whose certificates one CA issued.")

    @model_validator(mode="after")
    def _credentials(self) -> AuditSenderSettings:
        if self.token_file is None and self.client_ca is None:
            raise ValueError("set token_file, client_ca or both")
        if self.client_cn is not None and self.client_ca is None:
            raise ValueError("client_cn needs client_ca")
        return self


class AuditFileSettings(Strict):
    cluster: str = Field(description="The cluster whose API server writes this audit log.")
    path: Path = Field(
        description="The audit log file (--audit-log-path, JSON lines; relative to the config file), followed across "
        "rotation by rename or copytruncate. Follow each file from one syncd process only.")


class AuditSettings(Strict):
    """The audit webhook receiver: kube-apiserver's `--audit-webhook-config-file` points here (`syncd audit serve`,
    or its own listener in `syncd run`); every request a syncd credential makes is kept per day in the ledger."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8444, ge=1, le=65535, description="Port to listen on.")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain); with tls_key, serve HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    senders: list[AuditSenderSettings] = Field(
        default_factory=list, description="One entry per API server that sends to the webhook; none: no listener.")
    files: list[AuditFileSettings] = Field(
        default_factory=list, description="Audit log files to follow, for API servers that cannot send to the "
        "webhook.")
    poll_interval: Duration = Field(timedelta(seconds=1), description="How often the audit log files are read.")
    max_body_bytes: int = Field(8_388_608, ge=1024, description="Larger request bodies are refused with 413.")
    queue_batches: int = Field(
        1000, ge=1, description="Batches accepted but not yet aggregated at most; beyond, batches are dropped and "
        "counted (syncd_audit_events_total{result=\"dropped\"}), so the API server never waits.")
    flush_interval: Duration = Field(timedelta(seconds=5), description="How often use is written to the ledger.")

    @model_validator(mode="after")
    def _tls_pair(self) -> AuditSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        if not self.senders and not self.files:
            raise ValueError("set senders (the webhook), files (audit log files) or both")
        if self.tls_cert is None and any(s.client_ca for s in self.senders):
            raise ValueError("client certificates (senders[].client_ca) need TLS: set tls_cert and tls_key")
        paths = [str(f.path) for f in self.files]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(f"audit.files follow each path once; repeated: {', '.join(repeated)}")
        return self


class UsageSettings(Strict):
    """What syncd does with the use the audit events show (the `audit:` section receives them).

    Idle access: see idle_after and idle_action.

    Anomalies: each is a ledger event (action `anomaly`, its kind as reason), a log line and
    syncd_anomalies_total{kind}; `alert_command` runs with it as JSON on stdin."""

    idle_after: Duration | None = Field(
        None, description="An access with no recorded use for this long since the later of its last use and its "
        "grant is idle, e.g. 30d. None: access is never idle.")
    idle_action: Literal["report", "suspend"] = Field(
        "report", description="report: log idle accesses and count them (syncd_idle_credentials). suspend: revoke "
        "them (reason idle, the mass-revocation guard applies) and plan nothing for them until `syncd access "
        "resume`.")

    revocation_grace: Duration = Field(
        timedelta(seconds=10), description="How long after a revocation the API server may still accept the token "
        "(kube-apiserver caches a token's authentication for 10s); use later than that is an anomaly.")
    denied_burst: int = Field(20, ge=1, description="More denied (403) requests of one credential than this within "
                              "denied_window is an anomaly (once per burst).")
    denied_window: Duration = Field(timedelta(minutes=1), description="The window denied_burst is counted over.")
    alert_command: list[str] | None = Field(
        None, min_length=1, description="A command (argv list, no shell) run with each anomaly as JSON on stdin, "
        "off the ingest path: one at a time, queued up to alert_queue, each for at most alert_timeout.")
    alert_timeout: Duration = Field(timedelta(seconds=10), description="An alert_command run is killed after this.")
    alert_queue: int = Field(100, ge=1, description="Anomalies waiting for alert_command at most; beyond, dropped "
                             "(logged and counted in syncd_anomaly_alerts_total{result=\"dropped\"}).")
    retention: Duration = Field(
        timedelta(days=400), description="Use per day is kept this long (at least a day), then deleted: a year of "
        "history for a yearly access review, and a bounded ledger.")

    @model_validator(mode="after")
    def _bounds(self) -> UsageSettings:
        if self.retention < timedelta(days=1):
            raise ValueError("retention must be at least 1d: use is kept per day")
        if self.denied_window <= timedelta(0) or self.alert_timeout < timedelta(seconds=1):
            raise ValueError("denied_window must be above 0 and alert_timeout at least 1s")
        if self.idle_after is not None and self.retention < self.idle_after:
            raise ValueError("retention must be at least idle_after: an access whose last use was deleted would "
                             "look idle")
        return self


class JobSchedule(Strict):
    """When a daemon job runs: every fixed interval, or on a crontab line (UTC). Exactly one of the two."""

    every: Duration | None = Field(None, description="Interval between runs, e.g. 1m, 1h.")
    cron: str | None = Field(None, description="Crontab line in UTC (minute hour day month weekday), e.g. '0 3 * * *'.")

    @model_validator(mode="after")
    def _one_kind(self) -> JobSchedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("set exactly one of every or cron")
        if self.every is not None and self.every.total_seconds() < 1:
            raise ValueError("every must be at least 1s")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} needs five fields: minute hour day month weekday")
        return self


class SourceJobs(Strict):
    """Per-source schedules; an absent one falls back to `daemon.jobs`."""

    poll: JobSchedule | None = Field(None, description="Incremental poll (sources that support it).")
    reconcile: JobSchedule | None = Field(None, description="Full reconcile of this source.")
    credentials: JobSchedule | None = Field(None, description="Refresh, rotate and retire this source's tokens.")
    sweep: JobSchedule | None = Field(None, description="Orphan and drift sweep of this source's objects.")


class DaemonJobs(Strict):
    poll: JobSchedule = Field(JobSchedule(every=timedelta(minutes=1)),
                              description="Incremental poll of each source that supports it: changed people only.")
    reconcile: JobSchedule = Field(
        JobSchedule(every=timedelta(hours=1)),
        description="Full reconcile of each source: joiners, movers, leavers, drift repair and the orphan sweep. "
        "Also runs once at start.")
    credentials: JobSchedule = Field(
        JobSchedule(every=timedelta(minutes=5)),
        description="Refresh tokens before they expire, rotate and retire them: a run targeted at the people whose "
        "tokens are due.")
    sweep: JobSchedule = Field(
        JobSchedule(every=timedelta(minutes=10)),
        description="Orphan and drift sweep between full reconciles, from what the ledger recorded (no source "
        "read): put back deleted or edited bindings and missing tokens, retire token Secrets no record explains, "
        "remove labelled objects nobody owns.")


class BackoffSettings(Strict):
    initial: Duration = Field(timedelta(seconds=30), description="Wait before retrying a job that failed.")
    max: Duration = Field(timedelta(minutes=15), description="The wait doubles on each failure in a row up to this.")


class KubernetesLeaseSettings(Strict):
    cluster: str = Field(description="The cluster (by name, under `clusters`) that keeps the Lease.")
    namespace: str = Field(description="Namespace of the Lease; syncd's credentials there need get, create and update "
                           "on leases.coordination.k8s.io.")
    name: str = Field("syncd-leader", description="Name of the Lease.")


class LeaderSettings(Strict):
    """Which replica runs the scheduled jobs; every replica serves SCIM, /healthz, /readyz and /metrics."""

    backend: Literal["ledger", "kubernetes"] = Field(
        "ledger", description="ledger: a lease row in the ledger database (PostgreSQL; on SQLite the one process "
        "leads). kubernetes: a coordination.k8s.io/v1 Lease, for replicas running inside a cluster.")
    lease: Duration = Field(
        timedelta(seconds=15), description="How long the leader's lease lasts unless renewed (every third of it): "
        "when the leader dies, a follower takes over at most this long after its last renewal.")
    id: str | None = Field(None, description="This replica's name as a lease holder (default: HOSTNAME:PID).")
    kubernetes: KubernetesLeaseSettings | None = Field(None, description="The Lease, with backend: kubernetes.")

    @model_validator(mode="after")
    def _lease(self) -> LeaderSettings:
        if self.lease.total_seconds() < 2:
            raise ValueError("lease must be at least 2s")
        if (self.backend == "kubernetes") != (self.kubernetes is not None):
            raise ValueError("set kubernetes: (cluster, namespace) exactly when backend is kubernetes")
        return self


class DaemonSettings(Strict):
    """`syncd run`: scheduled jobs, /healthz, /readyz and /metrics here, and the `scim:` endpoint on its own port."""

    listen: str = Field("127.0.0.1", description="Address the HTTP endpoint listens on.")
    port: int = Field(9464, ge=1, le=65535, description="Port the HTTP endpoint listens on.")
    jobs: DaemonJobs = DaemonJobs()
    sources: dict[str, SourceJobs] = Field(default_factory=dict, description="Schedules for one source by name.")
    backoff: BackoffSettings = BackoffSettings()
    stop_timeout: Duration = Field(
        timedelta(seconds=60), description="On SIGTERM, how long to wait for running jobs before leaving them.")
    leader: LeaderSettings = LeaderSettings()


class Settings(Strict):
    """The whole of `syncd.yaml`."""

    policy: Path = Field(description="Path to the policy file (relative to the config file).")
    ledger: LedgerSettings = LedgerSettings()
    sources: list[SourceSettings] = Field(min_length=1)
    clusters: list[ClusterSettings] = Field(min_length=1)
    delivery: DeliverySettings = DeliverySettings()
    tokens: TokenSettings = TokenSettings()
    safety: SafetySettings = SafetySettings()
    sweep: SweepSettings = SweepSettings()
    daemon: DaemonSettings = DaemonSettings()
    scim: ScimSettings | None = None
    audit: AuditSettings | None = None
    usage: UsageSettings = UsageSettings()
    run_deadline: Duration = Field(
        timedelta(minutes=30), description="A run's longest life from its read: clusters not yet read are skipped "
        "and actions not yet begun are postponed to the next run (failed, retryable).")

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for kind, names in (("source", [s.name for s in self.sources]), ("cluster", [c.name for c in self.clusters])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(duplicates)}")
        unknown = sorted(set(self.daemon.sources) - {s.name for s in self.sources})
        if unknown:
            raise ValueError(f"daemon.sources names no source: {', '.join(unknown)}")
        push = {s.name for s in self.sources if isinstance(s, ScimSourceSettings) and s.mode == "push"}
        for tenant in self.scim.tenants if self.scim else ():
            if tenant.source not in push:
                raise ValueError(f"scim tenant {tenant.name!r} feeds {tenant.source!r}, which is no scim source "
                                 "with mode: push")
        lease = self.daemon.leader.kubernetes
        if lease is not None and lease.cluster not in {c.name for c in self.clusters}:
            raise ValueError(f"daemon.leader.kubernetes.cluster {lease.cluster!r} names no cluster")
        if self.scim and self.scim.port == self.daemon.port:
            raise ValueError("daemon.port and scim.port must differ: `syncd run` serves both")
        if self.audit:
            for key, named in (("senders", self.audit.senders), ("files", self.audit.files)):
                unknown = sorted({s.cluster for s in named} - {c.name for c in self.clusters})
                if unknown:
                    raise ValueError(f"audit.{key} name no cluster: {', '.join(unknown)}")
            if self.audit.senders and self.audit.port in (self.daemon.port, self.scim and self.scim.port):
                raise ValueError("audit.port must differ from daemon.port and scim.port: `syncd run` serves all")
        return self

    def cluster(self, name: str) -> ClusterSettings:
        return next(c for c in self.clusters if c.name == name)

    def source(self, name: str) -> SourceSettings:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"no source named {name!r}", hint=f"known: {', '.join(s.name for s in self.sources)}")


def read_secret(path: Path, what: str) -> str:
    """A secret kept in a file (a systemd credential, say), without its final line break. The `ConfigError` for
    a file that cannot be read or is empty names `what` and the file, never the content."""
    try:
        secret = path.read_text().rstrip("\r\n")
    except OSError as error:
        raise ConfigError(f"{what}: cannot read {path}: {error.strerror}") from None
    if not secret:
        raise ConfigError(f"{what}: {path} is empty")
    return secret


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None


def validation_error(path: Path, error: ValidationError, what: str = "configuration") -> ConfigError:
    """One line per problem: file, key path, what is wrong."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling"
        elif problem["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {key}: {message}")
    return ConfigError(f"invalid {what}\n  " + "\n  ".join(lines))

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_model(path: Path, model: type[ModelT], what: str = "configuration") -> ModelT:
    """Read a YAML file into `model`, or raise `ConfigError` naming the file and each bad key."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level of the {what} must be a mapping of keys")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise validation_error(path, error, what) from None


# Source settings that are paths relative to the config file.
_SOURCE_PATHS = ("path", "ca_file", "password_file", "token_file")


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path)


def load_settings(path: Path) -> Settings:
    settings = read_model(path, Settings)
    base = path.parent.resolve()
    url = settings.ledger.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{_resolve(base, Path(url.removeprefix('sqlite:///')))}"
    return settings.model_copy(
        update={
            "policy": _resolve(base, settings.policy),
            "ledger": LedgerSettings(url=url),
            "sources": [
                s.model_copy(update={key: _resolve(base, getattr(s, key)) for key in _SOURCE_PATHS
                                     if getattr(s, key, None) is not None})
                for s in settings.sources
            ],
            "clusters": [c.model_copy(update={"kubeconfig": _resolve(base, c.kubeconfig)}) for c in settings.clusters],
            "delivery": settings.delivery.model_copy(
                update={"directory": _resolve(base, settings.delivery.directory)}
            ),
            "scim": settings.scim and settings.scim.model_copy(update={
                "tls_cert": settings.scim.tls_cert and _resolve(base, settings.scim.tls_cert),
                "tls_key": settings.scim.tls_key and _resolve(base, settings.scim.tls_key),
                "tenants": [t.model_copy(update={"token_file": _resolve(base, t.token_file)})
                            for t in settings.scim.tenants],
            }),
            "audit": settings.audit and settings.audit.model_copy(update={
                "tls_cert": settings.audit.tls_cert and _resolve(base, settings.audit.tls_cert),
                "tls_key": settings.audit.tls_key and _resolve(base, settings.audit.tls_key),
                "senders": [s.model_copy(update={"token_file": s.token_file and _resolve(base, s.token_file),
                                                 "client_ca": s.client_ca and _resolve(base, s.client_ca)})
                            for s in settings.audit.senders],
                "files": [f.model_copy(update={"path": _resolve(base, f.path)}) for f in settings.audit.files],
            }),
        }
    )


def check_policy(policy: Policy, settings: Settings, path: Path) -> None:
    """Raise `ConfigError` naming every grant the clusters in `settings` cannot carry, and every rule named twice."""
    clusters = {c.name: c for c in settings.clusters}
    problems = []
    for r, rule in enumerate(policy.rules):
        for g, grant in enumerate(rule.grant):
            where = f"{path}: rules.{r}.grant.{g}"
            cluster = clusters.get(grant.cluster)
            if cluster is None:
                problems.append(
                    f"{where}.cluster: unknown cluster {grant.cluster!r}; define it under clusters in syncd.yaml"
                )
            elif grant.cluster_wide and not cluster.allow_cluster_wide:
                problems.append(
                    f"{where}.cluster_wide: cluster {grant.cluster!r} does not allow cluster-wide grants; "
                    "set allow_cluster_wide: true on it or grant namespaces"
                )
            ttl = grant.token_ttl or policy.defaults.token_ttl
            if ttl < timedelta(minutes=10):
                problems.append(f"{where}.token_ttl: Kubernetes refuses tokens shorter than 10m")
    if policy.defaults.token_ttl < timedelta(minutes=10):
        problems.append(f"{path}: defaults.token_ttl: Kubernetes refuses tokens shorter than 10m")
    names = [rule.name for rule in policy.rules]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{path}: rules: rule name {name!r} is used twice")
    if problems:
        raise ConfigError("invalid policy\n  " + "\n  ".join(problems))


def load_policy(settings: Settings) -> Policy:
    path = settings.policy
    policy = read_model(path, Policy, "policy")
    check_policy(policy, settings, path)
    return policy
