"""docker-compose.yml cannot run here (no Docker engine): check it against the compose spec and
check that it speaks flightline's settings and commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from flightline.platform.airflow_server import commands
from flightline.platform.config import PROJECT_DIR, Settings

COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"


def test_compose_file_matches_the_compose_spec() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_environment_uses_only_known_settings() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    known = {f"FLIGHTLINE_{name.upper()}" for name in Settings.model_fields}
    used = set(compose["x-flightline-env"])
    assert used <= known, used - known


def test_every_service_command_is_a_flightline_component() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    components = {"init", "mlflow", *commands(Settings())}
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command[:2] == ["flightline", "exec"]:
            assert command[2] in components, (name, command)


def test_every_generated_secret_comes_from_the_env_file() -> None:
    """Each container has its own home: a secret left to generate would differ between containers."""
    from flightline.platform.config import _SECRET_NAMES

    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    env = compose["x-flightline-env"]
    for name in _SECRET_NAMES:
        variable = f"FLIGHTLINE_{name.upper()}"
        assert env.get(variable) == f"${{{variable}:?set it in .env}}", variable
