"""Every genlab model as an MLflow model: a pyfunc generator, logged as models-from-code.

MLflow runs this file (when the model is logged and when it is loaded); genlab never imports it.
It rebuilds the model from the weights and config logged beside it (`artifacts["model"]`) through
genlab's registry, so loading needs no pickle and works with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false:

    generator = mlflow.pyfunc.load_model("models:/genlab-generator@champion")  # or models:/<model_id>
    images = generator.predict(pd.DataFrame({"num_images": [16], "seed": [0]}))  # (16, H, W), in [0, 1]
    sevens = generator.predict(pd.DataFrame({"num_images": [16], "seed": [0], "class": [7]}))  # a conditional one
    generator.unwrap_python_model().reconstruct(images)  # the autoencoders and the VAE: encode, decode
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from genlab.models.contract import Encoder


class Generator(PythonModel):
    """predict({"num_images": n, "seed": s}) -> n images from the model, the same as model.sample(n, seed); with
    "class": c, a conditional model's n images of class c."""

    def load_context(self, context) -> None:
        from genlab.models.registry import (
            load_model,  # TensorFlow is imported when the model loads, not when it is logged
        )

        self.model, self.config = load_model(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        request = model_input.iloc[0].to_dict() if hasattr(model_input, "iloc") else dict(model_input)
        count, seed = int(request["num_images"]), int(request.get("seed", 0))
        if count < 1:
            raise ValueError(f"num_images must be at least 1, got {count}")
        asked = request.get("class")
        labels = None if asked is None or pd.isna(asked) else np.full(count, int(asked))
        return np.asarray(self.model.sample(count, seed=seed, labels=labels), dtype=np.float32)

    def _encoder(self):
        if not isinstance(self.model, Encoder):
            raise TypeError(f"a {self.config.family} model generates but has no encoder (genlab.models.contract: "
                            f"an Encoder reconstructs, as the autoencoders, the VAE and PPCA do)")
        return self.model

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Encode and decode images shaped like the training data's, (n, H, W) in [0, 1]."""
        return self._encoder().reconstruct(np.asarray(images, dtype=np.float32))

    def encode(self, images: np.ndarray) -> np.ndarray:
        """The images' latent codes (the VAE's posterior means)."""
        return self._encoder().encode(np.asarray(images, dtype=np.float32))


set_model(Generator())
