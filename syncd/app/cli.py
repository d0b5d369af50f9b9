"""The `syncd` command. `main()` is the only place that turns errors into exit codes."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from syncd import logs
from syncd.adapters.delivery import Delivery, exec_credential
from syncd.adapters.kube import KubernetesCluster
from syncd.adapters.ledger import Database, ReadModel
from syncd.app import render
from syncd.config import DeliverySettings, Settings, load_policy, load_settings
from syncd.core.model import person_key
from syncd.core.plan import Reason, missing_role_notes
from syncd.errors import (
    ApplyFailed,
    ChangesPending,
    ClusterRejected,
    ClusterUnavailable,
    InputError,
    LedgerTampered,
    SyncdError,
    UnsafePlan,
)
from syncd.ports import Source
from syncd.runtime.apply import Progress
from syncd.runtime.engine import Engine, RunReport
from syncd.runtime.wiring import open_source, pushed_resources, reads_ledger

if TYPE_CHECKING:
    from rich.progress import TaskID

app = typer.Typer(help="Keep Kubernetes credentials in step with the people in your directory.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check configuration and policy.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read, check and upgrade the ledger.", no_args_is_help=True)
token_app = typer.Typer(help="List and revoke credentials.", no_args_is_help=True)
source_app = typer.Typer(help="Check the identity sources.", no_args_is_help=True)
audit_app = typer.Typer(help="Receive the API servers' audit events: the use of every credential.",
                        no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(ledger_app, name="ledger")
app.add_typer(token_app, name="token")
app.add_typer(source_app, name="source")
access_app = typer.Typer(help="List who has access; resume access suspended for want of use.",
                         no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(access_app, name="access")


class Output(StrEnum):
    text = "text"
    json = "json"


ConfigOption = Annotated[Path, typer.Option("--config", "-c", envvar="SYNCD_CONFIG", help="Path to syncd.yaml.")]
OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]
DEFAULT_CONFIG = Path("/etc/syncd/syncd.yaml")


@app.callback()
def _setup(log_level: Annotated[str, typer.Option(envvar="SYNCD_LOG_LEVEL", help="debug, info, warning, error.")]
           = "info") -> None:
    logs.configure(log_level)


@app.command()
def reconcile(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[str | None, typer.Option(help="Reconcile this source only.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Like --dry-run; exit 1 when anything would change.")]
    = False,
    allow_mass_revocation: Annotated[bool, typer.Option(
        "--allow-mass-revocation", help="Apply revocations beyond the safety thresholds.")] = False,
    sweep: Annotated[bool, typer.Option(
        "--sweep", help="Only the orphan and drift sweep, from what the ledger recorded: no source is read.")]
    = False,
    output: OutputOption = Output.text,
) -> None:
    """Bring clusters, delivered kubeconfigs and the ledger in line with the sources and the policy."""
    with Engine.from_settings(load_settings(config)) as engine, _progress(output) as progress:
        engine.progress = progress
        if sweep:
            reports = engine.sweep(source, dry_run=dry_run or check)
        else:
            reports = engine.reconcile(source, dry_run=dry_run or check,
                                       allow_mass_revocation=allow_mass_revocation)
    if output is Output.json:
        typer.echo(json.dumps({"runs": [render.report_json(r) for r in reports]}, indent=2))
    else:
        typer.echo("\n".join(render.plan_text(r) for r in reports))
    _raise_for_failures(reports)
    # Not `r.plan and ...`: a plan is falsy when it has no actions, and held revocations are pending too.
    if check and any(r.plan is not None and (r.plan.actions or r.plan.held) for r in reports):
        raise ChangesPending("changes pending")
    unsafe = [held for r in reports if r.plan is not None for held in r.plan.held if held.unsafe]
    if unsafe and not dry_run:
        raise UnsafePlan(f"{len(unsafe)} revocation(s) held: {unsafe[0].why}")


@contextlib.contextmanager
def _progress(output: Output) -> Iterator[Progress | None]:
    """A progress bar per run on a terminal (stderr), where log lines print above it; nothing otherwise."""
    if output is Output.json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    tasks: dict[str, TaskID] = {}
    with Bar(TextColumn("apply {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
             console=Console(stderr=True), transient=True, redirect_stdout=False) as bar:

        def advance(source: str, done: int, total: int) -> None:
            if source not in tasks:
                tasks[source] = bar.add_task(source, total=total)
            bar.update(tasks[source], completed=done, total=total)

        yield advance


@app.command()
def serve(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Serve the SCIM 2.0 endpoint (the `scim:` section) alone; every change is reconciled at once."""
    import uvicorn

    from syncd.scim import create_app

    settings = load_settings(config)
    engine = Engine.from_settings(settings)
    scim = create_app(engine, settings, pushed_resources(engine.database))
    options = settings.scim
    assert options is not None
    try:
        uvicorn.run(scim, host=options.host, port=options.port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=10,
                    ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
                    ssl_keyfile=str(options.tls_key) if options.tls_key else None)
    finally:
        scim.reconciler.close()
        engine.close()


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run as a service: scheduled jobs, /healthz, /readyz and /metrics over HTTP, systemd notify.
    SIGHUP reloads config and policy; SIGTERM stops after the running jobs."""
    from syncd.app import daemon  # the service's libraries stay out of the short-lived commands

    daemon.run(config)


@config_app.command("check")
def config_check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate syncd.yaml and the policy it names; on each cluster it can reach, check the granted roles exist."""
    settings = load_settings(config)
    policy = load_policy(settings)
    typer.echo(f"{config}: ok ({len(settings.sources)} source(s), {len(settings.clusters)} cluster(s), "
               f"{len(policy.rules)} policy rule(s))")
    typer.echo(f"  ledger: {ledger_sharing(settings)}")
    for cluster_settings in settings.clusters:
        cluster = KubernetesCluster(cluster_settings)
        try:
            missing = cluster.missing_roles(policy.granted_scopes(cluster.name))
        except (ClusterUnavailable, ClusterRejected) as error:
            typer.echo(f"  cluster {cluster.name}: not checked: {error}")
            continue
        finally:
            cluster.close()
        notes = missing_role_notes({cluster.name: missing})
        typer.echo(f"  cluster {cluster.name}: " + (f"{len(notes)} warning(s)" if notes else "granted roles exist"))
        for note in notes:
            typer.echo(f"  warning: {note}")


