"""The registry's champion history through promote and rollback, on the real MLflow server.

A model name of its own, so the router's aliases (other tests) are not touched.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from serving_fixtures import set_alias, train_small

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration


def test_rollback_goes_back_to_the_champion_before_including_moves_outside_flightline(platform: Settings) -> None:
    from flightline.models import registry
    from flightline.platform.errors import FlightlineError

    settings = platform.model_copy(update={"model_name": f"registry_test_{uuid.uuid4().hex[:8]}"})
    v1, v2, v3 = (train_small(settings, seed=seed) for seed in (11, 12, 13))
    with pytest.raises(FlightlineError, match="no earlier champion"):
        registry.rollback(settings, by="tests", why="no champion yet")

    registry.promote(settings, v1, by="tests", why="first")
    registry.promote(settings, v2, by="tests", why="better")
    assert registry.rollback(settings, by="tests", why="v2 misbehaves") == {"from": v2, "to": v1}
    registry.promote(settings, v2, by="tests", why="fixed")

    set_alias(settings, "champion", v3)  # moved in MLflow's UI: the history does not have it
    assert registry.rollback(settings, by="tests", why="v3 was never ours") == {"from": v3, "to": v2}

    set_alias(settings, "champion", v3)
    assert registry.promote(settings, v2, by="tests", why="back to v2")["moved"]  # v2 is the history's last already
    assert registry.rollback(settings, by="tests", why="v2 again") == {"from": v2, "to": v1}  # not "from v2 to v2"
    assert str(registry.alias_version(settings, "champion").version) == v1
    with pytest.raises(FlightlineError, match=r"no earlier champion to roll back to \(history: \['" + v1):
        registry.rollback(settings, by="tests", why="nothing before v1")


def test_champion_moves_wait_for_each_other(platform: Settings) -> None:
    """A training run's promotion and an operator's rollback, interleaved, would each read the history, move
    the alias and write the history back: one at a time, through a PostgreSQL advisory lock."""
    import threading
    import time

    from flightline.models import registry
    from flightline.platform.database import connect

    settings = platform.model_copy(update={"model_name": f"registry_test_{uuid.uuid4().hex[:8]}"})
    v1, v2 = (train_small(settings, seed=seed) for seed in (21, 22))
    registry.promote(settings, v1, by="tests", why="first")
    lock = "select pg_advisory_lock(hashtext('flightline.registry.champion:' || %s))"
    with connect(settings, settings.warehouse_db, autocommit=True) as held:
        held.execute(lock, (settings.model_name,))  # another champion move in progress
        promotion = threading.Thread(target=registry.promote, args=(settings, v2), kwargs={"why": "meanwhile"})
        promotion.start()
        deadline, waiting = time.monotonic() + 60, 0
        while not waiting and time.monotonic() < deadline:
            time.sleep(0.2)
            waiting = held.execute("select count(*) from pg_locks where locktype = 'advisory' and not granted "
                                   "and database = (select oid from pg_database where datname = current_database())"
                                   ).fetchone()[0]
        assert waiting == 1 and promotion.is_alive()
        assert str(registry.alias_version(settings, "champion").version) == v1
    promotion.join(60)
    assert not promotion.is_alive()
    assert str(registry.alias_version(settings, "champion").version) == v2
    assert registry.rollback(settings, by="tests", why="history ends at the champion") == {"from": v2, "to": v1}


def test_models_cli_lists_promotes_and_rolls_back(platform: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flightline.cli.main import app
    from flightline.models import registry
    from flightline.platform.config import get_settings

    settings = platform.model_copy(update={"model_name": f"registry_test_{uuid.uuid4().hex[:8]}"})
    v1, v2 = (train_small(settings, seed=seed) for seed in (31, 32))
    monkeypatch.setenv("FLIGHTLINE_MODEL_NAME", settings.model_name)
    get_settings.cache_clear()  # the CLI reads the settings anew (the session fixture clears them after)
    runner = CliRunner()
    missing = runner.invoke(app, ["models", "promote", "99", "--why", "no such version"])
    assert missing.exit_code == 1 and f"model {settings.model_name!r} has no version '99'" in missing.output
    unstated = runner.invoke(app, ["models", "promote", v1])
    assert unstated.exit_code == 2 and "--reason" in unstated.output
    for version, flag in ((v1, "--reason"), (v2, "--why")):  # either spelling, as `serve traffic` takes
        done = runner.invoke(app, ["models", "promote", version, flag, f"v{version} from the CLI"])
        assert done.exit_code == 0 and f"version {version} is now champion" in done.output, done.output
    again = runner.invoke(app, ["models", "promote", v2, "-r", "twice"])
    assert again.exit_code == 0 and f"version {v2} was already champion" in again.output
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and [line.split()[:2] for line in listed.output.splitlines()[1:]] == [
        [v2, "champion"], [v1, "-"]]
    back = runner.invoke(app, ["models", "rollback", "-r", "the CLI rolls back"])
    assert back.exit_code == 0 and f"champion rolled back from version {v2} to {v1}" in back.output
    assert str(registry.alias_version(settings, "champion").version) == v1
    nothing = runner.invoke(app, ["models", "rollback", "--why", "nothing before v1"])
    assert nothing.exit_code == 1 and "no earlier champion to roll back to" in nothing.output


def test_registering_a_promoted_version_loads_it_once(platform: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training DAG's register step moves ``challenger`` and then, when the evaluation says promote,
    ``champion`` to the same version: each move probes an unprobed version by loading it, and the promotion
    reuses the challenger's probe (a second load would cost a large model its load time again). A rerun,
    with both aliases already there, loads nothing."""
    from flightline.models import registry, servable

    settings = platform.model_copy(update={"model_name": f"registry_test_{uuid.uuid4().hex[:8]}"})
    version = train_small(settings, seed=41)
    run_id = registry.client(settings).get_model_version(settings.model_name, version).run_id
    challenger = {"metrics": {"auc": 0.7, "log_loss": 0.5, "calibration_error": 0.01},
                  "latency": {"latency_p95_ms": 1.0}}
    evaluation = {"challenger": challenger, "eval_window": "2013-10-01/2013-12-31",
                  "decision": {"promote": True, "reasons": ["pass: no champion yet"]}}
    loaded: list[str] = []
    load_servable = servable.load_servable

    def counted(uri: str) -> object:
        loaded.append(uri)
        return load_servable(uri)

    monkeypatch.setattr(servable, "load_servable", counted)
    first = registry.register(settings, run_id, evaluation, by="tests")
    assert first == {"version": version, "challenger_moved": True, "champion_moved": True, "promote": True}
    assert loaded == [f"models:/{settings.model_name}/{version}"]
    assert str(registry.alias_version(settings, "champion").version) == version

    rerun = registry.register(settings, run_id, evaluation, by="tests")
    assert rerun == {"version": version, "challenger_moved": False, "champion_moved": False, "promote": True}
    assert len(loaded) == 1
