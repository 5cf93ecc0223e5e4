"""Windowed flight features with PySpark, from exact Delta versions of the bronze tables.

Every feature row is stamped ``feature_at = t`` and uses only facts known strictly before ``t`` (see
:mod:`flightline.features` for when each fact is known). Rolling rates are computed on a grid (daily
per carrier, origin, destination and route; hourly per origin) with window frames that end one
bucket before ``t``; event features (a plane's last delays) are stamped one minute after the fact is
known. Results replace the ``features.*`` tables in the warehouse database, which Feast reads as its
offline sources, in one transaction per table: a rerun rewrites the same rows.

Spark reads a Delta version through ``DeltaTable(path, version=v).file_uris()`` (no delta-spark jars
needed); ``settings.spark_use_delta_spark`` switches to delta-spark's reader for clusters.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from flightline.features import definitions as F
from flightline.platform.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

SCHEMA = "features"
"""Warehouse schema of the feature tables Feast reads."""

STATIC_FEATURE_AT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""Timestamp of facts known in advance (plane registry, route distance)."""

EVENT_DELAY = dt.timedelta(minutes=1)
"""Event features are stamped this long after their fact is known, so `<=` joins mean strictly after."""

TABLES: dict[str, str] = {
    **{f"{prefix}_daily": key for prefix, key in F.DAILY_KEYS.items()},
    "origin_hourly": "origin_airport_code",
    "plane_recent": "tail_number",
    "plane_attributes": "tail_number",
    "route_attributes": "route_code",
}
"""Feature table -> its entity key column."""


def spark_session(settings: Settings) -> SparkSession:
    """A small local Spark session (2 cores, few shuffle partitions, UTC clock, no UI)."""
    from pyspark.sql import SparkSession

    # Python UDF workers (spark_udf, pandas transforms) must run this interpreter with its packages,
    # not whatever `python3` is first on PATH; PySpark reads the variable when the context starts
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName("flightline-features")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.default.parallelism", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
    )
    if settings.spark_use_delta_spark:
        builder = builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension").config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_delta(spark: SparkSession, settings: Settings, table: str, version: int) -> DataFrame:
    """One exact version of a bronze table as a Spark DataFrame."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    from flightline.data.lake import table_path

    path = str(table_path(settings, table))
    if settings.spark_use_delta_spark:
        return spark.read.format("delta").option("versionAsOf", version).load(path)
    try:
        uris = DeltaTable(path, version=version).file_uris()
    except (TableNotFoundError, DeltaError) as exc:
        raise NotFoundError(f"bronze table {table!r} version {version} not found at {path}; run extract") from exc
    return spark.read.option("basePath", path).parquet(*uris)


def flight_facts(flights: DataFrame) -> DataFrame:
    """Per flight: keys, schedule and when each fact about it became known (the point-in-time inputs).

    Label and outcome time follow ``marts.flights``: cancelled when no departure or no arrival was
    recorded; delayed when cancelled, diverted (no arrival delay) or 15+ minutes late.
    """
    from pyspark.sql import functions as f

    sched = f.col("scheduled_departure_at")
    cancelled = f.col("dep_time").isNull() | f.col("arr_time").isNull()
    delayed = cancelled | f.col("arr_delay").isNull() | (f.col("arr_delay") >= 15)
    minutes = f.expr("INTERVAL 1 MINUTE")
    flown = f.coalesce(f.col("dep_delay"), f.lit(0)) + f.coalesce(f.col("air_time"), f.lit(0)) + 30
    return flights.where(sched.isNotNull()).select(
        f.col("carrier").alias("carrier_code"),
        f.col("origin").alias("origin_airport_code"),
        f.col("dest").alias("dest_airport_code"),
        f.concat_ws("-", "origin", "dest").alias("route_code"),
        f.col("tailnum").alias("tail_number"),
        f.col("distance").cast("double").alias("distance_miles"),
        sched.alias("scheduled_departure_at"),
        delayed.cast("int").alias("is_delayed"),
        f.when(cancelled, sched).otherwise(sched + flown * minutes).alias("outcome_known_at"),
        f.when(
            f.col("dep_time").isNotNull() & f.col("dep_delay").isNotNull(), sched + f.col("dep_delay") * minutes
        ).alias("departed_at"),
        f.col("dep_delay").cast("double").alias("dep_delay_minutes"),
        f.when(~cancelled, f.col("arr_delay")).cast("double").alias("arrival_delay_minutes"),
    )


def _grid(spark: SparkSession, keys: DataFrame, start: dt.datetime, end: dt.datetime, step_s: int) -> DataFrame:
    """Every key at every bucket start in [start, end], as ``bucket`` (index) and ``feature_at``."""
    from pyspark.sql import functions as f

    n = int((end - start).total_seconds() // step_s) + 1
    base = int(start.timestamp())
    buckets = spark.range(n).select(
        f.col("id").alias("bucket"), f.timestamp_seconds(f.lit(base) + f.col("id") * step_s).alias("feature_at")
    )
    return keys.crossJoin(buckets)


def _bucket(column: str, start: dt.datetime, step_s: int) -> Column:
    from pyspark.sql import functions as f

    return f.floor((f.unix_timestamp(column) - int(start.timestamp())) / step_s).cast("long")


def _rolling_rates(
    spark: SparkSession,
    facts: DataFrame,
    key: str,
    prefix: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
    step_s: int,
    windows: dict[str, int],
) -> DataFrame:
    """Delay rate and count of outcomes known in the ``w`` buckets before each grid point."""
    from pyspark.sql import Window
    from pyspark.sql import functions as f

    known = facts.where(f.col("outcome_known_at").isNotNull() & f.col(key).isNotNull())
    counts = known.groupBy(key, _bucket("outcome_known_at", start, step_s).alias("bucket")).agg(
        f.count("*").alias("n"), f.sum("is_delayed").alias("n_delayed")
    )
    grid = _grid(spark, known.select(key).distinct(), start, end, step_s)
    rows = grid.join(counts, [key, "bucket"], "left").fillna(0, subset=["n", "n_delayed"])
    out = [f.col(key), f.col("feature_at")]
    for suffix, width in windows.items():
        frame = Window.partitionBy(key).orderBy("bucket").rangeBetween(-width, -1)
        n, delayed = f.sum("n").over(frame), f.sum("n_delayed").over(frame)
        out += [
            f.when(n > 0, delayed / n).alias(f"{prefix}_delay_rate_{suffix}"),
            f.coalesce(n, f.lit(0)).cast("double").alias(f"{prefix}_flights_{suffix}"),
        ]
    return rows.select(*out)


def _origin_hourly(spark: SparkSession, facts: DataFrame, start: dt.datetime, end: dt.datetime) -> DataFrame:
    """Recent congestion at the origin: outcome rates over hours, and departures' mean delay."""
    from pyspark.sql import Window
    from pyspark.sql import functions as f

    key, hour = "origin_airport_code", 3600
    rates = _rolling_rates(
        spark,
        facts,
        key,
        "origin",
        start=start,
        end=end,
        step_s=hour,
        windows={f"{h}h": h for h in F.HOURLY_WINDOWS_HOURS},
    )
    departed = facts.where(f.col("departed_at").isNotNull())
    deps = departed.groupBy(key, _bucket("departed_at", start, hour).alias("bucket")).agg(
        f.count("*").alias("n_dep"), f.sum("dep_delay_minutes").alias("sum_dep_delay")
    )
    width = F.DEPARTURE_WINDOW_HOURS
    frame = Window.partitionBy(key).orderBy("bucket").rangeBetween(-width, -1)
    grid = _grid(spark, facts.select(key).distinct(), start, end, hour)
    dep_rows = grid.join(deps, [key, "bucket"], "left").fillna(0, subset=["n_dep", "sum_dep_delay"])
    n = f.sum("n_dep").over(frame)
    dep_features = dep_rows.select(
        key,
        "feature_at",
        f.when(n > 0, f.sum("sum_dep_delay").over(frame) / n).alias(f"origin_mean_dep_delay_{width}h"),
        f.coalesce(n, f.lit(0)).cast("double").alias(f"origin_departures_{width}h"),
    )
    return rates.join(dep_features, [key, "feature_at"], "inner")


