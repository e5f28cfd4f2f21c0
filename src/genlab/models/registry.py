"""The model registry: a family's name -> its file under genlab/models, and weights saved beside their config.

A family is the module `genlab.models.<family>` with a `build(config, image_shape)` entry, and its
hyperparameters' schema in genlab.config.params.FAMILY_PARAMS under the same name. The module is
imported only when a model of that family is built, so a stage that trains a VAE imports `vae.py`
and none of the other families (and `dvc.yaml` lists only that file for it). `build_model` and
`load_model` are the only way models are made, so a registered family is trained, saved, reloaded
and evaluated by the same stages. A family that offers `build_prior(config, dims)` (the flow, DDPM, the
GAN) can also be a learned prior over an encoder's codes (an entry of `priors:`, genlab.models.latent).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import keras

from genlab.config.params import FAMILY_PARAMS, PRIOR_PARAMS, PriorOverCodes
from genlab.models.contract import Generator

WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "config.json"


def family_module(family: str) -> ModuleType:
    """The module of a family (`genlab.models.vae` for "vae"); an unknown name lists the valid ones."""
    if family not in FAMILY_PARAMS:
        raise ValueError(f"unknown model family {family!r}; valid families: {sorted(FAMILY_PARAMS)}")
    return importlib.import_module(f"genlab.models.{family}")


def build_model(config, image_shape: tuple[int, int], num_classes: int = 0) -> Generator:
    """Build the family named by `config.family`, or a prior of that family over an encoder's codes (an entry
    of `priors:`, genlab.models.latent); an unknown name lists the valid ones. A conditional entry's model
    is told one of the data's `num_classes` classes."""
    if isinstance(config, PriorOverCodes):
        module = importlib.import_module("genlab.models.latent")
    else:
        module = family_module(config.family)
    return module.build(config, tuple(image_shape), num_classes=num_classes if config.conditional else 0)


def save_model(model: keras.Model, config, image_shape: tuple[int, int], directory: str | Path) -> None:
    """Weights as .weights.h5 and the config beside them: enough to rebuild through the registry."""
    directory = Path(directory)
    model.save_weights(directory / WEIGHTS_FILE)
    payload = {"model": config.model_dump(mode="json"), "image_shape": list(image_shape)}
    if model.num_classes:
        payload["num_classes"] = model.num_classes
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_model(directory: str | Path) -> tuple[Generator, object]:
    """Rebuild a saved model from its config via the registry and load its weights."""
    directory = Path(directory)
    payload = json.loads((directory / CONFIG_FILE).read_text())
    family = payload["model"]["family"]
    config = (PRIOR_PARAMS if "encoder" in payload["model"] else FAMILY_PARAMS)[family].model_validate(payload["model"])
    model = build_model(config, tuple(payload["image_shape"]), payload.get("num_classes", 0))
    model.build_optimizers()  # the weights file holds the optimizers' state too, whose variables exist only once built
    model.load_weights(directory / WEIGHTS_FILE)
    return model, config
