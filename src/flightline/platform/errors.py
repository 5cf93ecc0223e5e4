"""Errors flightline raises on purpose.

    FlightlineError
    ├── FlightlineConfigError     a setting or secret is missing or wrong
    ├── ServiceError              a platform component failed to start, stop or answer
    │   └── PortInUseError        a component's port is taken by someone else
    ├── DataValidationError       a data batch failed its quality gate
    └── NotFoundError             a named object (model alias, collection, feature) does not exist
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any


class FlightlineError(Exception):
    """Base of every error flightline raises on purpose."""


class FlightlineConfigError(FlightlineError):
    """A setting or secret is missing or invalid."""


class ServiceError(FlightlineError):
    """A platform component failed; the message names the component and its log file."""

    def __init__(self, component: str, message: str, *, log: Path | None = None) -> None:
        self.component = component
        self.message = message
        self.log = log
        hint = f" (see {log})" if log else ""
        super().__init__(f"{component}: {message}{hint}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuilt from its fields, not from ``args`` (the formatted message), so that it survives pickling:
        a RetrievalService replica raising it reached the router as a TypeError, answered 500."""
        return functools.partial(type(self), log=self.log), (self.component, self.message)


class PortInUseError(ServiceError):
    """A component's port is already bound by a process flightline did not start."""


class DataValidationError(FlightlineError):
    """A data batch failed validation; ``report`` holds the readable failures."""

    def __init__(self, message: str, *, report: str | None = None) -> None:
        self.report = report
        super().__init__(message if not report else f"{message}\n{report}")


class NotFoundError(FlightlineError):
    """A named object does not exist."""
