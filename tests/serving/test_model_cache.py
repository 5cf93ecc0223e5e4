"""A router replica that starts while the registry does not answer (a restart, a scale-out under load), or
while its alias points at a version that cannot serve, serves the version its alias last served, from the
local model cache, and says so; the cache drops versions no alias serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration


def test_with_the_registry_down_a_starting_model_serves_its_cached_version(
    platform: Settings, models: dict[str, str]
) -> None:
    from flightline.features.definitions import FEATURE_NAMES
    from flightline.platform.processes import free_port
    from flightline.serving.model_loader import AliasedModel

    serving = AliasedModel(platform, "champion")  # as a running replica: loads through the cache
    assert serving.refresh() and serving.current is not None and serving.current[1] == models["champion"]
    unreachable = platform.model_copy(update={"mlflow_port": free_port()})  # nothing answers there

    starting = AliasedModel(unreachable, "champion")
    assert starting.refresh() and starting.current is not None and starting.current[1] == models["champion"]
    assert starting.error is not None
    assert starting.error.startswith("the registry did not answer: ")
    assert f"; serving v{models['champion']} from the local cache (this alias's version at " in starting.error
    rows = [[0.5] * len(FEATURE_NAMES), [0.1] * len(FEATURE_NAMES)]
    assert starting.predict(rows) == serving.predict(rows)

    never_served = AliasedModel(unreachable.model_copy(update={"model_name": "never_served"}), "champion")
    assert not never_served.refresh() and never_served.current is None
    assert never_served.error is not None and "no cached version to serve" in never_served.error


def test_a_starting_model_whose_alias_points_at_a_version_that_cannot_serve_serves_its_cached_version(
    platform: Settings, models: dict[str, str]
) -> None:
    from serving_fixtures import set_alias

    from flightline.serving.model_loader import AliasedModel

    served, other = models["champion"], models["other_inputs"]
    assert AliasedModel(platform, "champion").refresh()  # as a running replica: records the version it serves
    set_alias(platform, "champion", other)  # as MLflow's UI would: no flightline check on the way
    try:
        starting = AliasedModel(platform, "champion")  # a replica starting now (a restart, a scale-out)
        assert starting.refresh() and starting.current is not None and starting.current[1] == served
        assert starting.error is not None
        assert starting.error.startswith(f"v{other} is not served: it takes inputs serving does not have: a")
        assert f"; serving v{served} from the local cache (this alias's version at " in starting.error
        assert not starting.refresh()  # the refused version is remembered, not loaded again
        assert starting.error.endswith(f"; still serving v{served}")
    finally:
        set_alias(platform, "champion", served)
    assert not starting.refresh() and starting.error is None


def test_the_cache_keeps_what_an_alias_serves_or_a_replica_used_within_the_hour(
    platform: Settings, models: dict[str, str]
) -> None:
    import os
    import time

    from flightline.serving.model_loader import AliasedModel

    assert AliasedModel(platform, "challenger").refresh()  # records the challenger's version
    cache = platform.home / "serve" / "model-cache" / platform.model_name
    unused, recent, leftover = cache / "v9001", cache / "v9002", cache / ".v9003-interrupted"
    for path in (unused, recent, leftover):
        path.mkdir()
        (path / "MLmodel").write_text("flavors: {}\n")
    two_hours_ago = time.time() - 7200
    for path in (unused, leftover, cache / f"v{models['challenger']}"):
        os.utime(path, (two_hours_ago, two_hours_ago))

    assert AliasedModel(platform, "champion").refresh()  # a swap prunes
    left = {path.name for path in cache.iterdir()}
    assert {f"v{models['champion']}", f"v{models['challenger']}", recent.name} <= left
    assert not {unused.name, leftover.name} & left
