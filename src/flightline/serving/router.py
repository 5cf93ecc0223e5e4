"""Online serving rules: traffic policy, sticky routing, shadow, circuit breakers, fallbacks, logging.

Ray Serve deployments in ``ray_serve/`` only hold state and call these:

- :class:`TrafficPolicy` lives in Postgres (``serving.traffic_policy``, one row per change with who,
  when and why); the router re-reads the latest row every ``serve_policy_poll_s``, so a change needs
  no redeploy.
- :func:`assign_variant` buckets a sticky key with SHA-256 (stable across processes and restarts):
  one flight (or user) always sees the same variant for a given experiment.
- :class:`CircuitBreaker` opens after consecutive failures or timeouts and lets one trial call through
  after ``reset_after_s``.
- A policy may carry a rollback guard: :func:`rollback_reason` checks the challenger's failures in this
  process (:class:`ChallengerTally`) and :func:`roll_back_async` records the champion-only policy.
- :class:`Router` scores a batch: features once, rows grouped by variant, challenger failures
  re-scored by the champion, champion failures answered with the documented fallback probability,
  shadow scoring in the background (logged, never returned).
- :class:`PredictionLogger` writes ``serving.prediction_log`` from a background thread, off the
  response path.
- :class:`AliasedModel` follows an MLflow alias: a new version is loaded beside the old one and
  swapped in atomically, so requests in flight finish on the model they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from flightline.config import Settings
    from flightline.online_features import ServedFeatures
    from flightline.schemas_serving import FlightIn, PolicyIn, PredictionOut

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, FALLBACK = "champion", "challenger", "fallback"
BUCKETS = 10_000

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
    from flightline.database import connect

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


def prune_prediction_log(
    settings: Settings, *, keep_days: int | None = None, batch_rows: int = 20_000
) -> dict[str, Any]:
    """Delete prediction-log rows older than ``keep_days`` (default: ``serve_log_retention_days``).

    The log grows by ~1.7 KB a request, ~6 GB an hour at 1,000 requests a second. Rows go in batches of
    ``batch_rows``, each its own transaction, so the router's COPY never waits long on the delete, and a
    rerun deletes only what is still there.

    Returns:
        The cutoff and the number of rows deleted.
    """
    from flightline.database import connect
    from flightline.errors import FlightlineConfigError

    keep = settings.serve_log_retention_days if keep_days is None else keep_days
    if keep < 1:
        raise FlightlineConfigError(f"keep_days must be at least 1, got {keep}")
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=keep)
    ensure_tables(settings)
    deleted = 0
    with connect(settings, settings.warehouse_db, autocommit=True) as conn:
        while True:
            batch = conn.execute(
                "delete from serving.prediction_log where id = any(array("
                "select id from serving.prediction_log where logged_at < %s limit %s))",
                (cutoff, batch_rows),
            ).rowcount
            deleted += batch
            if batch < batch_rows:
                break
        # a write id is needed while its write may be retried: seconds, or an outage's length, never a day
        conn.execute("delete from serving.prediction_log_write where written_at < now() - interval '1 day'")
    log.info("pruned %d prediction-log rows logged before %s", deleted, cutoff.isoformat())
    return {"cutoff": cutoff.isoformat(), "keep_days": keep, "deleted": deleted}


# ---- traffic policy ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrafficPolicy:
    """Who answers: the champion alone, a sticky canary or A/B share to the challenger, plus shadow."""

    mode: str = "champion"
    challenger_percent: float = 0.0
    shadow: bool = False
    experiment: str = "default"
    set_by: str = "default"
    reason: str = "no policy set"
    set_at: str | None = None
    id: int | None = None
    rollback_failure_percent: float | None = None
    rollback_min_requests: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


DEFAULT_POLICY = TrafficPolicy()


def bucket(key: str, experiment: str) -> int:
    """The key's bucket in [0, BUCKETS): SHA-256, so every process and restart agrees."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(policy: TrafficPolicy, key: str) -> str:
    """The variant a sticky key is routed to under the policy."""
    if policy.mode == "champion" or policy.challenger_percent <= 0:
        return CHAMPION
    return CHALLENGER if bucket(key, policy.experiment) < policy.challenger_percent * BUCKETS / 100 else CHAMPION


_POLICY_LOCK = "select pg_advisory_xact_lock(hashtext('flightline.serving.policy'))"
"""Taken by every policy insert, so a guard's check of the latest policy and its rollback are one step."""


