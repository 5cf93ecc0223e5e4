"""`flightline llm`: the platform's LLM."""

from __future__ import annotations

import json

import typer

from flightline.platform.config import get_settings
from flightline.platform.errors import FlightlineError

llm_app = typer.Typer(help="The platform's LLM: its model files.", no_args_is_help=True)


@llm_app.command()
def prepare() -> None:
    """Convert SmolLM2-135M-Instruct from its packaged GGUF into the folder vLLM loads (once; a valid folder is
    reused, a damaged one converted again) and print its manifest as JSON."""
    from flightline.llm import model_files

    try:
        manifest = model_files.prepare(get_settings())
    except FlightlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(manifest, indent=2))
