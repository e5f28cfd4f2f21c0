"""genlab.models.ppca: probabilistic PCA's density by the determinant lemma and Woodbury's identity against
the plain multivariate normal, its posterior mean against the closed form, and a training that finds the
data's principal subspace and its noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

keras = pytest.importorskip("keras")

from genlab.config.params import ParamsError, PpcaParams, parse_params  # noqa: E402
from genlab.models.registry import build_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402

SHAPE = (4, 4)


def model_with(weights: np.ndarray, mean: np.ndarray, variance: float, latent_dim: int):
    model = build_model(PpcaParams(family="ppca", latent_dim=latent_dim, num_levels=17), SHAPE)
    model.factors.assign(weights.astype(np.float32))
    model.mean.assign(mean.astype(np.float32))
    model.log_noise_variance.assign(np.float32(math.log(variance)))
    return model


def test_the_density_is_the_multivariate_normal_with_a_low_rank_covariance():
    rng = np.random.default_rng(0)
    weights, mean, variance = rng.normal(size=(16, 3)), rng.normal(size=16), 0.3
    model = model_with(weights, mean, variance, 3)
    points = rng.normal(size=(5, 16)).astype(np.float32)
    expected = -multivariate_normal(mean, weights @ weights.T + variance * np.eye(16)).logpdf(points)
    np.testing.assert_allclose(np.asarray(model.negative_log_density(points)), expected, rtol=1e-4)


def test_encoding_is_the_posterior_mean_and_decoding_its_linear_image():
    rng = np.random.default_rng(1)
    weights, mean, variance = rng.normal(size=(16, 2)), rng.uniform(size=16), 0.05
    model = model_with(weights, mean, variance, 2)
    images = rng.uniform(size=(3, *SHAPE)).astype(np.float32)
    centred = images.reshape(3, 16) - mean
    posterior = np.linalg.solve(weights.T @ weights + variance * np.eye(2), weights.T @ centred.T).T
    np.testing.assert_allclose(model.encode(images), posterior, rtol=1e-4, atol=1e-5)
    decoded = model.decode(posterior.astype(np.float32))
    np.testing.assert_allclose(decoded.reshape(3, 16), np.clip(posterior @ weights.T + mean, 0, 1), atol=1e-5)


def test_training_finds_the_principal_subspace_and_the_noise():
    """Data from a known 2-D subspace plus noise of std 0.02 in 16 pixels: the fitted W spans that subspace
    and sigma comes close to the noise (the maximum-likelihood solution of Tipping and Bishop)."""
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.normal(size=(16, 2)))[0]  # orthonormal columns
    codes = rng.normal(size=(2000, 2)) * np.array([0.15, 0.08])
    images = (0.5 + codes @ basis.T + 0.02 * rng.normal(size=(2000, 16))).reshape(2000, *SHAPE).astype(np.float32)
    devices.set_seed(0)
    config = PpcaParams(family="ppca", latent_dim=2, num_levels=65536, learning_rate=0.02, epochs=60, batch_size=200)
    model = build_model(config, SHAPE)
    result = fit.fit(model, images, images[:200], epochs=60, batch_size=200)
    assert result.history["loss"][-1] < result.history["loss"][0]
    fitted = np.linalg.qr(np.asarray(model.factors))[0]
    overlap = np.linalg.svd(basis.T @ fitted, compute_uv=False)  # cosines of the principal angles
    assert overlap.min() > 0.99
    assert math.exp(0.5 * float(model.log_noise_variance)) == pytest.approx(0.02, rel=0.25)


def test_a_bottleneck_wider_than_the_image_is_refused():
    raw = {"data": {"source": "digits"}, "models": {"p": {"family": "ppca", "latent_dim": 64}}}
    with pytest.raises(ParamsError, match="latent_dim: 64 is not a bottleneck"):
        parse_params(raw)