def set_policy(settings: Settings, change: PolicyIn) -> TrafficPolicy:
    """Record a policy change (the router picks it up within ``serve_policy_poll_s``)."""
    from flightline.database import connect
    from flightline.errors import FlightlineConfigError

    if change.mode == "champion" and change.challenger_percent:
        raise FlightlineConfigError(
            "mode 'champion' sends no traffic to the challenger; use canary or ab with a percent"
        )
    if change.mode != "champion" and not change.challenger_percent:
        raise FlightlineConfigError(
            f"mode {change.mode!r} with 0 % sends no traffic to the challenger; give a percent above 0, "
            "or use champion"
        )
    if change.rollback_failure_percent is not None and not change.challenger_percent:
        raise FlightlineConfigError(
            "a rollback guard watches the requests routed to the challenger, and this policy routes none"
        )
    ensure_tables(settings)
    record = change.as_record()
    if record["rollback_failure_percent"] is None:
        record["rollback_min_requests"] = None
    with connect(settings, settings.warehouse_db, autocommit=True) as conn, conn.transaction():
        conn.execute(_POLICY_LOCK)  # a guard's rollback then never lands after, and over, this change
        conn.execute(
            "insert into serving.traffic_policy (mode, challenger_percent, shadow, experiment, set_by, reason, "
            "rollback_failure_percent, rollback_min_requests) values (%(mode)s, %(challenger_percent)s, %(shadow)s, "
            "%(experiment)s, %(set_by)s, %(reason)s, %(rollback_failure_percent)s, %(rollback_min_requests)s)",
            record,
        )
        latest = conn.execute(_POLICY_SQL, (1,)).fetchone()  # this change: the lock orders the inserts
    assert latest is not None  # the row inserted above
    return _policy(latest)


_POLICY_SELECT = (
    "select id, mode, challenger_percent, shadow, experiment, set_by, reason, set_at, rollback_failure_percent, "
    "rollback_min_requests from serving.traffic_policy"
)
_POLICY_SQL = f"{_POLICY_SELECT} order by id desc limit %s"


def _policy(row: tuple[Any, ...]) -> TrafficPolicy:
    return TrafficPolicy(
        id=row[0], mode=row[1], challenger_percent=row[2], shadow=row[3], experiment=row[4],
        set_by=row[5], reason=row[6], set_at=row[7].isoformat(), rollback_failure_percent=row[8],
        rollback_min_requests=row[9],
    )


def current_policy(settings: Settings) -> TrafficPolicy:
    return (policy_history(settings, limit=1) or [DEFAULT_POLICY])[0]


def policy_history(settings: Settings, *, limit: int = 20) -> list[TrafficPolicy]:
    """The latest policy changes, newest first."""
    from flightline.database import connect

    ensure_tables(settings)
    with connect(settings, settings.warehouse_db) as conn:
        return [_policy(row) for row in conn.execute(_POLICY_SQL, (limit,)).fetchall()]


def experiment_policies(conn: Any, experiment: str) -> list[TrafficPolicy]:
    """Every policy change made under an experiment name, oldest first (a canary ramp keeps its name)."""
    return [_policy(row) for row in conn.execute(f"{_POLICY_SELECT} where experiment = %s order by id", (experiment,))]


async def read_policy_async(conn: Any) -> TrafficPolicy:
    cursor = await conn.execute(_POLICY_SQL, (1,))
    row = await cursor.fetchone()
    return _policy(row) if row else DEFAULT_POLICY


# ---- rollback guard ------------------------------------------------------------------------------
GUARD_ACTOR = "flightline rollback guard"


@dataclass
class ChallengerTally:
    """Requests the current policy routed to the challenger in this process, and how many it failed
    (an error, a timeout or an open circuit: the champion answered them instead)."""

    policy_id: int | None = None
    routed: int = 0
    failed: int = 0

    def count(self, policy_id: int | None, routed: int, failed: int) -> None:
        if policy_id != self.policy_id:  # a new policy starts a new count
            self.policy_id, self.routed, self.failed = policy_id, 0, 0
        self.routed += routed
        self.failed += failed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rollback_reason(policy: TrafficPolicy, tally: ChallengerTally) -> str | None:
    """Why the policy's guard rolls it back now, or None (no guard, too few requests, or few failures).

    The guard is operational, not statistical: it stops a challenger that fails, which the breaker and
    the champion only hide from callers. Which model predicts better is ``flightline serve report``'s
    question; checking a verdict again and again would inflate its false alarms.
    """
    limit, minimum = policy.rollback_failure_percent, policy.rollback_min_requests or 1
    if limit is None or tally.policy_id != policy.id or tally.routed < minimum:
        return None
    failed_percent = 100 * tally.failed / tally.routed
    if failed_percent <= limit:
        return None
    return (f"rollback guard of policy {policy.id}: the challenger failed {tally.failed} of the {tally.routed} "
            f"requests routed to it in one router replica ({failed_percent:.1f} % > {limit:g} %)")


