"""Serving fixtures: seeded Feast features and small registered models (see serving_fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from serving_fixtures import (
    register_code_model,
    register_other_inputs_model,
    seed_features,
    set_alias,
    train_small,
    wait_for_versions,
)

if TYPE_CHECKING:
    from flightline.platform.config import Settings


@pytest.fixture(scope="session")
def models(platform: Settings) -> dict[str, str]:
    """Versions: champion, challenger (LightGBM), slow (sleeps 2 s), broken (raises after its first call),
    nan (answers NaN after its first call), other_inputs (a classifier of other columns: serving refuses it)."""
    versions = {
        "champion": train_small(platform, seed=1),
        "challenger": train_small(platform, seed=2),
        "slow": register_code_model(platform, delay_s=2.0),
        "broken": register_code_model(platform, fail_after_calls=1),
        "nan": register_code_model(platform, nan_after_calls=1),
        "other_inputs": register_other_inputs_model(platform),
    }
    set_alias(platform, "champion", versions["champion"])
    set_alias(platform, "challenger", versions["challenger"])
    return versions


@pytest.fixture(scope="session")
def serve_url(platform: Settings, models: dict[str, str]) -> Iterator[str]:
    """The platform's router with seeded features and both aliases loaded; policy reset afterwards."""
    from flightline.serving.policy import set_policy
    from flightline.serving.schemas import PolicyIn

    seed_features(platform)
    wait_for_versions(platform.serve_url, {"champion": models["champion"], "challenger": models["challenger"]})
    yield platform.serve_url
    set_policy(platform, PolicyIn(set_by="tests", reason="reset after serving tests"))
