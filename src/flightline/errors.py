"""Errors flightline raises on purpose.

    FlightlineError
    ├── FlightlineConfigError     a setting or secret is missing or wrong
    ├── ServiceError              a platform component failed to start, stop or answer
    │   └── PortInUseError        a component's port is taken by someone else
    ├── DataValidationError       a data batch failed its quality gate
    └── NotFoundError             a named object (model alias, collection, feature) does not exist
"""

from __future__ import annotations

from pathlib import Path


class FlightlineError(Exception):
    """Base of every error flightline raises on purpose."""


class FlightlineConfigError(FlightlineError):
    """A setting or secret is missing or invalid."""


class ServiceError(FlightlineError):
    """A platform component failed; the message names the component and its log file."""

    def __init__(self, component: str, message: str, *, log: Path | None = None) -> None:
        self.component = component
        self.log = log
        hint = f" (see {log})" if log else ""
        super().__init__(f"{component}: {message}{hint}")


class PortInUseError(ServiceError):
    """A component's port is already bound by a process flightline did not start."""


class DataValidationError(FlightlineError):
    """A data batch failed validation; ``report`` holds the readable failures."""

    def __init__(self, message: str, *, report: str | None = None) -> None:
        self.report = report
        super().__init__(message if not report else f"{message}\n{report}")


class NotFoundError(FlightlineError):
    """A named object does not exist."""
