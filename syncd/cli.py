"""The `syncd` command. `main()` is the only place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import click
import typer

from syncd import logs, render
from syncd.config import load_settings
from syncd.engine import Engine
from syncd.errors import ApplyFailed, ChangesPending, LedgerTampered, SyncdError
from syncd.ledger import Ledger
from syncd.policy import load_policy

app = typer.Typer(help="Keep Kubernetes credentials in step with the people in your directory.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check configuration and policy.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read and check the ledger.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(ledger_app, name="ledger")


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
    output: OutputOption = Output.text,
) -> None:
    """Bring clusters, delivered kubeconfigs and the ledger in line with the sources and the policy."""
    engine = Engine(load_settings(config))
    try:
        reports = engine.reconcile(source, dry_run=dry_run or check, allow_mass_revocation=allow_mass_revocation)
    finally:
        engine.close()
    if output is Output.json:
        typer.echo(json.dumps({"runs": [render.report_json(r) for r in reports]}, indent=2))
    else:
        typer.echo("\n".join(render.plan_text(r) for r in reports))
    for report in reports:
        if report.error is not None:
            raise report.error
    failed = sum(len(r.outcome.failed) for r in reports if r.outcome)
    if failed or any(r.cluster_errors for r in reports):
        retryable = all(e.retryable for r in reports if r.outcome for _, e in r.outcome.failed)
        raise ApplyFailed(f"{failed} action(s) failed; see the log", failed=failed, retryable=retryable)
    if check and any(r.plan and (r.plan.actions or r.plan.held) for r in reports):
        raise ChangesPending("changes pending")


@config_app.command("check")
def config_check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate syncd.yaml and the policy it names."""
    settings = load_settings(config)
    policy = load_policy(settings)
    typer.echo(f"{config}: ok ({len(settings.sources)} source(s), {len(settings.clusters)} cluster(s), "
               f"{len(policy.rules)} policy rule(s))")


@ledger_app.command("log")
def ledger_log(
    config: ConfigOption = DEFAULT_CONFIG,
    person: Annotated[str | None, typer.Option(help="Person id or username.")] = None,
    run: Annotated[str | None, typer.Option(help="Run id.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the last N events.")] = None,
    output: OutputOption = Output.text,
) -> None:
    """List ledger events, oldest first."""
    ledger = Ledger(load_settings(config).ledger.url)
    try:
        rows = ledger.events(person=person, run_id=run, limit=limit)
    finally:
        ledger.close()
    if output is Output.json:
        typer.echo(json.dumps([render.event_json(r) for r in rows], indent=2))
    else:
        for row in rows:
            typer.echo(render.event_text(row))


@ledger_app.command("verify")
def ledger_verify(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check the hash chain of the event log."""
    ledger = Ledger(load_settings(config).ledger.url)
    try:
        broken = ledger.verify()
        count = len(ledger.events())
    finally:
        ledger.close()
    if broken is not None:
        raise LedgerTampered(f"the ledger's hash chain breaks at event {broken}")
    typer.echo(f"ledger ok: {count} event(s), hash chain intact")


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