async def roll_back_async(conn: Any, policy: TrafficPolicy, reason: str) -> bool:
    """Record the champion-only policy (same experiment, shadow off) if ``policy`` is still the latest;
    True when this call recorded it. Replicas that trip together write one row: a lock orders them, and
    the later ones find a newer policy."""
    async with conn.transaction():
        await conn.execute(_POLICY_LOCK)
        cursor = await conn.execute(
            "insert into serving.traffic_policy (mode, challenger_percent, shadow, experiment, set_by, reason) "
            "select 'champion', 0, false, %s, %s, %s where (select max(id) from serving.traffic_policy) = %s",
            (policy.experiment, GUARD_ACTOR, reason, policy.id),
        )
        return cursor.rowcount == 1


# ---- circuit breaker -----------------------------------------------------------------------------
class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures; open -> one trial call after ``reset_after_s``.

    While open, calls are refused at once instead of waiting for a timeout on every request.
    """

    def __init__(self, name: str, *, failures: int, reset_after_s: float, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self._threshold = failures
        self._reset_after = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self._reset_after else "open"

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Closed with no failures: after a success, or when another model version takes over the alias."""
        self._failures, self._opened_at, self._trial = 0, None, False

    def abandoned(self) -> None:
        """A call was cancelled before it answered (its caller gave up): no verdict, and a half-open trial's
        slot is free again; kept, it would refuse every later call."""
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "consecutive_failures": self._failures}