def _plane_recent(facts: DataFrame) -> DataFrame:
    """A plane's latest known departure and arrival delays, stamped when each becomes known."""
    from pyspark.sql import Window
    from pyspark.sql import functions as f

    with_tail = facts.where(f.col("tail_number").isNotNull())
    departures = with_tail.where(f.col("departed_at").isNotNull()).select(
        "tail_number",
        f.col("departed_at").alias("known_at"),
        f.col("dep_delay_minutes").alias("dep"),
        f.lit(None).cast("double").alias("arr"),
    )
    arrived = f.col("arrival_delay_minutes").isNotNull() & f.col("outcome_known_at").isNotNull()
    arrivals = with_tail.where(arrived).select(
        "tail_number",
        f.col("outcome_known_at").alias("known_at"),
        f.lit(None).cast("double").alias("dep"),
        f.col("arrival_delay_minutes").alias("arr"),
    )
    events = departures.unionByName(arrivals)
    upto = Window.partitionBy("tail_number").orderBy("known_at").rowsBetween(Window.unboundedPreceding, 0)
    state = events.select(
        "tail_number",
        "known_at",
        f.last("dep", ignorenulls=True).over(upto).alias("plane_last_dep_delay_minutes"),
        f.last("arr", ignorenulls=True).over(upto).alias("plane_last_arrival_delay_minutes"),
    )
    # several facts known at the same instant: keep the state after all of them
    last = Window.partitionBy("tail_number", "known_at").orderBy(
        f.col("plane_last_dep_delay_minutes").isNull(), f.col("plane_last_arrival_delay_minutes").isNull()
    )
    latest = state.withColumn("_n", f.row_number().over(last)).where("_n = 1").drop("_n")
    return latest.select(
        "tail_number",
        (f.col("known_at") + f.expr(f"INTERVAL {int(EVENT_DELAY.total_seconds())} SECONDS")).alias("feature_at"),
        "plane_last_dep_delay_minutes",
        "plane_last_arrival_delay_minutes",
    )


