"""`flightline rag eval` prints a table per mode and logs the metrics to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration


def test_rag_eval_prints_table_and_logs_to_mlflow(platform: Settings, scifact_subset: str) -> None:
    from mlflow.tracking import MlflowClient

    from flightline.cli.main import app

    result = CliRunner().invoke(app, ["rag", "eval", "--collection", scifact_subset, "--max-queries", "40"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["mode", "nDCG@10", "R@10", "R@100", "seconds"]
    assert [line.split()[0] for line in lines[1:4]] == ["dense", "lexical", "hybrid"]
    run_id = lines[-1].removeprefix("mlflow run ")
    metrics = MlflowClient(platform.mlflow_url).get_run(run_id).data.metrics
    assert metrics["eval_queries"] == 40
    assert 0.5 < metrics["hybrid_ndcg_at_10"] <= 1.0
    assert {f"{m}_recall_at_100" for m in ("dense", "lexical", "hybrid")} <= set(metrics)


def test_rag_eval_on_a_missing_collection_fails_with_a_hint(platform: Settings) -> None:
    from flightline.cli.main import app
    from flightline.platform.errors import NotFoundError

    result = CliRunner().invoke(app, ["rag", "eval", "--collection", "nope", "--no-record"])
    assert result.exit_code != 0
    assert isinstance(result.exception, NotFoundError)
    assert "collection 'nope' does not exist" in str(result.exception)


@pytest.mark.parametrize(
    ("args", "reason"), [([""], "at least 1 character"), (["q", "--mode", "semantic"], "'hybrid'")]
)
def test_rag_search_arguments_that_fail_the_api_schema_exit_2_with_the_reason(args: list[str], reason: str) -> None:
    """Through ``main()``, as the ``flightline`` script runs: pydantic's reason used to come under a traceback."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "flightline", "rag", "search", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: 1 validation error for SearchRequest") and reason in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["rag", "search", "prion"], ["serve", "traffic", "show"], ["serve", "report"]])
def test_commands_that_reach_postgres_say_so_in_one_line_when_it_does_not_answer(command: list[str]) -> None:
    """They printed psycopg's OperationalError under a traceback."""
    import os
    import subprocess
    import sys

    from flightline.platform.processes import free_port

    env = {**os.environ, "FLIGHTLINE_POSTGRES_PORT": str(free_port())}  # nothing listens there
    result = subprocess.run([sys.executable, "-m", "flightline", *command], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: postgres: connection failed") and "is the platform up?" in result.stderr
    assert "Traceback" not in result.stderr