# ---- prediction log ------------------------------------------------------------------------------
class PredictionLogger:
    """Queue of log rows, written in batches by one daemon thread (a full queue drops and counts).

    PostgreSQL down or the connection cut: the batch is kept and retried with backoff while new rows
    queue, so an outage shorter than the queue (20,000 rows, ~12 s at 1,600 req/s) loses nothing. Each
    write commits with its id (``serving.prediction_log_write``), so a retry of one that committed just
    before its connection died writes nothing: every row is logged once.

    The thread also serializes the rows (orjson: ~1.3 us for a row's features, ``json`` ~22 us) and
    writes them with COPY (about a fifth of ``executemany``'s CPU per row). In a serving process it shares
    the GIL with the event loop, and a thread that keeps the GIL holds it for the whole switch interval
    (5 ms) whenever the loop wants it back: so it also lets go every ``_YIELD_EVERY`` rows. Bare app, 8
    clients, alternating rounds: p99 24-28 ms with ``json`` and no yielding; 13-22 ms now, as with no log.
    """

    COLUMNS = (
        "request_id", "model_name", "variant", "model_version", "is_shadow", "fallback_reason", "request",
        "features", "prediction", "latency_ms", "policy_id", "routed_variant", "sticky_key",
    )
    _OPTIONAL = frozenset({"fallback_reason", "policy_id", "routed_variant", "sticky_key"})
    _REQUIRED = frozenset(COLUMNS) - _OPTIONAL
    _COPY = f"copy serving.prediction_log ({', '.join(COLUMNS)}) from stdin"  # plain lower-case names
    _YIELD_EVERY = 20

    def __init__(self, settings: Settings, *, max_queue: int = 20_000, flush_s: float = 0.2) -> None:
        self._settings = settings
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queue)  # None: close() was called
        self._flush_s = flush_s
        self._closed = False
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, row: dict[str, Any]) -> None:
        """Queue a row (keys: COLUMNS; those in ``_OPTIONAL`` may be left out)."""
        missing = self._REQUIRED.difference(row)
        if missing:  # here, not in the writer thread, where it would cost the whole batch
            raise ValueError(f"prediction log row lacks {sorted(missing)}")
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write every queued row now and end the thread; True when it finished within ``timeout_s``.

        The thread is a daemon, which the process's exit kills: without this, the rows of the requests
        answered in the last flush interval before a replica stops (scale-down, redeploy) were lost.
        Rows logged after this are dropped and counted.
        """
        if not self._closed:
            self._closed = True
            with contextlib.suppress(queue.Full):  # full: the thread is writing, and stops once it is empty
                self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @classmethod
    def _record(cls, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            orjson.dumps(row[name], default=str).decode() if name in ("request", "features") else row.get(name)
            for name in cls.COLUMNS
        )

    def _run(self) -> None:
        import os

        import psycopg

        from flightline.database import connect

        conn = None
        batch = _LogBatch([])  # taken from the queue, not yet written: kept through an outage
        outage = 0
        while batch.rows or not (self._closed and self._queue.empty()):
            if not batch.rows:
                batch = _LogBatch(self._next_batch())
                if not batch.rows:
                    continue
            try:
                if conn is None or conn.closed:
                    # the process id tells a replica's connection apart in pg_stat_activity
                    conn = connect(self._settings, self._settings.warehouse_db, autocommit=True,
                                   application_name=f"flightline prediction log {os.getpid()}")
                self._write(conn, batch)
                if outage:
                    log.warning("prediction log: PostgreSQL answers again; writing resumed")
                outage = 0
            except psycopg.OperationalError:  # server gone or restarting, connection cut: the rows wait
                conn = None
                if self._closed:  # shutting down: no time to wait for it
                    log.exception("could not write %d prediction log rows while closing", len(batch.rows))
                    self.dropped += len(batch.rows)
                    batch.rows.clear()
                    continue
                if not outage:
                    log.exception("prediction log: PostgreSQL unreachable; keeping %d rows, retrying",
                                  len(batch.rows))
                outage += 1
                time.sleep(min(0.25 * 2 ** (outage - 1), 5.0))  # meanwhile new rows queue (up to max_queue)
            except Exception:  # noqa: BLE001 - the log must never take serving down; it reports and goes on
                log.exception("could not write %d prediction log rows", len(batch.rows))
                self.dropped += len(batch.rows)
                batch.rows.clear()
                conn = None
        if conn is not None:
            conn.close()

    def _next_batch(self) -> list[dict[str, Any]]:
        """The rows queued within one flush interval of the first (at most 1,000); [] after close()."""
        first = self._queue.get()
        if not self._closed:
            time.sleep(self._flush_s)
        batch = [] if first is None else [first]
        while len(batch) < 1000:
            try:
                row = self._queue.get_nowait()
            except queue.Empty:
                break
            if row is not None:
                batch.append(row)
        return batch

    def _write(self, conn: Any, batch: _LogBatch) -> None:
        """Write the batch and empty it. A batch PostgreSQL refuses for its content (a value it cannot store)
        is written again one row at a time, so that only the rows at fault are dropped and counted. A
        connection error propagates, leaving the rows not yet written in ``batch`` for the caller's retry,
        which writes them under the same write ids."""
        import psycopg

        if not batch.one_by_one:
            try:
                self._write_once(conn, batch.id, batch.rows)
                batch.rows.clear()
                return
            except psycopg.OperationalError:
                raise
            except Exception as refused:  # noqa: BLE001 - some row's value: find which
                log.warning("PostgreSQL refused %d prediction log rows together (%s); writing them one by one",
                            len(batch.rows), refused)
                batch.one_by_one = True
        dropped = 0
        while batch.rows:
            try:
                self._write_once(conn, f"{batch.id}/{batch.done}", batch.rows[:1])
            except psycopg.OperationalError:
                raise
            except Exception:  # noqa: BLE001 - counted and reported below
                dropped += 1
                self.dropped += 1
            del batch.rows[0]
            batch.done += 1
        if dropped:
            log.error("dropped %d prediction log rows PostgreSQL refused", dropped)

    def _write_once(self, conn: Any, write_id: str, rows: list[dict[str, Any]]) -> None:
        """COPY the rows in one transaction with their write id, unless a write with that id committed."""
        with conn.transaction():
            claimed = conn.execute("insert into serving.prediction_log_write (write_id) values (%s) "
                                   "on conflict do nothing", (write_id,)).rowcount
            if not claimed:
                log.warning("prediction log: %d rows were written before the connection broke; not written again",
                            len(rows))
                return
            with conn.cursor() as cur, cur.copy(self._COPY) as writer:
                for i, row in enumerate(rows, 1):
                    writer.write_row(self._record(row))
                    if i % self._YIELD_EVERY == 0:
                        time.sleep(0)  # lets the event loop take the GIL now, not a switch interval later
        self.written += len(rows)


@dataclass
class _LogBatch:
    """Prediction-log rows taken from the queue together, and how far writing them got."""

    rows: list[dict[str, Any]]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    one_by_one: bool = False  # refused as a whole: each row is its own write (id ``<id>/<index>``)
    done: int = 0  # rows written or dropped one by one


# ---- models by alias -----------------------------------------------------------------------------
class AliasedModel:
    """The model an MLflow alias points to, reloaded when the alias moves.

    ``current`` is replaced in one assignment after the new version is loaded, so a request that took
    the old ``(model, version)`` finishes on it: no downtime, nothing dropped.

    Versions are loaded from a local copy (``<home>/serve/model-cache/<model>/v<N>``), and the version each
    alias last served is recorded there: a replica that starts while the registry does not answer (a
    restart, a scale-out under load), or while its alias points at a version that cannot serve, serves
    that version, and says so, instead of the fallback. Versions no alias serves leave the cache after
    an hour unused.
    """

    def __init__(self, settings: Settings, alias: str) -> None:
        self.settings = settings
        self.alias = alias
        self.current: tuple[Any, str] | None = None
        self.error: str | None = None
        self.rows_scored = 0
        self._count_lock = threading.Lock()
        self._stop_following = threading.Event()
        self._refused: tuple[str, str] | None = None  # (version, why): not loaded again every poll

    def refresh(self) -> bool:
        """Load the alias's version if it moved; True when a new version was swapped in."""
        from flightline import registry
        from flightline.errors import FlightlineError, ServiceError

        try:
            try:
                version = registry.alias_version(self.settings, self.alias)
            except ServiceError as exc:
                if self.current is None:
                    return self._serve_cached(f"the registry did not answer: {exc}")
                self.error = f"{type(exc).__name__}: {exc}"  # the loaded version goes on serving
                return False
            if version is None:
                self.error = f"alias {self.alias!r} of {self.settings.model_name!r} is not set"
                return False
            number = str(version.version)
            if self.current is not None and self.current[1] == number:
                self.error = None  # an earlier failed read, or a refused version the alias left again
                return False
            if self._refused is not None and self._refused[0] == number:
                self._refuse(*self._refused)
                return False
            registry.client(self.settings)
            try:
                model = load_servable(str(self._cached_copy(number)))
            except FlightlineError as exc:
                self._refuse(number, str(exc))
                log.error("%s: %s", self.alias, self.error)
                # a replica starting now has nothing loaded: the version this alias served before, if cached
                return self.current is None and self._serve_cached(f"v{number} is not served: {exc}")
            self.current = (_fast_path(model) or model, number)
            self.error = None
            self._record_served(number)
            self._prune_cache()
            log.info("%s now serves %s v%s", self.alias, self.settings.model_name, number)
            return True
        except Exception as exc:  # noqa: BLE001 - keep serving the loaded version; report why in health
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("could not refresh %s", self.alias)
            return False

    @property
    def _cache(self) -> Path:
        return self.settings.home / "serve" / "model-cache" / self.settings.model_name

    def _cached_copy(self, number: str) -> Path:
        """The version's files in the local cache, downloaded from the registry the first time, and marked
        as in use now (its modification time), so that no replica's :meth:`_prune_cache` takes it mid-load."""
        import os
        import shutil
        import tempfile

        import mlflow

        local = self._cache / f"v{number}"
        if (local / "MLmodel").exists():
            os.utime(local)
        else:
            self._cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".v{number}-", dir=self._cache))
            try:
                uri = f"models:/{self.settings.model_name}/{number}"
                downloaded = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(staging)))
                with contextlib.suppress(OSError):  # another replica's copy got there first: either will do
                    downloaded.rename(local)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return local

    def _record_served(self, number: str) -> None:
        """Write down which version this alias serves, for a replica that starts with the registry down."""
        record = self._cache / f"{self.alias}.json"
        staging = record.with_suffix(f".{uuid.uuid4().hex}.tmp")
        staging.write_text(orjson.dumps({"version": number, "at": dt.datetime.now(dt.UTC).isoformat()}).decode())
        staging.replace(record)

    def _prune_cache(self, in_use_s: float = 3600.0) -> None:
        """Delete the cached versions no alias record names and no replica used in the last ``in_use_s``
        (a version being downloaded or loaded now), and leftover downloads: a model retrained daily would
        otherwise leave a version a day (~1 MB each for the trained LightGBM) behind every replica's host."""
        import shutil

        recorded = set()
        for record in self._cache.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                recorded.add(f"v{orjson.loads(record.read_bytes())['version']}")
        cutoff = time.time() - in_use_s
        for entry in self._cache.iterdir():
            stale = entry.name.startswith(".v") or (entry.name.startswith("v") and entry.name not in recorded)
            with contextlib.suppress(OSError):  # another replica pruned it first
                if entry.is_dir() and stale and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)
                    log.info("model cache: removed %s (no alias serves it)", entry.name)

    def _serve_cached(self, why: str) -> bool:
        """Serve the version this alias last served here, from the local cache, when the registry cannot say
        which version to serve, or names one that cannot serve and nothing is loaded yet."""
        from flightline.errors import FlightlineError

        try:
            record = orjson.loads((self._cache / f"{self.alias}.json").read_bytes())
            model = load_servable(str(self._cache / f"v{record['version']}"))
        except (OSError, ValueError, KeyError, FlightlineError) as exc:
            self.error = f"{why}; no cached version to serve ({type(exc).__name__}: {exc})"
            return False
        version = str(record["version"])
        self.current = (_fast_path(model) or model, version)
        self.error = f"{why}; serving v{version} from the local cache (this alias's version at {record['at']})"
        log.warning("%s: %s", self.alias, self.error)
        return True

    def _refuse(self, number: str, why: str) -> None:
        """Remember a version that cannot serve, and report it: the loaded version goes on serving."""
        self._refused = (number, why)
        kept = f"; still serving v{self.current[1]}" if self.current else ""
        self.error = f"v{number} is not served: {why}{kept}"

    def follow(self, poll_s: float, on_swap: Callable[[], None] | None = None) -> threading.Thread:
        """Re-read the alias every ``poll_s`` in a daemon thread (started here, returned for health checks),
        until :meth:`stop_following`; ``on_swap`` runs after each new version is swapped in."""

        def loop() -> None:
            while not self._stop_following.wait(poll_s):
                if self.refresh() and on_swap is not None:
                    on_swap()

        thread = threading.Thread(target=loop, name=f"follow-{self.alias}", daemon=True)
        thread.start()
        return thread

    def stop_following(self) -> None:
        """End the :meth:`follow` thread (a model deployment switched to another alias drops this one)."""
        self._stop_following.set()

    def info(self) -> dict[str, Any]:
        current = self.current
        return {"alias": self.alias, "version": current[1] if current else None, "error": self.error,
                "rows_scored": self.rows_scored}

    def loaded(self) -> tuple[Any, str]:
        """The (model, version) loaded now; a caller that pins it is not affected by a swap mid-call."""
        from flightline.errors import NotFoundError

        current = self.current
        if current is None:
            raise NotFoundError(self.error or f"no model loaded for alias {self.alias!r}")
        return current

    def predict(self, rows: list[list[float]], loaded: tuple[Any, str] | None = None) -> tuple[list[float], str]:
        """Delay probabilities for model rows (columns of flightline.features.FEATURE_NAMES), from ``loaded``
        (pinned by the caller) or the version loaded now."""
        model, version = loaded or self.loaded()
        probabilities = predict_rows(model, rows)
        with self._count_lock:  # colocated models score in worker threads
            self.rows_scored += len(rows)
        return probabilities, version


