"""A run's conf may only name the DAG's params: Airflow would take a misspelt key and use the default."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flightline.platform.dag_conf import check_run_conf
from flightline.platform.errors import FlightlineConfigError


def _context(conf: dict[str, object] | None, params: tuple[str, ...]) -> dict[str, object]:
    return {"dag": SimpleNamespace(dag_id="d", params=dict.fromkeys(params)), "dag_run": SimpleNamespace(conf=conf)}


def test_known_keys_and_an_empty_conf_pass() -> None:
    check_run_conf(_context({"day": "2013-01-01"}, ("day",)))
    check_run_conf(_context(None, ()))


def test_an_unknown_key_is_named_with_the_params() -> None:
    with pytest.raises(FlightlineConfigError, match=r"d has no param 'dya', 'x' \(its params: day, keep\)"):
        check_run_conf(_context({"dya": "2013-01-01", "x": 1, "keep": 2}, ("keep", "day")))
    with pytest.raises(FlightlineConfigError, match=r"its params: none"):
        check_run_conf(_context({"x": 1}, ()))
