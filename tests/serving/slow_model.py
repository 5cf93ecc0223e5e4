"""A pyfunc model that is slow or broken on purpose (MLflow models-from-code), for the failure paths.

``model_config``: ``delay_s`` sleeps before answering; ``fail_after_calls`` raises once it has answered
that many calls, ``nan_after_calls`` answers NaN instead: with 1 the model passes the load-time probe
(``flightline.serving.probe_model``, one call) and then breaks, as a model that fails in traffic does.
"""

import time

import mlflow
from mlflow.pyfunc import PythonModel


class SlowModel(PythonModel):
    def load_context(self, context):
        self.config = context.model_config or {}
        self.calls = 0

    def predict(self, context, model_input, params=None):
        self.calls += 1
        if self.calls > self.config.get("fail_after_calls", float("inf")):
            raise RuntimeError("this model fails on purpose")
        time.sleep(float(self.config.get("delay_s", 0)))
        nan = self.calls > self.config.get("nan_after_calls", float("inf"))
        return [float("nan") if nan else 0.5] * len(model_input)


mlflow.models.set_model(SlowModel())
