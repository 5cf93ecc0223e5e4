"""Online features for serving: one SQL round trip to Feast's online store, with Feast's definitions.

Feast's ``get_online_features`` costs several milliseconds of Python per call (registry lookups, proto
conversions, one query per feature view). Serving needs the same values in well under a millisecond,
so :class:`OnlineFeatureReader` reads the tables Feast's Postgres online store writes directly:

- the feature views, their join keys, ttl and table names come from the Feast registry (the repo in
  ``feature_repo/``), and entity keys are serialized with Feast's own ``serialize_entity_key``;
- all views are read in one ``UNION ALL`` query; values are decoded with Feast's ``ValueProto``.

So the definitions stay Feast's; only the read path is shorter. ``benchmarks/bench_serving.py`` compares
the two and ``tests/serving`` checks that they return the same values.

Request-time features are computed by :func:`flightline.features.definitions.request_features`, the function the
Feast on-demand view runs in training (here memoized per departure:
:func:`~flightline.features.definitions.departure_clocks`). A value the store lacks, or one older than its
view's ttl at the flight's prediction time, becomes an explicit fallback (NaN: the model's missing-value branch, exactly
what the point-in-time join gives training for such a row) and is reported as missing or stale.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flightline.features import definitions as F

if TYPE_CHECKING:
    from flightline.platform.config import Settings

REQUEST_VIEW = "departure_clock"

_NO_TTL = dt.timedelta(0)

FALLBACK_VALUES: dict[str, float] = {}
"""Per-feature fallback for a missing or stale value; a feature not listed falls back to NaN, the
model's learned missing branch (LightGBM routes NaN as it did for training rows without a value)."""


@dataclass(frozen=True)
class ViewSpec:
    """What serving needs of one Feast feature view."""

    name: str
    table: str
    join_key: str
    ttl: dt.timedelta
    features: tuple[str, ...]


