"""`flightline models`: list, promote and roll back the flight-delay model's champion.

Each move is recorded on the model version (who, when, why); the actor is ``FLIGHTLINE_ACTOR`` or
the OS user.
"""

from __future__ import annotations

import json

import typer

from flightline.platform.config import get_settings
from flightline.platform.errors import FlightlineError

models_app = typer.Typer(help="Registered models: list, promote, roll back.", no_args_is_help=True)


@models_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Versions of the model, newest first, with aliases, AUC and the promotion decision."""
    from flightline.models import registry

    try:
        rows = registry.list_versions(get_settings())
    except FlightlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'version':>7}  {'aliases':<22} {'auc':<8} {'decision':<14} created")
    for row in rows:
        aliases = ",".join(row["aliases"]) or "-"
        typer.echo(
            f"{row['version']:>7}  {aliases:<22} {row['auc'] or '-':<8} {row['decision'] or '-':<14} {row['created']}"
        )


@models_app.command()
def promote(
    version: str = typer.Argument(..., help="model version to make champion"),
    reason: str = typer.Option(..., "--reason", "-r", "--why", help="why (recorded on the version)"),
) -> None:
    """Make VERSION the champion."""
    from flightline.models import registry

    try:
        result = registry.promote(get_settings(), version, why=reason)
    except FlightlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    state = "is now" if result["moved"] else "was already"
    typer.echo(f"version {result['version']} {state} champion (by {registry.actor()}: {reason})")


@models_app.command()
def rollback(reason: str = typer.Option(..., "--reason", "-r", "--why", help="why (recorded on the versions)")) -> None:
    """Give the champion alias back to the previous champion."""
    from flightline.models import registry

    try:
        result = registry.rollback(get_settings(), why=reason)
    except FlightlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"champion rolled back from version {result['from']} to {result['to']} (by {registry.actor()}: {reason})"
    )
