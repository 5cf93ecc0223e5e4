"""Platform smoke check: a task runs under the scheduler and reaches PostgreSQL and MLflow.

Triggered by `flightline up`'s tests and useful after any change to the platform's settings:
if this DAG fails, no pipeline can succeed.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["platform"],
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=10)},
)
def platform_smoke() -> None:
    @task
    def check_stores() -> dict[str, bool]:
        from flightline.platform import database, mlflow_server
        from flightline.platform.config import get_settings

        settings = get_settings()
        report = {"postgres": database.is_healthy(settings), "mlflow": mlflow_server.is_healthy(settings)}
        unhealthy = [name for name, healthy in report.items() if not healthy]
        if unhealthy:
            raise RuntimeError(f"unreachable from an Airflow task: {', '.join(unhealthy)}")
        return report

    check_stores()


dag_object = platform_smoke()

if __name__ == "__main__":
    dag_object.test()