@dataclass
class ServedFeatures:
    """A model input row and the provenance of each value (reported in every response and log)."""

    values: dict[str, float]
    fetched: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    defaulted: dict[str, float | None] = field(default_factory=dict)
    store_error: str | None = None

    def vector(self) -> list[float]:
        """Values in the model's column order."""
        return [self.values[name] for name in F.FEATURE_NAMES]

    def as_json(self) -> dict[str, Any]:
        """JSON-safe: NaN becomes null."""
        return {
            "values": {k: _json_float(v) for k, v in self.values.items()},
            "fetched": self.fetched,
            "computed": self.computed,
            "missing": self.missing,
            "stale": self.stale,
            "defaulted": self.defaulted,
            "store_error": self.store_error,
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def view_specs(settings: Settings) -> list[ViewSpec]:
    """The stored feature views of the model, read from the Feast registry (run ``feast apply`` first)."""
    from flightline.features.store import get_store

    store = get_store(settings)
    from feast.infra.online_stores.helpers import compute_table_id

    versioning = bool(getattr(store.config.registry, "enable_online_feature_view_versioning", False))
    specs = []
    for name, names in F.FEATURE_VIEWS.items():
        if name == REQUEST_VIEW:
            continue
        view = store.get_feature_view(name)
        specs.append(
            ViewSpec(
                name=name,
                table=compute_table_id(store.config.project, view, versioning),
                join_key=view.entity_columns[0].name,
                ttl=view.ttl or dt.timedelta(0),
                features=tuple(names),
            )
        )
    return specs


class OnlineFeatureReader:
    """Builds the one-round-trip query and decodes its rows; the caller owns the connection.

    Split so that the async router, the bare benchmark app and batch jobs share one implementation.
    """

    def __init__(self, specs: list[ViewSpec], *, schema: str = "online", key_version: int = 3) -> None:
        from psycopg import sql

        self.specs = specs
        self.schema = schema
        self._key_version = key_version
        # one parameter per join key, not per view: views sharing a key (origin: daily, hourly, weather)
        # read the same array, sent and dumped once
        parts = [
            sql.SQL(
                "select {i}::int2, entity_key, feature_name, value, event_ts from {t} where entity_key = any({k})"
            ).format(i=sql.Literal(i), t=sql.Identifier(schema, spec.table), k=sql.Placeholder(spec.join_key))
            for i, spec in enumerate(specs)
        ]
        # rendered once: executing a Composed re-renders it (quoting every identifier) on each call. Without
        # a connection psycopg quotes identifiers itself, the same way libpq does ("a""b"); str, not bytes,
        # so the connection still encodes it in its own client encoding
        self.query: str = sql.SQL(" union all ").join(parts).as_string(None)

    @classmethod
    def from_settings(cls, settings: Settings) -> OnlineFeatureReader:
        from flightline.features.store import get_store

        store = get_store(settings)
        online = store.config.online_store
        return cls(
            view_specs(settings),
            schema=getattr(online, "db_schema", None) or "public",
            key_version=store.config.entity_key_serialization_version,
        )

    def params(self, requests: list[F.FlightRequest]) -> tuple[list[list[bytes]], dict[str, list[bytes]]]:
        """Per view, the serialized entity key of each request; per join key, the distinct keys to query."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        rows = [request.entity_row() for request in requests]
        # several views share a join key (origin: daily, hourly, weather; plane; route): serialize each
        # (join key, value) once per call
        serialized: dict[tuple[str, str], bytes] = {}
        per_view: list[list[bytes]] = []
        for spec in self.specs:
            keys = []
            for row in rows:
                value = str(row[spec.join_key])
                entity = serialized.get((spec.join_key, value))
                if entity is None:
                    key = EntityKey(join_keys=[spec.join_key], entity_values=[Value(string_val=value)])
                    entity = serialize_entity_key(key, entity_key_serialization_version=self._key_version)
                    serialized[spec.join_key, value] = entity
                keys.append(entity)
            per_view.append(keys)
        distinct: dict[str, set[bytes]] = {}
        for spec, keys in zip(self.specs, per_view, strict=True):
            distinct.setdefault(spec.join_key, set()).update(keys)
        return per_view, {join_key: sorted(keys) for join_key, keys in distinct.items()}

    def assemble(
        self, requests: list[F.FlightRequest], keys: list[list[bytes]], rows: list[tuple[Any, ...]]
    ) -> list[ServedFeatures]:
        """Model rows from the query's rows: fetched, stale (older than ttl at prediction time) or missing."""
        from feast.protos.feast.types.Value_pb2 import Value

        found: dict[tuple[int, bytes], dict[str, tuple[float | None, dt.datetime]]] = {}
        proto = Value()  # reused: ParseFromString clears it, and only a float is kept of each row
        for view_index, entity_key, feature_name, blob, event_ts in rows:
            proto.ParseFromString(bytes(blob))
            kind = proto.WhichOneof("val")
            value = float(getattr(proto, kind)) if kind and kind != "null_val" else None
            found.setdefault((int(view_index), bytes(entity_key)), {})[feature_name] = (value, event_ts)
        clocks = F.departure_clocks([request.scheduled_departure_at for request in requests])
        served = []
        for i, request in enumerate(requests):
            moment = F.prediction_time(request.scheduled_departure_at)
            row = ServedFeatures(values=dict(zip(F.REQUEST_FEATURES, clocks[i], strict=True)))
            row.computed.extend(F.REQUEST_FEATURES)
            for v, spec in enumerate(self.specs):
                stored = found.get((v, keys[v][i]), {})
                expires = spec.ttl > _NO_TTL
                for name in spec.features:
                    value, event_ts = stored.get(name, (None, None))
                    if value is None or math.isnan(value):
                        self._fallback(row, name, row.missing)
                    elif expires and event_ts is not None and moment - event_ts > spec.ttl:
                        self._fallback(row, name, row.stale)
                    else:
                        row.values[name] = value
                        row.fetched.append(name)
            served.append(row)
        return served

    def unavailable(self, requests: list[F.FlightRequest], error: str) -> list[ServedFeatures]:
        """Rows when the store cannot be read: every stored feature falls back, and the error is reported."""
        served = self.assemble(requests, [[b""] * len(requests) for _ in self.specs], [])
        for row in served:
            row.store_error = error
        return served

    @staticmethod
    def _fallback(row: ServedFeatures, name: str, reason: list[str]) -> None:
        value = FALLBACK_VALUES.get(name, float("nan"))
        row.values[name] = value
        reason.append(name)
        row.defaulted[name] = _json_float(value)

    def read(self, conn: Any, requests: list[F.FlightRequest]) -> list[ServedFeatures]:
        """Synchronous read on a psycopg connection (batch jobs, the bare benchmark app)."""
        keys, distinct = self.params(requests)
        rows = conn.execute(self.query, distinct).fetchall()
        return self.assemble(requests, keys, rows)

    async def read_async(self, conn: Any, requests: list[F.FlightRequest]) -> list[ServedFeatures]:
        """The same read on a psycopg AsyncConnection (the router)."""
        keys, distinct = self.params(requests)
        cursor = await conn.execute(self.query, distinct)
        return self.assemble(requests, keys, await cursor.fetchall())
