"""The serving schema in the warehouse: traffic policies, the prediction log and its write ids.

:func:`ensure_tables` creates or upgrades them once per text of :data:`DDL`; every writer calls it first.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

DDL = """
create schema if not exists serving;
create table if not exists serving.traffic_policy (
    id bigserial primary key,
    mode text not null check (mode in ('champion', 'canary', 'ab')),
    challenger_percent double precision not null check (challenger_percent between 0 and 100),
    shadow boolean not null,
    experiment text not null,
    set_by text not null,
    reason text not null,
    set_at timestamptz not null default now()
);
create table if not exists serving.prediction_log (
    id bigserial primary key,
    request_id text not null,
    logged_at timestamptz not null default now(),
    model_name text not null,
    variant text not null,
    model_version text,
    is_shadow boolean not null,
    fallback_reason text,
    request jsonb not null,
    features jsonb not null,
    prediction double precision,
    latency_ms double precision not null,
    policy_id bigint
);
-- one row per committed write of prediction-log rows (a batch, or one row of a batch PostgreSQL refused as a
-- whole), in the write's transaction: a retry whose first attempt committed before its connection broke finds
-- its id here and writes nothing, so each row is logged once. The log's writer locks this table, then
-- prediction_log: so does this DDL (its index before the alters below), or the two can deadlock.
create table if not exists serving.prediction_log_write (
    write_id text primary key,
    written_at timestamptz not null default now()
);
create index if not exists prediction_log_write_at on serving.prediction_log_write (written_at);
-- added after the first release (this upgrades older tables): the variant the policy routed the request
-- to, whoever answered it (null for shadow rows), and the key that routing hashed; experiment reports
-- group by them
alter table serving.prediction_log add column if not exists routed_variant text;
alter table serving.prediction_log add column if not exists sticky_key text;
-- a policy's rollback guard (null: none): back to the champion alone once more than this percent of the
-- requests routed to the challenger failed, counted from rollback_min_requests of them
alter table serving.traffic_policy add column if not exists rollback_failure_percent double precision
    check (rollback_failure_percent between 0 and 100);
alter table serving.traffic_policy add column if not exists rollback_min_requests integer
    check (rollback_min_requests >= 1);
create index if not exists prediction_log_logged_at on serving.prediction_log (logged_at);
create index if not exists prediction_log_policy on serving.prediction_log (policy_id);
-- the hash of each DDL text applied here (see ensure_tables)
create table if not exists serving.schema_applied (
    ddl_sha256 text primary key,
    applied_at timestamptz not null default now()
);
"""
_DDL_SHA256 = hashlib.sha256(DDL.encode()).hexdigest()


def ensure_tables(settings: Settings) -> None:
    """Create or upgrade the policy and log tables, once per text of :data:`DDL`.

    Its ALTER TABLEs take an ACCESS EXCLUSIVE lock even when they change nothing. Run on every CLI call and
    replica start, they queued the prediction log's writes behind any long read of the log, and a replica
    starting under load could lose a deadlock to a running replica's log writer and fail to start. So the
    DDL runs only when ``serving.schema_applied`` lacks its hash (an advisory lock serializes concurrent
    starts); otherwise this reads one small table.
    """
    from flightline.platform.database import connect

    with connect(settings, settings.warehouse_db, autocommit=True) as conn:
        if _ddl_applied(conn):
            return
        conn.execute("select pg_advisory_lock(hashtext('flightline.serving.ddl'))")
        try:
            if not _ddl_applied(conn):
                with conn.transaction():
                    conn.execute(DDL)
                    conn.execute("insert into serving.schema_applied (ddl_sha256) values (%s)", (_DDL_SHA256,))
                log.info("serving tables created or upgraded (DDL %s)", _DDL_SHA256[:12])
        finally:
            conn.execute("select pg_advisory_unlock(hashtext('flightline.serving.ddl'))")


def _ddl_applied(conn: Any) -> bool:
    if conn.execute("select to_regclass('serving.schema_applied')").fetchone()[0] is None:
        return False
    return conn.execute("select exists (select 1 from serving.schema_applied where ddl_sha256 = %s)",
                        (_DDL_SHA256,)).fetchone()[0]
