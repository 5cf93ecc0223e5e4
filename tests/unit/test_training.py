"""Training windows: scheduled runs, manual params and out-of-time checks."""

from __future__ import annotations

import datetime as dt

import pytest

from flightline.models.training import (
    HOLDOUT_PARAMS,
    Window,
    manual_logical_date,
    month_bounds,
    resolve_window,
    run_key,
)
from flightline.platform.errors import FlightlineConfigError


def test_scheduled_runs_evaluate_on_their_month_and_train_on_the_months_before() -> None:
    assert resolve_window({}, dt.date(2013, 1, 1)) is None
    window = resolve_window({}, dt.date(2013, 4, 1))
    assert window == Window(dt.date(2013, 1, 1), dt.date(2013, 3, 1), dt.date(2013, 4, 1), dt.date(2013, 4, 1))


def test_params_choose_the_windows_and_evaluation_stays_out_of_time() -> None:
    params = {"train_start": "2013-01", "train_end": "2013-09", "eval_start": "2013-10", "eval_end": "2013-12"}
    window = resolve_window(params, dt.date(2013, 5, 1))
    assert window is not None and window.as_dict() == params
    assert run_key("dag", window) == "dag/2013-01..2013-09/2013-10..2013-12"
    with pytest.raises(FlightlineConfigError, match="out of time"):
        resolve_window({**params, "train_end": "2013-10"}, dt.date(2013, 5, 1))
    with pytest.raises(FlightlineConfigError, match="YYYY-MM"):
        resolve_window({"eval_end": "October"}, dt.date(2013, 5, 1))


def test_month_bounds_follow_new_york_months() -> None:
    start, end = month_bounds(dt.date(2013, 3, 1), dt.date(2013, 3, 1))
    assert start == dt.datetime(2013, 3, 1, 5, tzinfo=dt.UTC)  # EST
    assert end == dt.datetime(2013, 4, 1, 4, tzinfo=dt.UTC)  # EDT


def test_manual_runs_of_the_holdout_get_a_logical_date_inside_the_dags_2013_dates() -> None:
    date = manual_logical_date()
    # the DAG runs from 2013-01-01 to 2013-12-31: a later logical date gives a run with no task
    assert dt.datetime(2013, 12, 1, tzinfo=dt.UTC) <= date < dt.datetime(2013, 12, 2, tzinfo=dt.UTC)
    window = resolve_window(HOLDOUT_PARAMS, date.date())
    assert window == Window(dt.date(2013, 1, 1), dt.date(2013, 9, 1), dt.date(2013, 10, 1), dt.date(2013, 12, 1))
