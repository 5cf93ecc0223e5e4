"""Whether a model version can serve flights, and scoring it: shared by the registry, serving and batch scoring.

:func:`load_servable` checks a version's inputs from its MLmodel file, loads it and probes it with the rows
serving sends; :func:`predict_rows` scores rows in feature order (with a LightGBM fast path).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any


class _BoosterPredictor:
    """A LightGBM booster called on a float array: the pyfunc wrapper's DataFrame and schema checks cost
    ~5x the prediction itself for one row. Used only when the logged signature's columns are exactly
    FEATURE_NAMES in order, so the booster sees what the pyfunc would hand it."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, rows: Any) -> Any:
        import numpy as np

        return self.booster.predict(np.asarray(rows, dtype="float64"))


def is_booster(model: Any) -> bool:
    """Whether a loaded model is the LightGBM fast path: bounded C work, no user Python code."""
    return isinstance(model, _BoosterPredictor)


def fast_path(model: Any) -> _BoosterPredictor | None:
    from flightline.features.definitions import FEATURE_NAMES

    schema = model.metadata.get_input_schema()
    if "lightgbm" not in model.metadata.flavors or schema is None or schema.input_names() != FEATURE_NAMES:
        return None
    raw = model.get_raw_model()
    return _BoosterPredictor(raw) if type(raw).__name__ == "Booster" else None


def predict_rows(model: Any, rows: list[list[float]]) -> list[float]:
    """Probabilities from a pyfunc model for rows in FEATURE_NAMES order (batch inference uses the same)."""
    import numpy as np
    import pandas as pd

    from flightline.features.definitions import FEATURE_NAMES

    frame = rows if isinstance(model, _BoosterPredictor) else pd.DataFrame(rows, columns=FEATURE_NAMES, dtype="float64")
    output = np.asarray(model.predict(frame), dtype=float)
    return [float(p) for p in (output[:, -1] if output.ndim == 2 else output)]


def load_servable(uri: str) -> Any:
    """Load a model for serving, or raise FlightlineError when it cannot serve. Its inputs are checked from
    the MLmodel file first, so a foreign model's flavor (and its imports: torch) is never loaded."""
    import mlflow

    check_inputs(mlflow.models.Model.load(uri).signature)
    model = mlflow.pyfunc.load_model(uri)
    probe_model(model)
    return model


_PROBE_DEPARTURE = dt.datetime(2013, 6, 1, 16, 0, tzinfo=dt.UTC)


def probe_model(model: Any, *, timeout_s: float = 60.0) -> None:
    """Raise unless the model scores the rows serving sends it to one probability each, within ``timeout_s``
    (a model that hangs would otherwise hang the alias follower, and no later move would reach serving).
    :func:`load_servable` checks the model's inputs before it loads the model and calls this.

    The probe rows are an unknown flight's (every stored feature at its fallback, as with the store down)
    and one with every stored feature 0. Serving follows an alias wherever it moves, by our CLI or in
    MLflow's UI: a version with other inputs, or that fails on missing values, would turn every answer
    into the fallback, so neither the registry nor the router puts one in front of traffic.

    Raises:
        FlightlineError: naming what the model did wrong.
    """
    import math

    from flightline.features.definitions import FEATURE_NAMES, REQUEST_FEATURES, departure_clocks
    from flightline.features.online import FALLBACK_VALUES
    from flightline.platform.errors import FlightlineError

    clock = dict(zip(REQUEST_FEATURES, departure_clocks([_PROBE_DEPARTURE])[0], strict=True))
    rows = [[clock.get(name, FALLBACK_VALUES.get(name, math.nan)) for name in FEATURE_NAMES],
            [clock.get(name, 0.0) for name in FEATURE_NAMES]]
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            outcome["answer"] = predict_rows(model, rows)
        except Exception as exc:  # noqa: BLE001 - any failure of the model's own code is the answer
            outcome["error"] = exc

    # a daemon thread: a call that hangs is left behind, and never holds up the process's exit
    thread = threading.Thread(target=probe, name="servable-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise FlightlineError(f"it did not answer the rows serving sends in {timeout_s:g} s")
    if "error" in outcome:
        exc = outcome["error"]
        said = " ".join(str(exc).split())
        said = said if len(said) <= 400 else f"{said[:200]} ... {said[-200:]}"  # MLflow's end says what
        raise FlightlineError(f"it fails on the rows serving sends: {type(exc).__name__}: {said}") from exc
    probabilities = outcome["answer"]
    if wrong := not_probabilities(probabilities, len(rows)):
        raise FlightlineError(f"it {wrong}")


def check_inputs(signature: Any) -> None:
    """Raise when a model's logged signature names inputs that serving does not send (read before loading
    it: the MLmodel file is enough). A model without a signature is left to the probe."""
    from flightline.features.definitions import FEATURE_NAMES
    from flightline.platform.errors import FlightlineError

    schema = signature.inputs if signature is not None else None
    if schema is None or not schema.has_input_names():
        return
    unknown = [name for name in schema.input_names() if name not in FEATURE_NAMES]
    if unknown:
        raise FlightlineError(f"it takes inputs serving does not have: {', '.join(map(str, unknown[:10]))}"
                              f"{' ...' if len(unknown) > 10 else ''} (serving sends the {len(FEATURE_NAMES)} "
                              "columns of flightline.features.definitions.FEATURE_NAMES)")


def not_probabilities(answer: list[float], rows: int) -> str | None:
    """What is wrong with a model's answer for ``rows`` rows, or None when it is one probability a row."""
    if len(answer) == rows and all(0.0 <= p <= 1.0 for p in answer):  # NaN is refused too
        return None
    shown = f"{answer[:4]}{' ...' if len(answer) > 4 else ''}"
    return f"answered {shown} for {rows} rows, not one probability in [0, 1] each"
