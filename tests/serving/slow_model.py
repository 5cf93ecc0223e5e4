"""A pyfunc model that is slow or broken on purpose (MLflow models-from-code), for the failure paths.

``model_config``: ``delay_s`` sleeps before answering; ``fail`` raises instead.
"""

import time

import mlflow
from mlflow.pyfunc import PythonModel


class SlowModel(PythonModel):
    def load_context(self, context):
        self.config = context.model_config or {}

    def predict(self, context, model_input, params=None):
        if self.config.get("fail"):
            raise RuntimeError("this model fails on purpose")
        time.sleep(float(self.config.get("delay_s", 0)))
        return [0.5] * len(model_input)


mlflow.models.set_model(SlowModel())