def ledger_sharing(settings: Settings) -> str:
    """How processes may share the configured ledger."""
    if settings.ledger.url.startswith("sqlite"):
        return ("SQLite: one syncd process per ledger is the supported shape (one `syncd run`, and on-demand "
                "commands on its host); for several replicas use PostgreSQL")
    leader = settings.daemon.leader
    return (f"shared by every replica: a fenced apply lock; the scheduled jobs run on one leader ({leader.backend} "
            f"lease, {leader.lease.total_seconds():g}s)")


@source_app.command("test")
def source_test(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[str | None, typer.Option(help="Test this source only.")] = None,
    output: OutputOption = Output.text,
) -> None:
    """Connect, bind, count people (and groups) and print one mapped identity. Changes nothing."""
    settings = load_settings(config)
    chosen = [settings.source(source)] if source else settings.sources
    with contextlib.ExitStack() as stack:
        ledger = (stack.enter_context(Database(settings.ledger.url, migrate=False))
                  if any(map(reads_ledger, chosen)) else None)
        results = [_test_source(open_source(source_settings, ledger)) for source_settings in chosen]
    if output is Output.json:
        typer.echo(json.dumps([render.source_check_json(r) for r in results], indent=2))
    else:
        typer.echo("\n".join(render.source_check_text(r) for r in results))


