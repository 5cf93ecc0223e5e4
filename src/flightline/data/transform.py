"""The dbt project as the DAG's transform stage (astronomer-cosmos) and as a plain function.

Cosmos renders each model and its tests as Airflow tasks from a manifest that ``dbt parse`` writes
under the platform's home (no database needed, and no ``dbt ls`` at DAG parse time). The profile is
``dbt_project/profiles.yml``, which reads the same FLIGHTLINE_* variables as the platform; the
password is put into the task's environment just before dbt runs, so it never reaches the DAG.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flightline.platform.errors import DataValidationError, FlightlineError

if TYPE_CHECKING:
    from cosmos import DbtTaskGroup

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

PROFILE_NAME = "flightline"
TARGET_NAME = "dev"
_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml", ".md", ".csv"}


def dbt_env(settings: Settings) -> dict[str, str]:
    """The variables ``profiles.yml`` reads (password included) plus telemetry off."""
    return {**settings.connection_env(), "DO_NOT_TRACK": "1"}


def dbt_target_dir(settings: Settings) -> Path:
    """Where the platform's dbt runs write manifest, run results and logs (not the repository)."""
    return settings.home / "dbt" / "target"


def manifest_path(settings: Settings) -> Path:
    return dbt_target_dir(settings) / "manifest.json"


def dbt_executable() -> Path:
    """The dbt of the environment flightline runs in."""
    return Path(sys.executable).parent / "dbt"


def ensure_manifest(settings: Settings) -> Path:
    """Write the manifest with ``dbt parse`` when it is missing or older than any project file.

    Call it in setup (``flightline up``); the DAG calls it too, so a changed model shows up at
    the next parse. Takes ~10 s when it runs, milliseconds otherwise.
    """
    manifest = manifest_path(settings)
    newest = max(
        (
            path.stat().st_mtime
            for path in settings.dbt_project_dir.rglob("*")
            if path.suffix in _SOURCE_SUFFIXES and not _is_output(settings, path)
        ),
        default=0.0,
    )
    if manifest.exists() and manifest.stat().st_mtime >= newest:
        return manifest
    env = dbt_env_for_parse(settings)
    _run_dbt(settings, ["parse"], env=env)
    return manifest


def dbt_env_for_parse(settings: Settings) -> dict[str, str]:
    """Parsing connects to nothing: a placeholder password serves before secrets exist."""
    try:
        return dbt_env(settings)
    except FlightlineError:
        return dbt_env(settings.model_copy(update={"postgres_password": "unused-by-parse"}))


def run_dbt_build(settings: Settings, *, select: str | None = None) -> dict[str, Any]:
    """Run ``dbt build`` (models, then their tests) against the warehouse.

    Returns:
        ``{"success": True, "elapsed_s", "counts": {status: n}, "nodes": n}``

    Raises:
        DataValidationError: when only data tests failed (the report names them).
        FlightlineError: when a model or dbt itself failed.
    """
    began = time.monotonic()
    args = ["build"] + (["--select", select] if select else [])
    (dbt_target_dir(settings) / "run_results.json").unlink(missing_ok=True)
    completed = _run_dbt(settings, args, env=dbt_env(settings), check=False)
    results = _run_results(settings)
    counts: dict[str, int] = {}
    for item in results:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    failed = [item for item in results if item["status"] in ("error", "fail")]
    if completed.returncode != 0 or failed:
        report = "\n".join(f"  - {item['unique_id']}: {item['status']}: {item.get('message')}" for item in failed)
        message = f"dbt build failed in {settings.dbt_project_dir} ({counts})"
        if failed and all(item["unique_id"].startswith("test.") for item in failed):
            raise DataValidationError(message, report=report)
        tail = completed.stdout[-3000:] if not failed else ""
        raise FlightlineError(f"{message}\n{report or tail}")
    return {"success": True, "elapsed_s": round(time.monotonic() - began, 1), "counts": counts, "nodes": len(results)}


def build_dbt_task_group(
    settings: Settings, *, group_id: str = "transform", select: list[str] | None = None, **kwargs: Any
) -> DbtTaskGroup:
    """The cosmos task group for the dbt project: a run task and a test task per model.

    Call inside a DAG context at parse time. ``select`` takes dbt selectors (default: every model).
    Extra keyword arguments go to ``DbtTaskGroup`` (e.g. ``default_args``, ``operator_args``).
    """
    os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    os.environ.setdefault("AIRFLOW__COSMOS__CACHE_DIR", str(settings.home / "cosmos-cache"))
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior, TestIndirectSelection

    manifest = ensure_manifest(settings)
    operator_args = {
        "install_deps": False,
        "on_execute_callback": export_dbt_env,
        **kwargs.pop("operator_args", {}),
    }
    return DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            dbt_project_path=settings.dbt_project_dir,
            manifest_path=manifest,
            install_dbt_deps=False,
        ),
        profile_config=ProfileConfig(
            profile_name=PROFILE_NAME,
            target_name=TARGET_NAME,
            profiles_yml_filepath=settings.dbt_project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=dbt_executable(),
            # a model's test task runs the tests whose other parents are its ancestors: a relationship
            # test of marts.flights waits for flights (eager ran it with stg_airlines, before flights existed)
            test_indirect_selection=TestIndirectSelection.BUILDABLE,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            emit_datasets=False,
            select=select or [],
        ),
        operator_args=operator_args,
        **kwargs,
    )


def export_dbt_env(context: Any = None) -> None:
    """Task callback: put the profile's variables (password included) into this task's environment."""
    from flightline.platform.config import get_settings

    os.environ.update(dbt_env(get_settings()))


def _run_dbt(
    settings: Settings, args: list[str], *, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    target = dbt_target_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    command = [
        str(dbt_executable()), "--no-use-colors", *args,
        "--project-dir", str(settings.dbt_project_dir),
        "--profiles-dir", str(settings.dbt_project_dir),
        "--target-path", str(target),
        "--log-path", str(target.parent / "logs"),
    ]  # fmt: skip
    completed = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, cwd=settings.dbt_project_dir
    )
    if check and completed.returncode != 0:
        raise FlightlineError(f"`dbt {' '.join(args)}` failed ({completed.returncode}):\n{completed.stdout[-3000:]}")
    return completed


def _run_results(settings: Settings) -> list[dict[str, Any]]:
    path = dbt_target_dir(settings) / "run_results.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text())["results"])


def _is_output(settings: Settings, path: Path) -> bool:
    parts = path.relative_to(settings.dbt_project_dir).parts
    return bool(parts) and parts[0] in ("target", "logs", "dbt_packages")
