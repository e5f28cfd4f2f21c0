"""The VAE family (Kingma and Welling 2014) on tiny 8x8 data, against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

keras = pytest.importorskip("keras")

from genlab.config.params import VaeParams  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.models.vae import gaussian_kl, log_likelihood, log_normal  # noqa: E402
from genlab.training import devices, fit  # noqa: E402

SHAPE = (8, 8)


def config(**overrides) -> VaeParams:
    settings = dict(family="vae", hidden_units=(16,), latent_dim=2, learning_rate=0.01, batch_size=32, epochs=3,
                    seed=0, num_importance_samples=16)
    return VaeParams(**(settings | overrides))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:128] / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def trained(images):
    devices.set_seed(0)
    model = build_model(config(), SHAPE)
    fit.fit(model, images, images[:32], epochs=15, batch_size=32)
    return model


def test_closed_form_kl_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean, log_var = np.array([[0.7, -1.2]]), np.array([[-0.5, 0.8]])
    z = mean + np.exp(0.5 * log_var) * rng.standard_normal((200_000, 2))
    monte_carlo = np.mean(stats.norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(1) - stats.norm.logpdf(z).sum(1))
    assert float(gaussian_kl(mean, log_var)[0]) == pytest.approx(monte_carlo, abs=0.01)
    assert float(gaussian_kl(np.zeros((1, 3)), np.zeros((1, 3)))[0]) == pytest.approx(0.0)


def test_log_likelihoods_match_their_formulas():
    rng = np.random.default_rng(1)
    x, mean = rng.random((2, 4, 4)), rng.uniform(0.05, 0.95, (2, 4, 4))
    gaussian = np.asarray(log_likelihood(x, mean, "gaussian", 0.3))
    np.testing.assert_allclose(gaussian, stats.norm.logpdf(x, mean, 0.3).reshape(2, -1).sum(1), rtol=1e-5)
    bernoulli = np.asarray(log_likelihood(x, mean, "bernoulli", 0.3))
    np.testing.assert_allclose(bernoulli, (x * np.log(mean) + (1 - x) * np.log(1 - mean)).reshape(2, -1).sum(1),
                               rtol=1e-5)
    z = rng.standard_normal((5, 3))
    np.testing.assert_allclose(np.asarray(log_normal(z, 0.0, 0.0 * z)), stats.norm.logpdf(z).sum(1), rtol=1e-5)


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_training_step_is_finite_and_loss_falls(images, decoder):
    devices.set_seed(0)
    model = build_model(config(decoder=decoder), SHAPE)
    first = model.train_on_batch(images, images, return_dict=True)
    assert all(np.isfinite(value) for value in first.values())
    assert first["loss"] == pytest.approx(first["reconstruction_loss"] + first["kl_loss"], rel=1e-5)
    for _ in range(40):
        last = model.train_on_batch(images, images, return_dict=True)
    assert last["loss"] < 0.8 * first["loss"]


def test_beta_weights_the_kl_term(images):
    devices.set_seed(0)
    model = build_model(config(beta=4.0), SHAPE)
    logs = model.train_on_batch(images, images, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["reconstruction_loss"] + 4.0 * logs["kl_loss"], rel=1e-5)
    assert logs["elbo"] == pytest.approx(-(logs["reconstruction_loss"] + logs["kl_loss"]), rel=1e-5)


def test_samples_are_images_and_deterministic_for_a_seed(trained):
    samples = trained.sample(12, seed=3)
    assert samples.shape == (12, *SHAPE) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, trained.sample(12, seed=3))
    assert not np.array_equal(samples, trained.sample(12, seed=4))


def test_importance_weighting_tightens_the_bound(trained, images):
    test = images[-64:]
    one, many = (trained.importance_weighted_nll(test, k, seed=0).mean() for k in (1, 64))
    assert many < one
    results = trained.family_metrics(test, np.zeros(len(test), int))
    assert results["test_nll_nats"] < -results["test_elbo_nats"]
    assert results["test_nll_bits_per_dim"] == pytest.approx(results["test_nll_nats"] / (64 * math.log(2)))


def test_family_images_interpolate_and_map_a_2d_latent(trained, images):
    labels = np.repeat(np.arange(4), 32)
    shown = trained.family_images(images, labels)
    assert shown["interpolation.png"]["interpolation"].shape == (10, *SHAPE)
    assert len(shown["latent_grid.png"]) == 10


def test_save_load_round_trip_reproduces_samples(trained, tmp_path):
    save_model(trained, trained.config, SHAPE, tmp_path)
    loaded, loaded_config = load_model(tmp_path)
    assert loaded_config == trained.config
    np.testing.assert_array_equal(loaded.sample(8, seed=1), trained.sample(8, seed=1))
    np.testing.assert_array_equal(loaded.reconstruct(np.zeros((2, *SHAPE), np.float32)),
                                  trained.reconstruct(np.zeros((2, *SHAPE), np.float32)))
