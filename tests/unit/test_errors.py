"""Errors that cross process boundaries (Ray replicas, Airflow task results) must survive pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

from flightline.platform.errors import PortInUseError, ServiceError


def test_service_errors_unpickle_with_their_fields() -> None:
    for error in (ServiceError("postgres", "down"), PortInUseError("mlflow", "port taken", log=Path("/x/mlflow.log"))):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert (copy.component, copy.message, copy.log) == (error.component, error.message, error.log)
