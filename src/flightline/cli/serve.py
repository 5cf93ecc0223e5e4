"""``flightline serve``: run the Ray Serve application and change its traffic policy at runtime."""

from __future__ import annotations

import json

import typer

from flightline.platform.config import get_settings
from flightline.platform.errors import FlightlineError

serve_app = typer.Typer(
    help="Online serving on Ray Serve: up, down, status, traffic policy and experiment reports.", no_args_is_help=True
)


@serve_app.command()
def up() -> None:
    """Start Ray and deploy the app (PostgreSQL and MLflow must be up: `flightline up` starts all)."""
    from flightline.platform import serve_server

    settings = get_settings()
    started = serve_server.start(settings)
    typer.echo(f"serve {'started' if started else 'already running'} at {settings.serve_url} (docs: /docs)")


@serve_app.command()
def down() -> None:
    """Stop this platform's Ray head and every replica."""
    from flightline.platform import serve_server

    typer.echo("serve stopped" if serve_server.stop(get_settings()) else "serve was not running")


@serve_app.command()
def status() -> None:
    """Serve's view (the application, each deployment's health and replicas by state) and one router
    replica's: policy, model versions per alias, its circuit breakers, the rollback guard's challenger tally
    and prediction-log counters."""
    import httpx

    from flightline.platform import serve_server

    settings = get_settings()
    try:
        router = httpx.get(f"{settings.serve_url}/v1/serving/status", timeout=10).json()
    except httpx.HTTPError as exc:
        typer.echo(f"serve is not answering at {settings.serve_url} ({exc}); run `flightline serve up`", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"application": serve_server.application_status(settings), "router": router}, indent=2))


@serve_app.command()
def traffic(
    mode: str = typer.Argument("show", help="show | champion | canary | ab"),
    percent: float = typer.Option(0.0, "--percent", "-p", help="share of traffic to the challenger (canary, ab)"),
    shadow: bool = typer.Option(False, "--shadow/--no-shadow", help="challenger scores every request, logged only"),
    experiment: str = typer.Option("default", help="salt of the sticky hash: a new name reshuffles users"),
    by: str | None = typer.Option(None, "--by", help="who (default: FLIGHTLINE_ACTOR or the OS user)"),
    why: str | None = typer.Option(None, "--why", "--reason", "-r", help="reason, recorded with the change"),
    rollback_above: float | None = typer.Option(
        None, "--rollback-above", help="guard: back to the champion alone once more than this percent of the "
        "requests routed to the challenger fail (canary, ab)",
    ),
    rollback_after: int | None = typer.Option(None, "--rollback-after", help="guard: requests routed to the "
                                              "challenger (in one router replica) before it judges [default: 50]"),
) -> None:
    """Show or set the traffic policy; the router applies it within a second, no redeploy.

    Examples: `flightline serve traffic canary -p 10 --rollback-above 5 --why "v7 canary"`,
    `flightline serve traffic champion --shadow --why "shadow v7"`.
    """
    from typing import get_args

    from pydantic import ValidationError

    from flightline.models.registry import actor
    from flightline.serving.policy import DEFAULT_POLICY, policy_history, set_policy
    from flightline.serving.schemas import PolicyIn, PolicyMode

    settings = get_settings()
    if mode == "show":  # newest first; before any change, the default the routers apply (champion alone)
        for policy in policy_history(settings, limit=10) or [DEFAULT_POLICY]:
            typer.echo(json.dumps(policy.as_dict()))
        return
    if mode not in get_args(PolicyMode):
        raise typer.BadParameter(f"{mode!r} is not one of show, {', '.join(get_args(PolicyMode))}", param_hint="mode")
    if not why:
        raise typer.BadParameter("say why the policy changes: --why TEXT", param_hint="--why")
    if rollback_after is not None and rollback_above is None:
        raise typer.BadParameter("sets when the rollback guard judges; the guard needs --rollback-above PERCENT",
                                 param_hint="--rollback-after")
    guard = {} if rollback_after is None else {"rollback_min_requests": rollback_after}
    try:
        change = PolicyIn(mode=mode, challenger_percent=percent, shadow=shadow, experiment=experiment,  # type: ignore[arg-type]
                          set_by=by or actor(), reason=why, rollback_failure_percent=rollback_above, **guard)
        typer.echo(json.dumps(set_policy(settings, change).as_dict()))
    except ValidationError as exc:  # pydantic's text names PolicyIn's fields: say which option, and its value
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            typer.echo(f"error: {_TRAFFIC_OPTIONS.get(field, 'policy')}: {error['msg']} (got {error['input']!r})",
                       err=True)
        raise typer.Exit(2) from exc
    except FlightlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


_TRAFFIC_OPTIONS = {
    "mode": "MODE", "challenger_percent": "--percent", "shadow": "--shadow", "experiment": "--experiment",
    "set_by": "--by", "reason": "--why", "rollback_failure_percent": "--rollback-above",
    "rollback_min_requests": "--rollback-after",
}
"""PolicyIn's fields by the `serve traffic` option that sets them."""


@serve_app.command()
def report(
    experiment: str | None = typer.Option(None, help="the policies' experiment name (default: the current policy's)"),
) -> None:
    """Champion vs challenger under one experiment: each arm's requests, latency and, where flights'
    outcomes are known, Brier score and log loss with the difference's 95 % interval, and AUC; shadow pairs too."""
    from flightline.serving.experiments import experiment_report

    try:
        typer.echo(json.dumps(experiment_report(get_settings(), experiment), indent=2))
    except FlightlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
