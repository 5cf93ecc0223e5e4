"""Feast, wrapped: apply the repo, materialize, read training sets offline (serving reads the online
store through flightline.features.online).

The repo's ``feature_store.yaml`` names its connections as ``${FLIGHTLINE_*}`` variables; here they
are filled from the settings (no environment needed), so the same repo runs on any platform.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from flightline.features import definitions as F
from flightline.platform.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from flightline.platform.config import Settings

log = logging.getLogger(__name__)

_VAR = re.compile(r"\$\{(\w+)\}")

ENTITY_META_COLUMNS = ("flight_id", "scheduled_departure_at", "event_timestamp", "month", F.LABEL)
"""Columns a training set carries besides the features and entity keys."""


def import_feast_without_torch() -> None:
    """Import Feast with torch hidden: the platform never asks Feast for tensors.

    ``feast.torch_wrapper`` imports torch whenever it is installed (it is, for the embeddings), and every
    process that talks to MLflow imports Feast too: MLflow's request-header plugins load Feast's entry
    point. So :func:`get_store` and :func:`flightline.models.registry.client` call this first. A router replica
    then starts ~2 s sooner and holds ~180 MB less, and so does each DAG task that uses Feast or MLflow.
    Only Feast's ``to_tensor`` fails, with Feast's own error; torch itself stays importable afterwards.
    """
    if "feast" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import feast  # noqa: F401
    finally:
        del sys.modules["torch"]


def config_values(settings: Settings) -> dict[str, str]:
    """The ``${VAR}`` values of feature_store.yaml for these settings."""
    return settings.connection_env()


def get_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on ``settings.feature_repo_dir`` with connections from the settings."""
    import_feast_without_torch()
    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    path = settings.feature_repo_dir / "feature_store.yaml"
    if not path.exists():
        raise NotFoundError(f"no feature_store.yaml in {settings.feature_repo_dir}; set FLIGHTLINE_PROJECT_DIR")
    values = {**os.environ, **config_values(settings)}
    text = _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), path.read_text())
    config = RepoConfig(**yaml.safe_load(text))
    config.repo_path = settings.feature_repo_dir
    return FeatureStore(repo_path=str(settings.feature_repo_dir), config=config)


def apply(settings: Settings) -> dict[str, list[str]]:
    """``feast apply`` the repo (idempotent: unchanged objects are left as they are).

    Returns:
        The registered feature views and feature services.
    """
    store = get_store(settings)
    from feast.repo_operations import apply_total

    cwd, repo = os.getcwd(), str(settings.feature_repo_dir)
    sys.path.insert(0, repo)
    try:  # apply_total chdirs into the repo and imports its files as top-level modules
        apply_total(store.config, settings.feature_repo_dir, skip_source_validation=True)
    finally:
        os.chdir(cwd)
        sys.path.remove(repo)
    store = get_store(settings)
    return {
        "feature_views": sorted(v.name for v in store.list_feature_views()),
        "on_demand_feature_views": sorted(v.name for v in store.list_on_demand_feature_views()),
        "feature_services": sorted(s.name for s in store.list_feature_services()),
    }


def materialize(settings: Settings, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Load the latest value per entity in [start, end] into the online store (upsert: reruns are safe).

    Views without a ttl hold facts known in advance, stamped long before any window: they are
    loaded from their first row, or serving would miss them.
    """
    from flightline.features.spark import STATIC_FEATURE_AT

    store = get_store(settings)
    online = [v for v in store.list_feature_views() if v.online]
    static = [v.name for v in online if not v.ttl]
    windowed = [v.name for v in online if v.ttl]
    if static:
        store.materialize(start_date=STATIC_FEATURE_AT - dt.timedelta(days=1), end_date=end, feature_views=static)
    if windowed:
        store.materialize(start_date=start, end_date=end, feature_views=windowed)
    log.info("materialized %s from %s and %s from %s, to %s", windowed, start, static, STATIC_FEATURE_AT, end)
    return static + windowed


def entity_query(start: dt.datetime, end: dt.datetime) -> str:
    """SQL of the entity rows: every flight scheduled in [start, end), stamped at its prediction time.

    The entity timestamp is departure minus :data:`flightline.features.definitions.PREDICTION_LEAD`: Feast's
    point-in-time join takes, per feature view, the latest row at or before it.
    """
    lead = int(F.PREDICTION_LEAD.total_seconds())
    return (
        "select flight_id, carrier_code, origin_airport_code, dest_airport_code, route_code, "
        "coalesce(tail_number, '') as tail_number, scheduled_departure_at, "
        f"scheduled_departure_at - interval '{lead} seconds' as event_timestamp, month, "
        f"is_delayed::int as {F.LABEL} "
        "from marts.flights "
        f"where scheduled_departure_at >= '{start.astimezone(dt.UTC).isoformat()}' "
        f"and scheduled_departure_at < '{end.astimezone(dt.UTC).isoformat()}'"
    )


def historical_features(settings: Settings, entity_df: str | pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of the feature service for the entity rows (kept even with no value).

    Args:
        entity_df: SQL or a frame with the entity keys, ``scheduled_departure_at`` (request data of the
            on-demand view) and ``event_timestamp`` (the prediction time).

    Returns:
        The entity columns plus :data:`flightline.features.definitions.FEATURE_NAMES`, sorted by flight.
    """
    store = get_store(settings)
    service = _service(store)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    for name in F.FEATURE_NAMES:
        frame[name] = frame[name].astype("float64")
    keys = [c for c in (*ENTITY_META_COLUMNS, *F.ENTITY_COLUMNS) if c in frame.columns]
    order = "flight_id" if "flight_id" in frame.columns else "event_timestamp"
    return frame[keys + F.FEATURE_NAMES].sort_values(order, kind="stable").reset_index(drop=True)


TRAINING_SET_CHUNK = dt.timedelta(days=7)
"""Span of flights per point-in-time query. Feast's join compares each entity row with every feature
row of its key in the query's span, so the cost per row grows with the span (measured on June 2013:
94 us/row for weeks, 118 for a month, 230 for a quarter); below a week the per-query overhead wins."""


def flight_features(settings: Settings, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Features and labels of every flight scheduled in [start, end), sorted by flight.

    Runs one query per :data:`TRAINING_SET_CHUNK`, two at a time (PostgreSQL runs one while the other's
    rows are converted in Python).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    bounds, lower = [], start
    while lower < end:
        bounds.append((lower, min(lower + TRAINING_SET_CHUNK, end)))
        lower = bounds[-1][1]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="training-set") as pool:
        chunks = list(pool.map(lambda span: historical_features(settings, entity_query(*span)), bounds))
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    return frame.sort_values("flight_id", kind="stable").reset_index(drop=True) if len(frame) else frame


def _service(store: FeatureStore) -> Any:
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(F.FEATURE_SERVICE)
    except FeatureServiceNotFoundException as exc:
        raise NotFoundError(
            f"feature service {F.FEATURE_SERVICE!r} not in the Feast registry; run flightline.features.store.apply"
        ) from exc
