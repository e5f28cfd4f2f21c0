"""Every registered family keeps the contract of genlab.models.contract: it is a Generator that trains with
genlab's fit, samples the same images for the same seed (also after a save and load), shows its progress,
reports its own finite metrics and its likelihood's kind, and has exactly the capabilities it claims."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pipeline_project import TINY_NETWORKS
from sklearn.datasets import load_digits

from genlab.config.params import FAMILY_PARAMS
from genlab.data.splits import Split
from genlab.evaluation import restoration
from genlab.models.contract import LIKELIHOODS, Encoder, Generator, GuidedRestorer, LatentSpace, Searchable
from genlab.models.registry import build_model, load_model, save_model
from genlab.training import devices, fit

SHAPE = (8, 8)
# what each family can do beyond generating (docs/architecture.md); a new family adds its line
CAPABILITIES = {"autoencoder": {Encoder, Searchable}, "vae": {Encoder, Searchable}, "gan": {Searchable},
                "flow": {Searchable}, "diffusion": {GuidedRestorer}, "ppca": {Encoder, Searchable}}


@pytest.fixture(scope="module")
def digits():
    found = load_digits()
    return (found.images[:128] / 16.0).astype(np.float32), found.target[:128]


def test_every_registered_family_is_run_through_the_contract():
    assert set(TINY_NETWORKS) == set(FAMILY_PARAMS) == set(CAPABILITIES)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
def test_a_family_keeps_the_contract(family, conditional, digits, tmp_path):
    images, labels = digits
    devices.set_seed(0)
    config = FAMILY_PARAMS[family](family=family, epochs=2, batch_size=32, conditional=conditional,
                                   **TINY_NETWORKS[family])
    model = build_model(config, SHAPE, num_classes=10)
    assert isinstance(model, Generator) and model.num_classes == (10 if conditional else 0)
    assert model.likelihood in LIKELIHOODS and model.training_optimizers()
    (x, y), validation = model.training_data(Split(images, labels), Split(images[:32], labels[:32]))
    result = fit.fit(model, x, validation[0], targets=(y, validation[1]), epochs=2, batch_size=32)
    assert len(result.history[model.monitored_loss]) == len(result.history[f"val_{model.monitored_loss}"]) == 2
    model.after_training(Split(images, labels))

    asked = np.array([1, 1, 7, 7, 3])
    if conditional:
        np.testing.assert_allclose(np.asarray(model.class_shares), np.bincount(labels, minlength=10) / len(labels),
                                   rtol=1e-6)
        of_classes = model.sample(5, seed=3, labels=asked)
        assert of_classes.shape == (5, *SHAPE)
        np.testing.assert_array_equal(of_classes, model.sample(5, seed=3, labels=asked))
        with pytest.raises(ValueError, match="labels must be 5 classes"):
            model.sample(5, seed=3, labels=np.array([1, 2, 10, 0, 0]))
    else:
        with pytest.raises(ValueError, match="unconditional"):
            model.sample(5, seed=3, labels=asked)

    samples = model.sample(5, seed=3)
    assert samples.shape == (5, *SHAPE) and samples.dtype == np.float32
    assert 0.0 <= samples.min() and samples.max() <= 1.0
    np.testing.assert_array_equal(samples, model.sample(5, seed=3))
    assert not np.array_equal(samples, model.sample(5, seed=4))
    rows = model.progress_rows(images[:4])
    assert rows and all(np.asarray(row).shape == (4, *SHAPE) for row in rows.values())
    found = model.family_metrics(images[:64], labels[:64])
    assert all(isinstance(value, float) and math.isfinite(value) for value in found.values())
    assert (model.likelihood == "none") == ("test_nll_bits_per_dim" not in found)  # a likelihood is reported
    for name, shown in model.family_images(images[:32], labels[:32]).items():
        assert name.endswith(".png") and all(np.asarray(row).shape[1:] == SHAPE for row in shown.values())

    assert {capability for capability in (Encoder, Searchable, GuidedRestorer)
            if isinstance(model, capability)} == CAPABILITIES[family]
    if isinstance(model, Encoder):
        assert model.encode(images[:4]).shape == model.encode(images[:4], labels[:4]).shape == (4, config.latent_dim)
        assert model.reconstruct(images[:4]).shape == model.reconstruct(images[:4], labels[:4]).shape == (4, *SHAPE)
    if isinstance(model, Searchable):
        space = model.latent_space()
        assert isinstance(space, LatentSpace) and np.asarray(space.decode(np.zeros((2, space.dim), np.float32))).shape \
            == (2, *SHAPE)
    if isinstance(model, GuidedRestorer):
        noisy = restoration.degrade(images[:4], "denoise", 2, 0.5, 0.1, seed=0)
        assert model.guided_restore(noisy, seed=0, sampler="ddim").shape == (4, *SHAPE)

    save_model(model, config, SHAPE, tmp_path)
    loaded, loaded_config = load_model(tmp_path)
    assert loaded_config == config and type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.sample(5, seed=3), samples)
    if conditional:
        np.testing.assert_array_equal(loaded.sample(5, seed=3, labels=asked), of_classes)