def _test_source(opened: Source) -> dict:
    try:
        check = getattr(opened, "check", None)
        if check is not None:
            return {"source": opened.name} | check()
        snapshot = opened.read()
        return {"source": opened.name, "people": len(snapshot.identities),
                "sample": snapshot.identities[0] if snapshot.identities else None,
                "problems": list(snapshot.problems[:5])}
    finally:
        opened.close()


@contextlib.contextmanager
def _read_only(config: Path) -> Iterator[ReadModel]:
    """The ledger for a command that only reads: never created nor migrated (a missing or older one is refused)."""
    with Database(load_settings(config).ledger.url, migrate=False) as database:
        yield ReadModel(database)


@ledger_app.command("upgrade")
def ledger_upgrade(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Migrate the ledger's schema to this syncd's (commands that write do so on their own)."""
    with Database(load_settings(config).ledger.url) as database:
        before, after = database.revisions
    if before == after:
        typer.echo(f"ledger schema at revision {after}: up to date")
    else:
        typer.echo(f"ledger schema upgraded from revision {before or '(none)'} to {after}")


@ledger_app.command("log")
def ledger_log(
    config: ConfigOption = DEFAULT_CONFIG,
    person: Annotated[str | None, typer.Option(help="Person id or username.")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the last N events.")] = None,
    output: OutputOption = Output.text,
) -> None:
    """List ledger events, oldest first."""
    with _read_only(config) as ledger:
        rows = ledger.events(person=person, run_id=run, limit=limit)
    if output is Output.json:
        typer.echo(json.dumps([render.event_json(r) for r in rows], indent=2))
    else:
        for row in rows:
            typer.echo(render.event_text(row))


@ledger_app.command("verify")
def ledger_verify(
    config: ConfigOption = DEFAULT_CONFIG,
    anchor: Annotated[str | None, typer.Option(
        help="SEQ:HASH of an event kept outside the database (a verify's or an export's last line): the chain must "
             "still hold it.")] = None,
) -> None:
    """Check the hash chain of the event log, that nothing was cut off its end, and that it holds every run's
    recorded head (and --anchor)."""
    given = None
    if anchor is not None:
        seq, _, hash_ = anchor.partition(":")
        if not seq.isdigit() or not hash_:
            raise typer.BadParameter("give --anchor as SEQ:HASH, e.g. 42:3f9a...")
        given = (int(seq), hash_)
    with _read_only(config) as ledger:
        problem = ledger.verify(given)
        seq, hash_ = ledger.head()
    if problem is not None:
        raise LedgerTampered(f"the ledger was tampered with: {problem}")
    typer.echo(f"ledger ok: {seq} event(s), hash chain intact up to its head anchor {seq}:{hash_} "
               "(keep it to check later with --anchor)")


@ledger_app.command("export")
def ledger_export(
    config: ConfigOption = DEFAULT_CONFIG,
    since: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    to: Annotated[Path | None, typer.Option("--to", help="Append to this file instead of stdout.")] = None,
) -> None:
    """Write events as JSON lines for a SIEM, each with its hash and the previous one's."""
    with _read_only(config) as ledger:
        rows = [r for r in ledger.events() if (r.seq or 0) > since]
    lines = "".join(json.dumps(render.event_json(r) | {"prev_hash": r.prev_hash}) + "\n" for r in rows)
    if to is None:
        sys.stdout.write(lines)
    else:
        with to.open("a") as handle:
            handle.write(lines)


class RevokeReason(StrEnum):
    exposed = "exposed"
    lost = "lost"
    left = "left"
    manual = "manual"


@token_app.command("list")
def token_list(
    config: ConfigOption = DEFAULT_CONFIG,
    all_states: Annotated[bool, typer.Option("--all", help="Include revoked credentials.")] = False,
    output: OutputOption = Output.text,
) -> None:
    """Every credential: owner, cluster, state, fingerprint, issued (last rotation), expiry, last use, scopes."""
    with _read_only(config) as ledger:
        rows = ledger.credentials(include_revoked=all_states)
        last_used = ledger.last_used_by_token()
    if output is Output.json:
        typer.echo(json.dumps([render.credential_json(*row, last_used) for row in rows], indent=2))
    else:
        typer.echo(render.credentials_text(rows, last_used))


@token_app.command("revoke")
def token_revoke(
    target: Annotated[str, typer.Argument(help="A token fingerprint (sha256:..., a prefix will do), or a person "
                                               "id or username to revoke all of that person's access.")],
    reason: Annotated[RevokeReason, typer.Option(help="Why; recorded in the ledger.")],
    config: ConfigOption = DEFAULT_CONFIG,
    output: OutputOption = Output.text,
) -> None:
    """Revoke now, with no grace window. The next reconcile gives a person the source still entitles new access."""
    with Engine.from_settings(load_settings(config)) as engine:
        report = engine.revoke(target, Reason(reason.value))
    if output is Output.json:
        typer.echo(json.dumps(render.report_json(report), indent=2))
    else:
        typer.echo(render.plan_text(report))
    _raise_for_failures([report])


@app.command()
def usage(
    person: Annotated[str, typer.Argument(help="A person id or username (leavers too).")],
    config: ConfigOption = DEFAULT_CONFIG,
    cluster: Annotated[str | None, typer.Option(help="This cluster only.")] = None,
    days: Annotated[int, typer.Option(min=1, help="The last N days (today included).")] = 30,
    output: OutputOption = Output.text,
) -> None:
    """A person's use of their credentials per day, from the API servers' audit events: requests, denied (403),
    source IPs, user agents, top verbs, resources and namespaces, first and last use."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    with _read_only(config) as ledger:
        people = ledger.people_named(person)
        if not people:
            raise InputError(f"no person with id or username {person!r} in the ledger")
        found = [(pid, name, ledger.usage(person_key(pid), cluster=cluster, since=since),
                  {on: purpose for on, purpose in ledger.purposes(pid).items() if cluster in (None, on)})
                 for pid, name in people]
    if output is Output.json:
        typer.echo(json.dumps([render.usage_json(*one) for one in found], indent=2))
    else:
        typer.echo("\n\n".join(render.usage_text(*one) for one in found))


@access_app.command("list")
def access_list(
    config: ConfigOption = DEFAULT_CONFIG,
    suspended: Annotated[bool, typer.Option("--suspended", help="Only access suspended for want of use.")] = False,
    output: OutputOption = Output.text,
) -> None:
    """Each person's access per cluster: active since its grant, or suspended (idle) since when; last use."""
    with _read_only(config) as ledger:
        last_used = ledger.last_used()
        entries = [] if suspended else [
            render.access_json(pid, name, cluster, "active", granted, scopes, last_used)
            for pid, name, cluster, scopes, granted in ledger.accesses()]
        entries += [render.access_json(pid, name, cluster, "suspended", since, frozenset(), last_used)
                    for pid, name, cluster, since in ledger.suspensions()]
    entries.sort(key=lambda entry: (entry["person"], entry["cluster"]))
    if output is Output.json:
        typer.echo(json.dumps(entries, indent=2))
    else:
        typer.echo(render.accesses_text(entries))


@access_app.command("resume")
def access_resume(
    person: Annotated[str, typer.Argument(help="A person id or username.")],
    reason: Annotated[str, typer.Option(help="Why access is given back; recorded in the ledger.")],
    config: ConfigOption = DEFAULT_CONFIG,
    cluster: Annotated[str | None, typer.Option(help="This cluster only (default: every cluster).")] = None,
) -> None:
    """Lift a suspension for want of use (a `resume` ledger event); the next reconcile gives access back if the
    source still entitles the person."""
    if not reason.strip():
        raise typer.BadParameter("say why access is given back", param_hint="--reason")
    with Engine.from_settings(load_settings(config)) as engine:
        person_id, username, clusters = engine.resume(person, cluster, reason)
    typer.echo(f"resumed {username} (id {person_id}) on {', '.join(clusters)}; the next reconcile gives access back "
               "if the source still entitles them")


class ReviewOutput(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


@app.command()
def review(
    config: ConfigOption = DEFAULT_CONFIG,
    cluster: Annotated[str | None, typer.Option(help="This cluster only.")] = None,
    output: Annotated[ReviewOutput, typer.Option("--output", "-o", help="table, json, csv or html (one file).")]
    = ReviewOutput.table,
) -> None:
    """Who has what, for an access review: per person and cluster each scope, the policy rules that grant it,
    whether its role is privileged (read live from the cluster), token expiry, last use. Changes nothing."""
    from syncd.app import review as shown
    from syncd.runtime.review import access_review

    settings = load_settings(config)
    now = datetime.now(UTC)
    idle_after = settings.usage.idle_after
    clusters = {c.name: KubernetesCluster(c) for c in settings.clusters if cluster in (None, c.name)}
    try:
        with _read_only(config) as ledger:
            reviews = access_review(ledger, clusters, now, idle_after=idle_after, cluster=cluster)
    finally:
        for opened in clusters.values():
            opened.close()
    if output is ReviewOutput.json:
        typer.echo(json.dumps(shown.review_json(reviews, now, idle_after), indent=2))
    elif output is ReviewOutput.csv:
        sys.stdout.write(shown.review_csv(reviews))
    elif output is ReviewOutput.html:
        sys.stdout.write(shown.review_html(reviews, now, idle_after))
    else:
        typer.echo(shown.review_table(reviews))


@audit_app.command("serve")
def audit_serve(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Serve the audit webhook (the `audit:` section) alone; use is written to the ledger every flush_interval
    and on SIGTERM."""
    from syncd.app import daemon  # the service's libraries stay out of the short-lived commands

    daemon.serve_audit(load_settings(config))


@app.command()
def credential(
    token_file: Annotated[Path | None, typer.Option(help="Token file written by syncd (exec-mode kubeconfigs "
                                                         "pass it).")] = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster name, with --user and --directory.")] = None,
    user: Annotated[str | None, typer.Option(envvar="USER", help="Whose token: a username or person id "
                                                                 "(default: $USER).")] = None,
    directory: Annotated[Path | None, typer.Option(envvar="SYNCD_DELIVERY_DIR",
                                                   help="syncd's delivery directory.")] = None,
) -> None:
    """kubectl exec credential plugin: print an ExecCredential (client.authentication.k8s.io/v1) with the
    current token and its expiry, so kubectl asks again once it expires."""
    if token_file is None:
        if not (cluster and user and directory):
            raise typer.BadParameter("give --token-file, or --cluster with --user and --directory")
        token_file = Delivery(DeliverySettings(directory=directory)).find(user, cluster) / f"{cluster}.token"
    typer.echo(json.dumps(exec_credential(token_file)))


def _raise_for_failures(reports: list[RunReport]) -> None:
    for report in reports:
        if report.error is not None:
            raise report.error
    failed = sum(len(r.outcome.failed) for r in reports if r.outcome)
    unread = sorted({cluster for r in reports for cluster in r.cluster_errors})
    refused = [h for r in reports if r.plan is not None and not r.dry_run for h in r.plan.held if h.refused]
    if failed or unread or refused:
        retryable = not refused and all(e.retryable for r in reports if r.outcome for _, e in r.outcome.failed)
        problems = [f"{failed} action(s) failed"] if failed else []
        problems += [f"{len(refused)} action(s) refused, first: {refused[0].why}"] if refused else []
        problems += [f"cluster {cluster} could not be read; its changes wait for the next run" for cluster in unread]
        raise ApplyFailed("; ".join(problems) + " (see the log)", failed=failed + len(refused), retryable=retryable)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except SyncdError as error:
        if not isinstance(error, ChangesPending):
            print(f"syncd: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        print("syncd: aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