class _BoosterPredictor:
    """A LightGBM booster called on a float array: the pyfunc wrapper's DataFrame and schema checks cost
    ~5x the prediction itself for one row. Used only when the logged signature's columns are exactly
    FEATURE_NAMES in order, so the booster sees what the pyfunc would hand it."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, rows: Any) -> Any:
        import numpy as np

        return self.booster.predict(np.asarray(rows, dtype="float64"))


def is_booster(model: Any) -> bool:
    """Whether a loaded model is the LightGBM fast path: bounded C work, no user Python code."""
    return isinstance(model, _BoosterPredictor)


def _fast_path(model: Any) -> _BoosterPredictor | None:
    from flightline.features import FEATURE_NAMES

    schema = model.metadata.get_input_schema()
    if "lightgbm" not in model.metadata.flavors or schema is None or schema.input_names() != FEATURE_NAMES:
        return None
    raw = model.get_raw_model()
    return _BoosterPredictor(raw) if type(raw).__name__ == "Booster" else None


def predict_rows(model: Any, rows: list[list[float]]) -> list[float]:
    """Probabilities from a pyfunc model for rows in FEATURE_NAMES order (batch inference uses the same)."""
    import numpy as np
    import pandas as pd

    from flightline.features import FEATURE_NAMES

    frame = rows if isinstance(model, _BoosterPredictor) else pd.DataFrame(rows, columns=FEATURE_NAMES, dtype="float64")
    output = np.asarray(model.predict(frame), dtype=float)
    return [float(p) for p in (output[:, -1] if output.ndim == 2 else output)]


def load_servable(uri: str) -> Any:
    """Load a model for serving, or raise FlightlineError when it cannot serve. Its inputs are checked from
    the MLmodel file first, so a foreign model's flavor (and its imports: torch) is never loaded."""
    import mlflow

    check_inputs(mlflow.models.Model.load(uri).signature)
    model = mlflow.pyfunc.load_model(uri)
    probe_model(model)
    return model


