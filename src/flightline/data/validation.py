"""The data quality gate: Great Expectations suites run against exact bronze Delta versions.

Suites live in ``great_expectations/`` (one per bronze table, ``bronze.<table>``); row counts are
checked against the previous successful run, which ``raw._validation_log`` in the warehouse
remembers. A failing batch raises :class:`~flightline.platform.errors.DataValidationError` with a report that
names each failed expectation, its column and what was observed.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from typing import TYPE_CHECKING, Any

from flightline.data import lake
from flightline.platform.errors import DataValidationError

if TYPE_CHECKING:
    import psycopg

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

GROWTH_PER_MONTH = 1.5
"""A cumulative table may grow by at most this fraction of its previous size per month since that
run (Jan -> Feb 2013 nearly doubles the flights; a growth far beyond that is a broken feed)."""

_LOG_TABLE = "raw._validation_log"
_LOG_DDL = f"""
create table if not exists {_LOG_TABLE} (
    table_name text not null,
    delta_version bigint not null,
    content_sha256 text,
    run_month date not null,
    row_count bigint not null,
    success boolean not null,
    report text,
    validated_at timestamptz not null default now()
)
"""


def validate_batch(settings: Settings, versions: dict[str, int], *, run_month: dt.date) -> dict[str, Any]:
    """Run each table's suite on its bronze version; record the outcome in the warehouse.

    Returns:
        ``{"success": True, "tables": {table: {"version", "rows", "expectations", "min_rows", "max_rows"}}}``

    Raises:
        DataValidationError: when any expectation fails; its ``report`` lists every failure.
    """
    from flightline.platform.database import connect

    context = _context(settings)
    data_end = lake.month_end_utc(run_month) - dt.timedelta(microseconds=1)
    summary: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    with connect(settings, settings.warehouse_db) as conn:
        _ensure_log(conn)
        previous = _previous_counts(conn, run_month)
        outcomes = []
        for table, version in versions.items():
            frame = _frame(settings, table, version)
            min_rows, max_rows = _row_bounds(previous.get(table), run_month)
            result = context.validation_definitions.get(f"bronze.{table}").run(
                batch_parameters={"dataframe": frame},
                expectation_parameters={"min_rows": min_rows, "max_rows": max_rows, "data_end": data_end},
                result_format="SUMMARY",
            )
            failed = [_describe(item) for item in result.results if not item.success]
            failures += [f"bronze.{table} (delta version {version}): {line}" for line in failed]
            summary[table] = {
                "version": version,
                "rows": len(frame),
                "expectations": len(result.results),
                "min_rows": min_rows,
                "max_rows": max_rows,
            }
            outcomes.append((table, version, len(frame), failed))
        success = not failures
        with conn.transaction():
            for table, version, rows, failed in outcomes:
                # a rerun with the same outcome adds no row
                conn.execute(
                    f"insert into {_LOG_TABLE} (table_name, delta_version, content_sha256, run_month, row_count,"
                    " success, report) select %(table)s, %(version)s, %(sha)s, %(month)s, %(rows)s, %(success)s,"
                    f" %(report)s where not exists (select 1 from {_LOG_TABLE} where table_name = %(table)s"
                    " and delta_version = %(version)s and run_month = %(month)s and success = %(success)s)",
                    {
                        "table": table,
                        "version": version,
                        "sha": lake.content_hash(settings, table, version),
                        "month": run_month.replace(day=1),
                        "rows": rows,
                        "success": success,
                        "report": "\n".join(failed) or None,
                    },
                )
    if failures:
        total = sum(item["expectations"] for item in summary.values())
        raise DataValidationError(
            f"batch for {run_month:%Y-%m} failed validation: {len(failures)} of {total} expectations failed; "
            "nothing downstream ran. Fix the source data (or the suite in great_expectations/) and rerun.",
            report="\n".join(f"  - {line}" for line in failures),
        )
    log.info("batch for %s passed validation: %s", f"{run_month:%Y-%m}", summary)
    return {"success": True, "tables": summary}


def _context(settings: Settings) -> Any:
    """The file context in great_expectations/, with analytics off (GX reads the variable at import)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx.get_context(mode="file", context_root_dir=str(settings.great_expectations_dir))


def _frame(settings: Settings, table: str, version: int) -> Any:
    """A bronze version as pandas, with nullable integers so that int columns stay int."""
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
    return lake.read_table(settings, table, version).to_pandas(types_mapper=mapping.get)


def _row_bounds(previous: tuple[int, dt.date] | None, run_month: dt.date) -> tuple[int, int | None]:
    """Rows must not shrink from the previous successful run nor grow beyond GROWTH_PER_MONTH."""
    if previous is None:
        return 1, None
    rows, month = previous
    months = max(1, (run_month.year - month.year) * 12 + run_month.month - month.month)
    return rows, math.ceil(rows * (1 + GROWTH_PER_MONTH * months))


def _ensure_log(conn: psycopg.Connection) -> None:
    conn.execute("create schema if not exists raw")
    conn.execute(_LOG_DDL)
    conn.commit()


def _previous_counts(conn: psycopg.Connection, run_month: dt.date) -> dict[str, tuple[int, dt.date]]:
    """Row count and month of each table's latest successful run for an earlier month."""
    rows = conn.execute(
        f"select distinct on (table_name) table_name, row_count, run_month from {_LOG_TABLE}"
        " where success and run_month < %s order by table_name, run_month desc, validated_at desc",
        (run_month.replace(day=1),),
    ).fetchall()
    return {name: (int(count), month) for name, count, month in rows}


def _describe(item: Any) -> str:
    """One failed expectation as a line: what was expected, on which column, what was observed."""
    config = item.expectation_config
    kwargs = {key: value for key, value in config.kwargs.items() if key not in ("batch_id", "column")}
    column = config.kwargs.get("column")
    where = f" column {column!r}" if column else ""
    expected = ", ".join(f"{key}={value}" for key, value in kwargs.items())
    result = item.result or {}
    if item.exception_info and item.exception_info.get("raised_exception"):
        observed = f"error: {item.exception_info.get('exception_message')}"
    elif "observed_value" in result:
        observed = f"observed {result['observed_value']}"
    else:
        sample = [_plain(value) for value in (result.get("partial_unexpected_list") or [])[:5]]
        observed = (
            f"{result.get('unexpected_count')} unexpected values "
            f"({result.get('unexpected_percent') or 0:.2f}%), e.g. {sample}"
        )
    return f"{config.type}{where}{f' ({expected})' if expected else ''}: {observed}"


def _plain(value: Any) -> Any:
    """Sample values as plain Python for the report (NaN and NA read as None)."""
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value
