"""The tiny project that the end-to-end, browser and sweep tests share: one small model of each family (the DDPM
told the class)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
MODELS = ("ae_a", "ae_b", "vae_c", "gan_d", "flow_e", "ddpm_f")
PRIORS = ("ldm_g",)  # latent diffusion over ae_a's codes (`priors:`)
ENCODERS = ("ae_a", "ae_b", "vae_c", "ldm_g")  # ldm_g decodes with ae_a's decoder
# the smallest dense network of each family on the 8x8 digits, for tests that train every family in process
TINY_NETWORKS = {
    "autoencoder": dict(hidden_units=(16,), latent_dim=4),
    "vae": dict(hidden_units=(16,), latent_dim=2),
    "gan": dict(latent_dim=4, generator_units=(16,), discriminator_units=(16,)),
    "flow": dict(num_couplings=2, hidden_units=(16,)),
    "diffusion": dict(num_timesteps=10, hidden_units=(16,), time_embedding_dim=8, num_inference_steps=3),
    "ppca": dict(latent_dim=4, num_levels=17),
}


def tiny_params(models: tuple[str, ...] = MODELS, priors: tuple[str, ...] | None = None) -> dict:
    """The project's params.yaml with tiny models and a small judge: a whole `dvc repro` in about two minutes.
    The priors (PRIORS) come with the whole set of models, and for a subset only when named."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["train"] |= {"grid_every_epochs": 2, "seeds": 1}  # one training per model (but the shared vae_c's)
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
             # told the class, with classifier-free guidance (issue 30): evaluate asks it for every class
             "ddpm_f": dict(family="diffusion", conditional=True, condition_dropout=0.2, guidance_scale=2.0,
                            num_timesteps=10, hidden_units=[16], time_embedding_dim=8, num_inference_steps=5,
                            batch_size=64, epochs=5)}
    params["models"] = {name: every[name] for name in models}
    if models == MODELS:  # the shared project trains vae_c with two seeds (genlab.evaluation.seeds)
        params["models"]["vae_c"] = vae | {"seeds": 2}
    every_prior = {"ldm_g": dict(encoder="ae_a", family="diffusion", num_timesteps=10, hidden_units=[16],
                                 time_embedding_dim=8, sampler="ddim", num_inference_steps=5, batch_size=64, epochs=5)}
    params["priors"] = {name: every_prior[name] for name in (PRIORS if priors is None and models == MODELS
                                                              else priors or ())}
    params["evaluate"]["num_samples"] = 100
    params["evaluate"]["kid_subsets"] = 10
    params["search"] = tiny_search() if "ae_a" in params["models"] else None
    params["restore"] |= {"num_images": 40, "search_steps": 10, "search_restarts": 2, "posterior_steps": 10,
                          "permutations": 200}
    params["judge"] |= {"hidden_units": [64, 32], "epochs": 30, "learning_rate": 0.005}  # 32 features < 100 samples
    # five epochs make no model a person would recommend: recommend them all, so that the answer has every line
    params["compare"] |= {"max_fid_to_floor": 1e6, "min_judge_confidence": 0.0, "min_classes_covered": 1,
                          "recommend_still_learning": True}
    return params


def tiny_search(trials: int = 4) -> dict:
    """A search of ae_a (search/dvc.yaml) over one axis of each kind: a list, a joint axis, a log range."""
    return {"model": "ae_a", "trials": trials, "objective": "fid_to_floor", "sampler": "tpe", "seed": 0, "workers": 1,
            "pruner": {"report_every_epochs": 2, "startup_trials": 1, "warmup_epochs": 2},
            "space": {"hidden_units": [[8], [16, 8]],
                      "output": [{"loss": "mse", "output_activation": "linear"},
                                 {"loss": "binary_crossentropy", "output_activation": "sigmoid"}],
                      "learning_rate": {"low": 0.001, "high": 0.05, "log": True}}}


# the lecture's study at 784 pixels and the two families whose 28x28 evaluation differs most from the digits'
# (the flow's likelihood over 256 grey levels, DDPM's patched U-Net); the VAE and the GAN on real 28x28
# images are in test_networks.py, one dvc stage pair fewer each
MNIST_MODELS = ("ae_784", "flow_conv", "ddpm_conv")
MNIST_PRIORS = ("ae_784_flow_prior",)  # a RealNVP over ae_784's codes


def tiny_mnist_params() -> dict:
    """The real MNIST sample (400 of its images), the tiny models of MNIST_MODELS, a small convolutional
    judge and the default compare thresholds: a whole `dvc repro` on 28x28 images."""
    params = yaml.safe_load((PROJECT / "configs/mnist_sample.yaml").read_text())
    params["data"] |= {"max_samples": 400}
    params["train"] |= {"grid_every_epochs": 1, "seeds": 1}
    params["evaluate"] |= {"num_samples": 100, "kid_subsets": 10}
    params["restore"] = {"num_images": 30, "search_steps": 5, "search_restarts": 1, "posterior_steps": 5,
                         "permutations": 100}
    params["judge"] |= {"conv_filters": [8, 16], "hidden_units": [32, 16], "epochs": 5, "augment_shift": 0.0}
    common = dict(batch_size=64, epochs=2, seed=0)
    every = {  # MNIST_MODELS's settings
        "ae_784": dict(family="autoencoder", hidden_units=[32], latent_dim=16, learning_rate=0.005) | common,
        "flow_conv": dict(family="flow", network="conv", conv_filters=[4], num_couplings=2, num_scales=2) | common,
        "ddpm_conv": dict(family="diffusion", network="conv", conv_filters=[8, 16], patch_size=2, num_timesteps=20,
                          num_inference_steps=4, conditional=True, guidance_scale=1.5) | common,  # a guided U-Net
    }
    params["models"] = {name: every[name] for name in MNIST_MODELS}
    params["search"] = None  # configs/mnist_sample.yaml searches its ae_sigmoid_bce, which is not among these
    params["priors"] = {"ae_784_flow_prior": dict(encoder="ae_784", family="flow", num_couplings=4, hidden_units=[32])
                        | common}
    return params


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


OUTPUT_FOLDERS = ("data/prepared", "models", "reports")  # every stage's outputs live under these


def output_digests(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """md5 of every file under the stages' output folders, but for those under a folder named in `skip`."""
    return {str(path.relative_to(root)): hashlib.md5(path.read_bytes()).hexdigest()
            for folder in OUTPUT_FOLDERS for path in sorted((root / folder).rglob("*"))
            if path.is_file() and not set(skip) & set(path.parts)}
