"""The warehouse's ``raw`` schema: exact bronze Delta versions copied into PostgreSQL for dbt.

Each table is replaced inside one transaction (truncate and COPY, so dbt's staging views that read
it survive), and ``raw._load_log`` records which Delta version and content each table holds, so a
rerun with the same versions changes nothing.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

from flightline.data import lake

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

RAW_SCHEMA = "raw"

_LOAD_LOG = f"""
create table if not exists {RAW_SCHEMA}._load_log (
    table_name text not null,
    delta_version bigint not null,
    content_sha256 text,
    row_count bigint not null,
    loaded_at timestamptz not null default now()
)
"""


def load_raw(settings: Settings, versions: dict[str, int]) -> dict[str, int]:
    """Copy the given bronze versions into ``raw.<table>`` of the warehouse database.

    A table whose last load was this same content is left alone.

    Returns:
        The row count of each ``raw`` table after the load.
    """
    from flightline.platform.database import connect

    counts = {}
    with connect(settings, settings.warehouse_db) as conn:
        conn.execute(f"create schema if not exists {RAW_SCHEMA}")
        conn.execute(_LOAD_LOG)
        conn.commit()
        for table, version in versions.items():
            digest = lake.content_hash(settings, table, version)
            last = loaded_version(conn, table)
            if last is not None and last[0] == version and last[1] == digest and digest is not None:
                counts[table] = _count(conn, table)
                log.info("raw.%s already holds bronze version %s", table, version)
                continue
            data = lake.read_table(settings, table, version)
            with conn.transaction():
                _replace(conn, table, data)
                conn.execute(
                    f"insert into {RAW_SCHEMA}._load_log (table_name, delta_version, content_sha256, row_count)"
                    " values (%s, %s, %s, %s)",
                    (table, version, digest, data.num_rows),
                )
            counts[table] = data.num_rows
            log.info("raw.%s <- bronze version %s (%s rows)", table, version, data.num_rows)
    return counts


def loaded_versions(settings: Settings) -> dict[str, int]:
    """The bronze version each ``raw`` table holds now (empty before the first load)."""
    from flightline.platform.database import connect

    with connect(settings, settings.warehouse_db) as conn:
        exists = conn.execute("select to_regclass(%s)", (f"{RAW_SCHEMA}._load_log",)).fetchone()
        if exists is None or exists[0] is None:
            return {}
        rows = conn.execute(
            f"select distinct on (table_name) table_name, delta_version from {RAW_SCHEMA}._load_log"
            " order by table_name, loaded_at desc"
        ).fetchall()
    return {name: int(version) for name, version in rows}


def loaded_version(conn: psycopg.Connection, table: str) -> tuple[int, str | None] | None:
    """The (version, content hash) of the last load of one table, or None."""
    row = conn.execute(
        f"select delta_version, content_sha256 from {RAW_SCHEMA}._load_log where table_name = %s"
        " order by loaded_at desc limit 1",
        (table,),
    ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f'select count(*) from {RAW_SCHEMA}."{table}"').fetchone()
    return int(row[0]) if row else 0


def _pg_type(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_int64(arrow_type):
        return "bigint"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_date(arrow_type):
        return "date"
    return "text"


def _replace(conn: psycopg.Connection, table: str, data: pa.Table) -> None:
    """Make ``raw.<table>`` hold exactly ``data`` (call inside a transaction).

    Same columns: truncate and refill, so views on the table stay. Changed columns: drop (with the
    views on it, which the next ``dbt build`` recreates) and create.
    """
    from pyarrow import csv

    columns = [(field.name, _pg_type(field.type)) for field in data.schema]
    existing = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = %s and table_name = %s order by ordinal_position",
        (RAW_SCHEMA, table),
    ).fetchall()
    wanted = [(name, _information_schema_type(kind)) for name, kind in columns]
    qualified = f'{RAW_SCHEMA}."{table}"'
    if existing == wanted:
        conn.execute(f"truncate {qualified}")
    else:
        conn.execute(f"drop table if exists {qualified} cascade")
        definition = ", ".join(f'"{name}" {kind}' for name, kind in columns)
        conn.execute(f"create table {qualified} ({definition})")
    buffer = io.BytesIO()
    csv.write_csv(data, buffer, write_options=csv.WriteOptions(include_header=False, quoting_style="needed"))
    names = ", ".join(f'"{name}"' for name, _ in columns)
    with conn.cursor().copy(f"copy {qualified} ({names}) from stdin with (format csv)") as copy:
        view = buffer.getbuffer()
        for start in range(0, len(view), 1 << 20):
            copy.write(view[start : start + (1 << 20)])


def _information_schema_type(pg_type: str) -> str:
    return {
        "timestamptz": "timestamp with time zone",
        "timestamp": "timestamp without time zone",
    }.get(pg_type, pg_type)