def compute(spark: SparkSession, settings: Settings, versions: dict[str, int]) -> dict[str, pd.DataFrame]:
    """Compute every feature table from the given bronze versions (pandas frames, ready to write)."""
    from pyspark.sql import functions as f

    flights = read_delta(spark, settings, "flights", versions["flights"])
    planes = read_delta(spark, settings, "planes", versions["planes"])
    facts = flight_facts(flights).cache()
    bounds = facts.agg(f.min("scheduled_departure_at"), f.max("scheduled_departure_at")).first()
    if bounds is None or bounds[0] is None:
        raise NotFoundError(f"bronze flights version {versions['flights']} has no flights to featurize")
    first, last = bounds[0].replace(tzinfo=dt.UTC), bounds[1].replace(tzinfo=dt.UTC)
    day_start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    day_end = dt.datetime(last.year, last.month, last.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    hour_end = last.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)

    frames: dict[str, DataFrame] = {}
    for prefix, key in F.DAILY_KEYS.items():
        frames[f"{prefix}_daily"] = _rolling_rates(
            spark,
            facts,
            key,
            prefix,
            start=day_start,
            end=day_end,
            step_s=86400,
            windows={f"{d}d": d for d in F.DAILY_WINDOWS_DAYS},
        )
    frames["origin_hourly"] = _origin_hourly(spark, facts, day_start, hour_end)
    frames["plane_recent"] = _plane_recent(facts)
    static = f.lit(STATIC_FEATURE_AT.replace(tzinfo=None)).cast("timestamp")
    frames["plane_attributes"] = (
        planes.where(f.col("tailnum").isNotNull())
        .select(
            f.col("tailnum").alias("tail_number"),
            static.alias("feature_at"),
            f.col("year").cast("double").alias("plane_year_built"),
            f.col("seats").cast("double").alias("plane_seats"),
        )
        .dropDuplicates(["tail_number"])
    )
    frames["route_attributes"] = facts.groupBy("route_code").agg(
        static.alias("feature_at"), f.max("distance_miles").alias("distance_miles")
    )
    result = {}
    for name, frame in frames.items():
        columns = [TABLES[name], "feature_at", *F.FEATURE_VIEWS[name]]
        result[name] = frame.select(*columns).toPandas()
    facts.unpersist()
    return result


def write_tables(settings: Settings, tables: dict[str, pd.DataFrame], *, created_at: dt.datetime) -> dict[str, int]:
    """Replace each ``features.<table>`` with its frame (one transaction per table); return row counts."""
    from flightline.platform.database import connect

    counts = {}
    with connect(settings, settings.warehouse_db) as conn:
        conn.execute(f"create schema if not exists {SCHEMA}")
        conn.commit()
        for name, frame in tables.items():
            key = TABLES[name]
            feature_cols = [c for c in frame.columns if c not in (key, "feature_at")]
            ddl = ", ".join(f'"{c}" double precision' for c in feature_cols)
            table = f"{SCHEMA}.{name}"
            with conn.transaction():
                conn.execute(f"drop table if exists {table}")
                conn.execute(
                    f'create table {table} ("{key}" text not null, feature_at timestamptz not null, '
                    f'created_at timestamptz not null, {ddl}, primary key ("{key}", feature_at))'
                )
                data = frame.assign(created_at=created_at)[[key, "feature_at", "created_at", *feature_cols]]
                data["feature_at"] = _utc(data["feature_at"])
                buffer = io.StringIO()
                data.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S+00")
                columns = ", ".join(f'"{c}"' for c in data.columns)
                with conn.cursor().copy(f"copy {table} ({columns}) from stdin with (format csv)") as copy:
                    copy.write(buffer.getvalue())
                conn.execute(f"create index on {table} (feature_at)")
            conn.execute(f"analyze {table}")
            counts[name] = len(frame)
    return counts


def _utc(column: pd.Series) -> pd.Series:
    import pandas as pd

    values = pd.to_datetime(column)
    return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")


def featurize(settings: Settings, versions: dict[str, int]) -> dict[str, int]:
    """Compute the windowed features from bronze ``versions`` and replace the feature tables.

    Returns:
        Rows written per feature table.
    """
    started = time.monotonic()
    spark = spark_session(settings)
    try:
        tables = compute(spark, settings, versions)
    finally:
        spark.stop()
    counts = write_tables(settings, tables, created_at=dt.datetime.now(dt.UTC))
    log.info("featurize: %s rows in %.1fs from %s", counts, time.monotonic() - started, versions)
    return counts
