"""Data tests run on the session's platform, in their own lake and warehouse database, so that they
neither see nor disturb the DAG tests' data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flightline.platform.config import Settings

DATABASE = "warehouse_data_tests"


@pytest.fixture(scope="module")
def data_settings(platform: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The platform's settings with a fresh home (lake, dbt target) and a fresh warehouse database."""
    from flightline.platform.database import connect

    home: Path = tmp_path_factory.mktemp("data-home")
    secrets = platform.ensure_secrets()  # the platform's, from its home: the fresh one has no secrets file
    settings = platform.model_copy(update={"home": home, "warehouse_db": DATABASE, **secrets})
    with connect(platform, "postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{DATABASE}" with (force)')
        conn.execute(f'create database "{DATABASE}"')
    yield settings