_PROBE_DEPARTURE = dt.datetime(2013, 6, 1, 16, 0, tzinfo=dt.UTC)


def probe_model(model: Any, *, timeout_s: float = 60.0) -> None:
    """Raise unless the model scores the rows serving sends it to one probability each, within ``timeout_s``
    (a model that hangs would otherwise hang the alias follower, and no later move would reach serving).
    :func:`load_servable` checks the model's inputs before it loads the model and calls this.

    The probe rows are an unknown flight's (every stored feature at its fallback, as with the store down)
    and one with every stored feature 0. Serving follows an alias wherever it moves, by our CLI or in
    MLflow's UI: a version with other inputs, or that fails on missing values, would turn every answer
    into the fallback, so neither the registry nor the router puts one in front of traffic.

    Raises:
        FlightlineError: naming what the model did wrong.
    """
    import math

    from flightline.errors import FlightlineError
    from flightline.features import FEATURE_NAMES, REQUEST_FEATURES, departure_clocks
    from flightline.online_features import FALLBACK_VALUES

    clock = dict(zip(REQUEST_FEATURES, departure_clocks([_PROBE_DEPARTURE])[0], strict=True))
    rows = [[clock.get(name, FALLBACK_VALUES.get(name, math.nan)) for name in FEATURE_NAMES],
            [clock.get(name, 0.0) for name in FEATURE_NAMES]]
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            outcome["answer"] = predict_rows(model, rows)
        except Exception as exc:  # noqa: BLE001 - any failure of the model's own code is the answer
            outcome["error"] = exc

    # a daemon thread: a call that hangs is left behind, and never holds up the process's exit
    thread = threading.Thread(target=probe, name="servable-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise FlightlineError(f"it did not answer the rows serving sends in {timeout_s:g} s")
    if "error" in outcome:
        exc = outcome["error"]
        said = " ".join(str(exc).split())
        said = said if len(said) <= 400 else f"{said[:200]} ... {said[-200:]}"  # MLflow's end says what
        raise FlightlineError(f"it fails on the rows serving sends: {type(exc).__name__}: {said}") from exc
    probabilities = outcome["answer"]
    if wrong := not_probabilities(probabilities, len(rows)):
        raise FlightlineError(f"it {wrong}")


def check_inputs(signature: Any) -> None:
    """Raise when a model's logged signature names inputs that serving does not send (read before loading
    it: the MLmodel file is enough). A model without a signature is left to the probe."""
    from flightline.errors import FlightlineError
    from flightline.features import FEATURE_NAMES

    schema = signature.inputs if signature is not None else None
    if schema is None or not schema.has_input_names():
        return
    unknown = [name for name in schema.input_names() if name not in FEATURE_NAMES]
    if unknown:
        raise FlightlineError(f"it takes inputs serving does not have: {', '.join(map(str, unknown[:10]))}"
                              f"{' ...' if len(unknown) > 10 else ''} (serving sends the {len(FEATURE_NAMES)} "
                              "columns of flightline.features.FEATURE_NAMES)")


def not_probabilities(answer: list[float], rows: int) -> str | None:
    """What is wrong with a model's answer for ``rows`` rows, or None when it is one probability a row."""
    if len(answer) == rows and all(0.0 <= p <= 1.0 for p in answer):  # NaN is refused too
        return None
    shown = f"{answer[:4]}{' ...' if len(answer) > 4 else ''}"
    return f"answered {shown} for {rows} rows, not one probability in [0, 1] each"


# ---- the router's core ---------------------------------------------------------------------------
Scorer = Callable[[list[list[float]]], Awaitable[tuple[list[float], str]]]
"""Scores model rows; returns probabilities and the model version that answered."""


class Router:
    """Routes a batch of flights to champion/challenger with breakers, fallbacks, shadow and logging."""

    def __init__(
        self,
        settings: Settings,
        *,
        scorers: dict[str, Scorer],
        read_features: Callable[[list[Any]], Awaitable[list[ServedFeatures]]],
        policy: Callable[[], TrafficPolicy],
        logger: PredictionLogger,
    ) -> None:
        self.settings = settings
        self._scorers = scorers
        self._read_features = read_features
        self._policy = policy
        self._logger = logger
        self.breakers = {
            name: CircuitBreaker(
                name, failures=settings.serve_breaker_failures, reset_after_s=settings.serve_breaker_reset_s
            )
            for name in scorers
        }
        self.tally = ChallengerTally()
        self._background: set[asyncio.Task[None]] = set()

    async def _score(self, variant: str, rows: list[list[float]]) -> tuple[list[float] | None, str | None, str | None]:
        """(probabilities, version, None) or (None, None, why it failed); never raises."""
        breaker = self.breakers[variant]
        if not breaker.allow():
            return None, None, f"{variant} circuit open"
        try:
            # a timeout scope, not wait_for: no task of its own per call (a scorer that never suspends costs
            # nothing extra)
            async with asyncio.timeout(self.settings.serve_model_timeout_s):
                probs, version = await self._scorers[variant](rows)
        except asyncio.CancelledError:
            breaker.abandoned()
            raise
        except TimeoutError:
            breaker.failure()
            return None, None, f"{variant} timed out after {self.settings.serve_model_timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any model failure is routed around, and reported
            breaker.failure()
            return None, None, f"{variant} failed: {type(exc).__name__}: {str(exc)[:200]}"
        if wrong := not_probabilities(probs, len(rows)):  # a 500 (JSON has no NaN) or a wrong answer: a failure
            breaker.failure()
            return None, None, f"{variant} {wrong}"
        breaker.success()
        return probs, version, None

    async def predict(self, flights: list[FlightIn], *, received_at: list[float] | None = None) -> list[PredictionOut]:
        """``received_at``: each flight's arrival (perf_counter) when it waited for a batch; the logged
        latency then counts that wait."""
        from flightline.schemas_serving import FeatureReport, PredictionOut

        began = time.perf_counter()
        policy = self._policy()
        served = await self._read_features([f.to_request() for f in flights])
        keys = [f.sticky_key() for f in flights]
        routed = [assign_variant(policy, key) for key in keys]
        groups: dict[str, list[int]] = {}
        for i, variant in enumerate(routed):
            groups.setdefault(variant, []).append(i)
        results: list[tuple[float, str | None, str, str | None]] = [(0.0, None, FALLBACK, None)] * len(flights)
        outcomes = await asyncio.gather(
            *(self._score(v, [served[i].vector() for i in idx]) for v, idx in groups.items())
        )
        retry: list[int] = []
        reasons: dict[int, str] = {}
        for (variant, idx), (probs, version, error) in zip(groups.items(), outcomes, strict=True):
            for k, i in enumerate(idx):
                if probs is not None:
                    results[i] = (probs[k], version, variant, None)
                elif variant == CHALLENGER:
                    retry.append(i)
                    reasons[i] = error or ""
                else:
                    results[i] = (self.settings.serve_fallback_probability, None, FALLBACK, error)
        if retry:  # the challenger never fails a request: its rows go to the champion
            probs, version, error = await self._score(CHAMPION, [served[i].vector() for i in retry])
            for k, i in enumerate(retry):
                if probs is not None:
                    results[i] = (probs[k], version, CHAMPION, reasons[i])
                else:
                    results[i] = (self.settings.serve_fallback_probability, None, FALLBACK, f"{reasons[i]}; {error}")
        if CHALLENGER in groups:
            self.tally.count(policy.id, len(groups[CHALLENGER]), failed=len(retry))
        finished = time.perf_counter()
        out = []
        for i, flight in enumerate(flights):
            probability, version, variant, why = results[i]
            request_id = uuid.uuid4().hex
            feats = served[i].as_json()
            out.append(
                PredictionOut(
                    request_id=request_id,
                    delay_probability=probability,
                    model_name=self.settings.model_name,
                    model_version=version,
                    variant=variant,  # type: ignore[arg-type]
                    fallback_reason=why,
                    features=FeatureReport(**{k: v for k, v in feats.items() if k != "values"}),
                )
            )
            self._logger.log(
                {
                    "request_id": request_id, "model_name": self.settings.model_name, "variant": variant,
                    "model_version": version, "is_shadow": False, "fallback_reason": why,
                    "request": flight.model_dump(mode="json"), "features": feats, "prediction": probability,
                    "latency_ms": (finished - (received_at[i] if received_at else began)) * 1000,
                    "policy_id": policy.id, "routed_variant": routed[i], "sticky_key": keys[i],
                }
            )
        if policy.shadow and CHALLENGER in self._scorers:
            shadowed = [i for i, p in enumerate(out) if p.variant != CHALLENGER]
            if shadowed:
                task = asyncio.create_task(self._shadow(flights, keys, served, out, shadowed, policy))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return out

    async def _shadow(
        self, flights: list[FlightIn], keys: list[str], served: list[ServedFeatures], out: list[PredictionOut],
        idx: list[int], policy: TrafficPolicy,
    ) -> None:
        """Score with the challenger off the response path; log, never return."""
        began = time.perf_counter()
        probs, version, error = await self._score(CHALLENGER, [served[i].vector() for i in idx])
        latency_ms = (time.perf_counter() - began) * 1000
        for k, i in enumerate(idx):
            self._logger.log(
                {
                    "request_id": out[i].request_id, "model_name": self.settings.model_name, "variant": CHALLENGER,
                    "model_version": version, "is_shadow": True, "fallback_reason": error,
                    "request": flights[i].model_dump(mode="json"), "features": served[i].as_json(),
                    "prediction": probs[k] if probs is not None else None, "latency_ms": latency_ms,
                    "policy_id": policy.id, "sticky_key": keys[i],
                }
            )
