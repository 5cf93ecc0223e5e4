"""Serving maintenance: keep the prediction log to its retention window.

Every request the router answers (and every shadow score) is a row of ``serving.prediction_log``, ~1.7 KB
each, so the table grows without bound under traffic. Each daily run deletes the rows older than
``serve_log_retention_days`` (90 by default), or the ``keep_days`` param of a manual run; a rerun deletes
only what is still older. Experiment reports (``flightline serve report``) see what is kept.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    schedule="0 5 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # a retention policy that someone must first switch on is not one
    max_active_runs=1,
    tags=["serving", "maintenance"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2)},
    params={
        "keep_days": Param(
            None, type=["null", "integer"], minimum=1, title="Days of prediction log to keep",
            description="empty: the platform's serve_log_retention_days",
        )
    },
)
def serving_maintenance() -> None:
    @task
    def prune_prediction_log(params: dict[str, object] | None = None) -> dict:
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from flightline.platform.config import get_settings
        from flightline.platform.dag_conf import check_run_conf
        from flightline.platform.errors import FlightlineConfigError
        from flightline.serving.prediction_log import prune_prediction_log

        assert params is not None
        keep = params.get("keep_days")
        try:
            check_run_conf(get_current_context())
            return prune_prediction_log(get_settings(), keep_days=None if keep is None else int(keep))
        except FlightlineConfigError as exc:  # a bad keep_days: retries cannot help
            raise AirflowFailException(str(exc)) from exc

    prune_prediction_log()


serving_maintenance_dag = serving_maintenance()

if __name__ == "__main__":
    serving_maintenance_dag.test()
