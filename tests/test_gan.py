"""The GAN family (Goodfellow et al. 2014) on tiny 8x8 data: its losses against their formulas."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from genlab.config.params import GanParams, ParamsError, parse_params  # noqa: E402
from genlab.models.gan import discriminator_loss, generator_loss  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402

SHAPE = (8, 8)


def config(**overrides) -> GanParams:
    settings = dict(family="gan", latent_dim=4, generator_units=(16,), discriminator_units=(16,),
                    learning_rate=0.002, batch_size=32, epochs=3, seed=0)
    return GanParams(**(settings | overrides))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:128] / 16.0).astype(np.float32)


def test_losses_match_their_formulas_for_given_discriminator_outputs():
    d_real, d_fake = np.array([0.9, 0.6, 0.99]), np.array([0.2, 0.5, 0.01])
    real_logits, fake_logits = np.log(d_real / (1 - d_real)), np.log(d_fake / (1 - d_fake))
    expected_d = -np.mean(np.log(d_real)) - np.mean(np.log(1 - d_fake))
    assert float(discriminator_loss(real_logits, fake_logits)) == pytest.approx(expected_d, rel=1e-6)
    assert float(generator_loss(fake_logits, "minimax")) == pytest.approx(np.mean(np.log(1 - d_fake)), rel=1e-6)
    assert float(generator_loss(fake_logits, "non_saturating")) == pytest.approx(-np.mean(np.log(d_fake)), rel=1e-6)


def test_non_saturating_loss_keeps_its_gradient_where_minimax_saturates():
    import tensorflow as tf

    confident = tf.Variable([-8.0])  # D is sure the sample is fake: D(G(z)) = 0.0003
    gradients = {}
    for objective in ("minimax", "non_saturating"):
        with tf.GradientTape() as tape:
            loss = generator_loss(confident, objective)
        gradients[objective] = abs(float(tape.gradient(loss, confident)[0]))
    assert gradients["minimax"] < 1e-3 < 0.99 < gradients["non_saturating"]


@pytest.mark.parametrize("objective", ["non_saturating", "minimax"])
def test_training_step_is_finite_and_logs_the_game(images, objective):
    devices.set_seed(0)
    model = build_model(config(loss=objective), SHAPE)
    logs = model.train_on_batch(images, images, return_dict=True)
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(value) for value in logs.values())
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1


def test_discriminator_loss_falls_as_it_learns(images):
    devices.set_seed(0)
    model = build_model(config(), SHAPE)
    result = fit.fit(model, images, images[:32], epochs=8, batch_size=32)
    assert result.history["d_loss"][-1] < result.history["d_loss"][0]


def test_samples_are_images_and_deterministic_for_a_seed(images, tmp_path):
    devices.set_seed(0)
    model = build_model(config(), SHAPE)
    fit.fit(model, images, images[:32], epochs=2, batch_size=32)
    samples = model.sample(12, seed=5)
    assert samples.shape == (12, *SHAPE) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(12, seed=5))
    save_model(model, model.config, SHAPE, tmp_path)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.sample(12, seed=5), samples)
    assert set(model.family_metrics(images[:32], np.zeros(32, int))) == {"test_d_real", "test_d_fake"}


def test_early_stopping_is_refused_for_a_gan():
    with pytest.raises(ParamsError, match="early_stopping_patience must be null for a GAN"):
        parse_params({"data": {}, "models": {"g": {"family": "gan", "early_stopping_patience": 3}}})


def test_a_generator_average_replaces_its_last_weights_after_training(images):
    """ema_decay: the generator samples with its optimizer's moving average (Keras's fit finalizes the
    model's own optimizer only; a GAN's two are its own), and the discriminator keeps its last weights."""
    devices.set_seed(0)
    model = build_model(config(ema_decay=0.9, epochs=2), SHAPE)
    averages = []
    original = model.finalize_weights

    def keep_averages():  # the moving averages and the last weights, just before fit replaces them
        averages.extend(np.asarray(v) for v in model.g_optimizer._model_variables_moving_average)
        averages.append([np.asarray(v) for v in model.generator.trainable_variables])
        original()

    model.finalize_weights = keep_averages
    fit.fit(model, images, images[:32], epochs=2, batch_size=32)
    *moving, last = averages
    assert len(moving) == len(model.generator.trainable_variables)
    for variable, average in zip(model.generator.trainable_variables, moving):
        np.testing.assert_array_equal(np.asarray(variable), average)
    assert any(not np.array_equal(average, before) for average, before in zip(moving, last))


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_samples_at_a_temperature_decode_scaled_noise(family):
    """temperature T: samples come from z ~ N(0, T^2 I), the same noise scaled, the same for the same seed."""
    from genlab.config.params import VaeParams

    devices.set_seed(0)
    made = config(temperature=2.0) if family == "gan" else VaeParams(
        family="vae", hidden_units=(16,), latent_dim=4, epochs=1, seed=0, temperature=2.0)
    model = build_model(made, SHAPE)
    z = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    network = model.generator if family == "gan" else model.decoder
    np.testing.assert_allclose(model.sample(6, seed=5), np.asarray(network(2.0 * z, training=False)), atol=1e-6)
    np.testing.assert_array_equal(model.sample(6, seed=5), model.sample(6, seed=5))
