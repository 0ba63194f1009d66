"""The "model from code" MLflow loads: it builds the model object instead of unpickling one."""

import mlflow.models

from pharmacy_service.model.pyfunc import PharmacyModel

mlflow.models.set_model(PharmacyModel())
