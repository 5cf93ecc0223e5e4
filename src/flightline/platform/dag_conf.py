"""A DAG run's conf, checked against the params its DAG declares.

Airflow takes any key in a run's conf (REST, CLI, the trigger form's JSON) and merges it into the params,
so a misspelt one (``learning_rat``, ``keep_dayz``) was ignored and the param's default used, silently. The
first task of each DAG calls :func:`check_run_conf`: such a run fails at once, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flightline.platform.errors import FlightlineConfigError


def check_run_conf(context: Mapping[str, Any]) -> None:
    """Raise FlightlineConfigError when the run's conf has a key that is none of the DAG's params."""
    dag = context["dag"]
    conf = context["dag_run"].conf or {}
    unknown = sorted(set(conf) - set(dag.params))
    if unknown:
        known = ", ".join(sorted(dag.params)) or "none"
        raise FlightlineConfigError(
            f"{dag.dag_id} has no param {', '.join(map(repr, unknown))} (its params: {known}); "
            "a misspelt key would be ignored and the param's default used"
        )
