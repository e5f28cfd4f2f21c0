"""Class-conditional generation (genlab.models.contract and each family's way of being told the class): known
answers on a trivially separable toy data set, classifier-free guidance (its known answer at scale 0, the
unconditional model, is in test_latent.py), and the classes a model is asked for."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from genlab.config.params import FAMILY_PARAMS, DiffusionParams
from genlab.data.splits import Split
from genlab.models import diffusion
from genlab.models.contract import class_labels, one_hot
from genlab.models.registry import build_model
from genlab.training import fit
from genlab.training.devices import set_seed

SHAPE = (8, 8)
# each family's small network that learns the two classes in a few seconds
TOY = {
    "autoencoder": dict(hidden_units=(32,), latent_dim=4, learning_rate=0.01, epochs=60),
    "vae": dict(hidden_units=(64,), latent_dim=2, learning_rate=0.005, epochs=80),
    "gan": dict(latent_dim=4, generator_units=(64,), discriminator_units=(64,), learning_rate=0.002, epochs=150),
    "flow": dict(num_couplings=4, hidden_units=(64,), num_levels=17, learning_rate=0.003, epochs=60),
    "diffusion": dict(num_timesteps=100, hidden_units=(512, 512), time_embedding_dim=32, schedule="cosine",
                      sampler="ddim", num_inference_steps=25, ema_decay=0.0, min_snr_gamma=5, learning_rate=0.003,
                      epochs=150),
    "ppca": dict(latent_dim=4, num_levels=17, learning_rate=0.02, epochs=60),
}


@pytest.fixture(scope="module")
def zeros_and_ones() -> Split:
    """The digits 0 and 1 (360 images): a 0 has a dark centre, a 1 a bright one (means 0.11 and 0.83)."""
    found = load_digits()
    kept = found.target < 2
    return Split((found.images[kept] / 16.0).astype(np.float32), found.target[kept])


def bright_centre(images: np.ndarray) -> np.ndarray:
    return images[:, 2:6, 3:5].mean(axis=(1, 2)) > 0.3


def trained(config, data: Split, num_classes: int = 2):
    set_seed(0)
    model = build_model(config, SHAPE, num_classes=num_classes)
    (x, y), (x_val, y_val) = model.training_data(data, Split(data.x[:40], data.y[:40]))
    fit.fit(model, x, x_val, targets=(y, y_val), epochs=config.epochs, batch_size=config.batch_size, seed=0)
    model.after_training(data)
    return model


@pytest.mark.parametrize("family", sorted(TOY))
def test_a_conditional_model_draws_the_class_it_is_asked_for(family, zeros_and_ones):
    config = FAMILY_PARAMS[family](family=family, conditional=True, batch_size=64, **TOY[family])
    model = trained(config, zeros_and_ones)
    asked_zero = model.sample(200, seed=1, labels=np.zeros(200, int))
    asked_one = model.sample(200, seed=1, labels=np.ones(200, int))
    assert bright_centre(asked_zero).mean() <= 0.1, family
    assert bright_centre(asked_one).mean() >= 0.9, family
    # not asked: the training shares (about half and half)
    assert bright_centre(model.sample(400, seed=2)).mean() == pytest.approx(np.mean(zeros_and_ones.y), abs=0.1)


def test_guided_noise_is_the_unconditional_noise_plus_scaled_difference():
    calls = []

    def predict(inputs):  # eps = x + 10 * class 0's share (the null class: x itself)
        calls.append(len(inputs[0]))
        x, _, condition = inputs
        return x + 10.0 * condition[:, :1]

    x, t, condition = np.ones((3, 2), np.float32), np.zeros(3, np.int32), one_hot(np.array([0, 1, 0]), 2)
    guided = diffusion.guided_noise(predict, x, t, condition, 2.5)
    np.testing.assert_allclose(guided, x + 2.5 * 10.0 * condition[:, :1])
    assert calls == [6]  # one call over the batch twice (the classes, then the null class)
    np.testing.assert_allclose(diffusion.guided_noise(predict, x, t, condition, 0.0), x)
    np.testing.assert_allclose(diffusion.guided_noise(lambda inputs: inputs[0] * 2, x, t, None, 3.0), 2 * x)


def test_class_labels_have_the_exact_shares_in_a_seeded_order():
    labels = class_labels(100, np.array([0.5, 0.3, 0.2]), seed=0)
    assert np.bincount(labels).tolist() == [50, 30, 20]
    np.testing.assert_array_equal(labels, class_labels(100, np.array([0.5, 0.3, 0.2]), seed=0))
    assert not np.array_equal(labels, class_labels(100, np.array([0.5, 0.3, 0.2]), seed=1))
    assert np.bincount(class_labels(10, np.full(3, 1 / 3), seed=0)).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])


def test_guidance_settings_need_a_conditional_model():
    with pytest.raises(ValueError, match="classifier-free guidance is for a conditional model"):
        DiffusionParams(family="diffusion", guidance_scale=2.0)
    with pytest.raises(ValueError, match="needs the unconditional model as well"):
        DiffusionParams(family="diffusion", conditional=True, guidance_scale=2.0, condition_dropout=0.0)
