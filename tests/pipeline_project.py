"""The tiny project that the end-to-end, browser and sweep tests share: one small model of each family."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
MODELS = ("ae_a", "ae_b", "vae_c", "gan_d", "flow_e", "ddpm_f")
ENCODERS = ("ae_a", "ae_b", "vae_c")
# the smallest dense network of each family on the 8x8 digits, for tests that train every family in process
TINY_NETWORKS = {
    "autoencoder": dict(hidden_units=(16,), latent_dim=4),
    "vae": dict(hidden_units=(16,), latent_dim=2),
    "gan": dict(latent_dim=4, generator_units=(16,), discriminator_units=(16,)),
    "flow": dict(num_couplings=2, hidden_units=(16,)),
    "diffusion": dict(num_timesteps=10, hidden_units=(16,), time_embedding_dim=8, num_inference_steps=3),
}


def tiny_params(models: tuple[str, ...] = MODELS) -> dict:
    """The project's params.yaml with tiny models and a small judge: a whole `dvc repro` in about two minutes."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["train"]["grid_every_epochs"] = 2
    model = dict(family="autoencoder", hidden_units=[16], latent_dim=4, hidden_activation="relu",
                 output_activation="sigmoid", loss="binary_crossentropy", optimizer="adam", learning_rate=0.01,
                 batch_size=64, epochs=5, seed=0)
    vae = dict(family="vae", hidden_units=[16], latent_dim=2, learning_rate=0.01, batch_size=64, epochs=5,
               num_importance_samples=8)
    gan = dict(family="gan", latent_dim=4, generator_units=[16], discriminator_units=[16], learning_rate=0.001,
               batch_size=64, epochs=5)
    flow = dict(family="flow", num_couplings=2, hidden_units=[16], num_levels=17, learning_rate=0.001,
                batch_size=64, epochs=5)
    every = {"ae_a": model, "ae_b": model | {"output_activation": "linear", "loss": "mse"}, "vae_c": vae,
             "gan_d": gan, "flow_e": flow,
             "ddpm_f": dict(family="diffusion", num_timesteps=10, hidden_units=[16], time_embedding_dim=8,
                            num_inference_steps=5, batch_size=64, epochs=5)}
    params["models"] = {name: every[name] for name in models}
    params["evaluate"]["num_samples"] = 100
    params["evaluate"]["kid_subsets"] = 10
    params["judge"] |= {"hidden_units": [64, 32], "epochs": 30, "learning_rate": 0.005}  # 32 features < 100 samples
    return params


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))
