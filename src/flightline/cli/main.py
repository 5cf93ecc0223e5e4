"""The `flightline` command: run the local platform and operate its models and data."""

from __future__ import annotations

import json
import logging
import sys
import time

import typer

from flightline.cli.llm import llm_app
from flightline.cli.models import models_app
from flightline.cli.rag import rag_app
from flightline.cli.serve import serve_app
from flightline.platform.config import get_settings
from flightline.platform.errors import FlightlineError

app = typer.Typer(help="flightline: an ML platform on DAGs.", no_args_is_help=True, add_completion=False)

app.add_typer(rag_app, name="rag")
app.add_typer(serve_app, name="serve")
app.add_typer(models_app, name="models")
app.add_typer(llm_app, name="llm")


@app.command()
def up() -> None:
    """Start PostgreSQL, MLflow, Airflow and Ray Serve (whatever is not running yet); wait until healthy."""
    from flightline.platform import stack

    settings = get_settings()
    began = time.monotonic()

    def progress(name: str, started: bool) -> None:
        typer.echo(f"  {name:<10} {'started' if started else 'already running'}")

    typer.echo(f"flightline home: {settings.home}")
    stack.up(settings, on_progress=progress)
    typer.echo(f"platform healthy in {time.monotonic() - began:.0f} s\n")
    _print_status_table(stack.status(settings))
    typer.echo(
        f"\nAirflow login: {settings.airflow_admin_user} / {settings.secret('airflow_admin_password')}"
        f"  (stored in {settings.secrets_file})"
    )


@app.command()
def demo() -> None:
    """Bring the platform up and run the example pipelines on it (the README's main command)."""
    from flightline.cli import demo as demo_steps
    from flightline.platform import stack

    settings = get_settings()
    demo_steps.run(settings, typer.echo)
    typer.echo("")
    _print_status_table(stack.status(settings))
    typer.echo(
        f"\nAirflow UI {settings.airflow_url}  login {settings.airflow_admin_user} / "
        f"{settings.secret('airflow_admin_password')}\nMLflow UI  {settings.mlflow_url}\n"
        "Stop everything with `flightline down`; data stays for the next `up`."
    )


@app.command()
def down() -> None:
    """Stop everything `up` started; data persists to the next `up`."""
    from flightline.platform import stack

    for name, stopped in stack.down(get_settings()).items():
        typer.echo(f"  {name:<10} {'stopped' if stopped else 'was not running'}")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print an object keyed by component")) -> None:
    """Health of each component; exits 1 when any is unhealthy."""
    from flightline.platform import stack

    report = stack.status(get_settings())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status_table(report)
    raise typer.Exit(0 if all(item["healthy"] for item in report.values()) else 1)


@app.command("dbt-env")
def dbt_env() -> None:
    """Print `export` lines that let `dbt build` in dbt_project/ reach the platform's warehouse.

    Use: eval "$(flightline dbt-env)" && cd dbt_project && dbt build
    """
    import shlex

    from flightline.data.transform import dbt_env as variables

    for name, value in variables(get_settings()).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command("exec")
def exec_component(
    component: str = typer.Argument(..., help="init, mlflow, or an Airflow process such as airflow-scheduler"),
) -> None:
    """Run one component in the foreground with the environment flightline derives from its settings.

    This is what each docker-compose service runs, so containers and `flightline up` share one
    configuration. `init` creates the databases and migrates Airflow's schema, then exits.
    """
    import os

    from flightline.platform import airflow_server, database, mlflow_server

    settings = get_settings()
    settings.ensure_secrets()
    airflow_env = {**os.environ, **airflow_server.airflow_env(settings)}
    if component == "init":
        database.ensure_databases(settings)
        airflow_server.migrate(settings, airflow_env)
        return
    if component == "mlflow":
        argv, extra = mlflow_server.command(settings)
        os.execve(argv[0], argv, {**os.environ, **extra})
    airflow_commands = airflow_server.commands(settings)
    if component not in airflow_commands:
        known = ", ".join(["init", "mlflow", *airflow_commands])
        raise typer.BadParameter(f"unknown component {component!r}; choose one of: {known}")
    airflow_server.write_passwords_file(settings)
    argv = airflow_commands[component]
    os.execve(argv[0], argv, airflow_env)


def _print_status_table(report: dict[str, dict[str, object]]) -> None:
    typer.echo(f"{'component':<10} {'healthy':<8} {'url':<40} log")
    for name, item in report.items():
        typer.echo(f"{name:<10} {'yes' if item['healthy'] else 'NO':<8} {item['url']!s:<40} {item['log']}")


def main() -> None:
    """Entry point: turn flightline's own errors and an unreachable PostgreSQL into one clear line and exit code 1,
    and arguments that fail the API's schemas (shared with the CLI, e.g. ``rag search --mode``) into pydantic's
    reasons and exit code 2."""
    from pydantic import ValidationError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except FlightlineError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except ValidationError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as error:
        psycopg = sys.modules.get("psycopg")  # imported by whichever command reached the database
        if psycopg is None or not isinstance(error, psycopg.OperationalError):
            raise
        reason = str(error).strip().splitlines()[0]
        typer.secho(f"error: postgres: {reason}; is the platform up? (`flightline status`)", fg=typer.colors.RED,
                    err=True)
        sys.exit(1)
