"""A router replica that starts while the registry does not answer (a restart, a scale-out under load)
serves the version its alias last served, from the local model cache, and says so."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flightline.config import Settings

pytestmark = pytest.mark.integration


def test_with_the_registry_down_a_starting_model_serves_its_cached_version(
    platform: Settings, models: dict[str, str]
) -> None:
    from flightline.features import FEATURE_NAMES
    from flightline.processes import free_port
    from flightline.serving import AliasedModel

    serving = AliasedModel(platform, "champion")  # as a running replica: loads through the cache
    assert serving.refresh() and serving.current is not None and serving.current[1] == models["champion"]
    unreachable = platform.model_copy(update={"mlflow_port": free_port()})  # nothing answers there

    starting = AliasedModel(unreachable, "champion")
    assert starting.refresh() and starting.current is not None and starting.current[1] == models["champion"]
    assert starting.error is not None
    assert starting.error.startswith(f"the registry did not answer, so v{models['champion']} is served from the "
                                     "local cache (this alias's version at ")
    rows = [[0.5] * len(FEATURE_NAMES), [0.1] * len(FEATURE_NAMES)]
    assert starting.predict(rows) == serving.predict(rows)

    never_served = AliasedModel(unreachable.model_copy(update={"model_name": "never_served"}), "champion")
    assert not never_served.refresh() and never_served.current is None
    assert never_served.error is not None and "no cached version to serve" in never_served.error
