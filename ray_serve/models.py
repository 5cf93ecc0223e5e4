"""FlightDelayModel: one deployment per alias (``champion``, ``challenger``) of the registered model.

Each replica follows its alias with :class:`flightline.serving.model_loader.AliasedModel`: a daemon thread re-reads
the alias every ``serve_model_poll_s`` and swaps a newly loaded version in atomically, so a promotion or
rollback in the registry reaches serving with no redeploy and no dropped request. The alias is the
deployment's ``user_config``: ``serve deploy`` with another alias reconfigures replicas in place.
"""

from __future__ import annotations

import threading
from typing import Any

from ray import serve


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=16,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
class FlightDelayModel:
    def __init__(self) -> None:
        from flightline.platform.config import get_settings

        self._settings = get_settings()
        self._model: Any = None
        self._poller: threading.Thread | None = None

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config: {alias: champion}``: load that alias now and follow it from then on."""
        from flightline.serving.model_loader import AliasedModel

        alias = str(config.get("alias", "champion"))
        if self._model is not None and self._model.alias == alias:
            return
        model = AliasedModel(self._settings, alias)
        model.refresh()
        previous, self._model = self._model, model
        self._poller = model.follow(self._settings.serve_model_poll_s)
        if previous is not None:
            previous.stop_following()  # else the old alias's poller would keep reloading it forever

    def predict(self, rows: list[list[float]]) -> tuple[list[float], str]:
        """Probabilities and the version that produced them (raises NotFoundError with no alias set)."""
        return self._model.predict(rows)

    def info(self) -> dict[str, Any]:
        """The alias's version and rows scored, and this deployment's name (the router's status shows it)."""
        return {**self._model.info(), "deployment": serve.get_replica_context().deployment}

    def check_health(self) -> None:
        """Unhealthy only if the alias poller died: a missing alias is a state to report, not a crash."""
        if self._poller is None or not self._poller.is_alive():
            raise RuntimeError("alias poller is not running")
