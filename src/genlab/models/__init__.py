"""The model registry: family name -> build function, and weights saved beside their config.

`build_model` and `load_model` are the only way models are made, so a family added
to MODELS (and its schema to genlab.params.FAMILY_PARAMS) is trained, saved,
reloaded and evaluated by the same stages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keras

from genlab.models import autoencoder, diffusion, flow, gan, vae
from genlab.params import FAMILY_PARAMS

MODELS: dict[str, Callable[..., keras.Model]] = {"autoencoder": autoencoder.build, "vae": vae.build,
                                                  "gan": gan.build, "flow": flow.build,
                                                  "diffusion": diffusion.build}

WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "config.json"


def build_model(config, image_shape: tuple[int, int]) -> keras.Model:
    """Build the family named by `config.family`; an unknown name lists the valid ones."""
    try:
        builder = MODELS[config.family]
    except KeyError:
        raise ValueError(f"unknown model family {config.family!r}; valid families: {sorted(MODELS)}") from None
    return builder(config, tuple(image_shape))


def save_model(model: keras.Model, config, image_shape: tuple[int, int], directory: str | Path) -> None:
    """Weights as .weights.h5 and the config beside them: enough to rebuild through the registry."""
    directory = Path(directory)
    model.save_weights(directory / WEIGHTS_FILE)
    payload = {"model": config.model_dump(mode="json"), "image_shape": list(image_shape)}
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_model(directory: str | Path) -> tuple[keras.Model, object]:
    """Rebuild a saved model from its config via the registry and load its weights."""
    directory = Path(directory)
    payload = json.loads((directory / CONFIG_FILE).read_text())
    family = payload["model"]["family"]
    config = FAMILY_PARAMS[family].model_validate(payload["model"])
    model = build_model(config, tuple(payload["image_shape"]))
    # The weights file holds the optimizers' state too, whose variables exist only once built.
    if hasattr(model, "build_optimizers"):  # a GAN's two optimizers
        model.build_optimizers()
    else:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(directory / WEIGHTS_FILE)
    return model, config
