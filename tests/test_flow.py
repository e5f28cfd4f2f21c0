"""The RealNVP flow (Dinh et al. 2017) on tiny images: invertibility and the exact log-determinant."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from genlab import training  # noqa: E402
from genlab.models import build_model, load_model, save_model  # noqa: E402
from genlab.models.flow import checkerboard  # noqa: E402
from genlab.params import FlowParams  # noqa: E402


def config(**overrides) -> FlowParams:
    settings = dict(family="flow", num_couplings=4, hidden_units=(16,), learning_rate=0.005, batch_size=32,
                    epochs=3, seed=0, num_levels=17)
    return FlowParams(**(settings | overrides))


def randomised(model) -> keras.Model:
    """Give every coupling non-zero scales and shifts, so that the checks are not of the identity."""
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:128] / 16.0).astype(np.float32)


def test_checkerboards_alternate():
    even, odd = checkerboard((2, 3), 0), checkerboard((2, 3), 1)
    np.testing.assert_array_equal(even, [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(even + odd, np.ones(6))


def test_flow_inverts(images):
    model = randomised(build_model(config(), (8, 8)))
    x = np.random.default_rng(1).normal(size=(16, 64)).astype(np.float32)
    z, _ = model.forward(x)
    assert np.abs(np.asarray(z) - x).max() > 0.1  # the flow moves the points
    np.testing.assert_allclose(np.asarray(model.inverse(z)), x, atol=1e-4)


def test_log_determinant_matches_a_numerical_jacobian():
    model = randomised(build_model(config(num_couplings=3, hidden_units=(8,)), (2, 2)))
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 4)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z, log_det = model.forward(x)
    jacobian = tape.batch_jacobian(z, x)[0].numpy().astype(np.float64)  # (4, 4)
    assert float(log_det[0]) == pytest.approx(np.linalg.slogdet(jacobian)[1], abs=1e-4)
    step = 1e-3  # and by finite differences
    numeric = np.stack([(np.asarray(model.forward(x + step * np.eye(4)[i])[0]) -
                         np.asarray(model.forward(x - step * np.eye(4)[i])[0]))[0] / (2 * step) for i in range(4)], 1)
    assert float(log_det[0]) == pytest.approx(np.linalg.slogdet(numeric)[1], abs=1e-2)


def test_bits_per_dim_of_an_untrained_flow_is_the_uniform_baseline_or_worse(images):
    model = build_model(config(), (8, 8))  # zero-initialised couplings: the identity flow
    bits = float(np.mean(model.bits_per_dim(images)))
    assert bits > math.log2(17) - 0.5


def test_training_is_finite_and_nll_falls(images):
    training.set_seed(0)
    model = build_model(config(), (8, 8))
    result = training.fit(model, images, images[:32], epochs=6, batch_size=32)
    assert all(np.isfinite(result.history["loss"]))
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_samples_are_images_deterministic_and_survive_save_load(images, tmp_path):
    training.set_seed(0)
    model = build_model(config(), (8, 8))
    training.fit(model, images, images[:32], epochs=2, batch_size=32)
    samples = model.sample(12, seed=4)
    assert samples.shape == (12, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(12, seed=4))
    assert not np.array_equal(model.sample(12, seed=4, temperature=0.3), samples)
    save_model(model, model.config, (8, 8), tmp_path)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.sample(12, seed=4), samples)
    results = model.family_metrics(images[:32])
    assert results["test_nll_nats"] == pytest.approx(results["test_nll_bits_per_dim"] * 64 * math.log(2))
