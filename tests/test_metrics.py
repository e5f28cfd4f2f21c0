"""Reconstruction errors, per-class summaries, ranks and the 2-D projection of codes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genlab import metrics


def test_reconstruction_errors_by_hand():
    images = np.array([[[0.0, 1.0], [1.0, 0.0]],
                       [[0.5, 0.5], [0.5, 0.5]]], dtype=np.float32)
    reconstructions = np.array([[[0.1, 0.9], [0.8, 0.2]],
                                [[0.5, 0.5], [0.5, 0.5]]], dtype=np.float32)
    errors = metrics.reconstruction_errors(images, reconstructions)
    assert set(errors) == {"mse", "bce"}
    assert errors["mse"].shape == (2,) and errors["bce"].shape == (2,)
    # (0.1^2 + 0.1^2 + 0.2^2 + 0.2^2) / 4
    np.testing.assert_allclose(errors["mse"], [0.025, 0.0], atol=1e-7)
    # -(ln 0.9 + ln 0.9 + ln 0.8 + ln 0.8) / 4 and -ln 0.5
    expected_bce = [-(2 * math.log(0.9) + 2 * math.log(0.8)) / 4, math.log(2)]
    np.testing.assert_allclose(errors["bce"], expected_bce, rtol=1e-6)


def test_reconstruction_errors_accept_flat_inputs():
    images = np.array([[0.0, 1.0, 1.0, 0.0]])
    reconstructions = np.array([[[0.1, 0.9], [0.8, 0.2]]])
    errors = metrics.reconstruction_errors(images, reconstructions)
    assert errors["mse"][0] == pytest.approx(0.025)


def test_bce_is_clipped_like_keras():
    images = np.array([[[0.0, 1.0], [1.0, 1.0]]])
    perfect = np.array([[[0.0, 1.0], [1.0, 1.0]]])
    assert metrics.reconstruction_errors(images, perfect)["bce"][0] == pytest.approx(1e-7, rel=1e-3)
    wrong = np.array([[[0.0, 1.0], [1.0, 0.0]]])  # one pixel predicted 0 where it is 1
    bce = metrics.reconstruction_errors(images, wrong)["bce"][0]
    assert np.isfinite(bce)
    assert bce == pytest.approx((-math.log(1e-7) + 3 * 1e-7) / 4, rel=1e-5)


def test_mse_uses_unclipped_reconstructions():
    images = np.zeros((1, 2, 2))
    reconstructions = np.array([[[1.5, -0.5], [0.0, 0.0]]])  # a relu or linear output can leave [0, 1]
    assert metrics.reconstruction_errors(images, reconstructions)["mse"][0] == pytest.approx((2.25 + 0.25) / 4)


def test_per_class_mean():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    labels = np.array([0, 1, 0, 1, 3])
    assert metrics.per_class_mean(values, labels, 4) == {"0": 2.0, "1": 3.0, "3": 10.0}  # class 2 absent


def test_worst_best_ratio():
    assert metrics.worst_best_ratio({"0": 2.0, "1": 3.0, "2": 2.5}) == pytest.approx(1.5)
    assert metrics.worst_best_ratio({"0": 4.0}) == 1.0
    assert metrics.worst_best_ratio({"0": 0.0, "1": 1.0}) == math.inf


def test_ranks_lower_is_better_with_ties():
    values = {"a": 0.3, "b": 0.1, "c": 0.3, "d": 0.5}
    assert metrics.ranks(values) == {"a": 2, "b": 1, "c": 2, "d": 4}


def test_ranks_higher_is_better():
    values = {"a": 0.3, "b": 0.1, "c": 0.3, "d": 0.5}
    assert metrics.ranks(values, higher_is_better=True) == {"a": 2, "b": 4, "c": 2, "d": 1}


def test_ranks_single_and_all_tied():
    assert metrics.ranks({"only": 7.0}) == {"only": 1}
    assert metrics.ranks({"x": 1.0, "y": 1.0, "z": 1.0}) == {"x": 1, "y": 1, "z": 1}


def test_pca_2d_recovers_planar_structure():
    rng = np.random.default_rng(0)
    major = rng.normal(0, 10.0, 200)
    minor = rng.normal(0, 1.0, 200)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))  # two orthonormal directions in 5-D
    codes = np.outer(major, basis[:, 0]) + np.outer(minor, basis[:, 1]) + 3.0
    projected = metrics.pca_2d(codes)
    assert projected.shape == (200, 2)
    np.testing.assert_allclose(projected.mean(axis=0), [0.0, 0.0], atol=1e-9)
    variances = projected.var(axis=0)
    assert variances[0] > variances[1] * 10  # the main direction first
    # the axes are the planted directions (up to sign)
    assert abs(np.corrcoef(projected[:, 0], major)[0, 1]) > 0.99
    assert abs(np.corrcoef(projected[:, 1], minor)[0, 1]) > 0.95
    # exactly planar data: the projection keeps every pairwise distance
    def distances(points):
        return np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)

    np.testing.assert_allclose(distances(projected[:30]), distances(codes[:30]), atol=1e-8)


def test_pca_2d_orientation_is_fixed():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(50, 4)) * [5.0, 2.0, 0.5, 0.1]
    projected = metrics.pca_2d(codes)
    for axis in range(2):
        assert projected[np.argmax(np.abs(projected[:, axis])), axis] > 0
    # flipping the data does not flip the picture
    np.testing.assert_allclose(metrics.pca_2d(-codes), projected, atol=1e-9)


def test_pca_2d_pads_one_dimensional_codes():
    codes = np.array([[1.0], [2.0], [6.0]])
    projected = metrics.pca_2d(codes)
    np.testing.assert_allclose(projected, [[-2.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])


def test_ranks_never_puts_nan_first():
    assert metrics.ranks({"diverged": float("nan"), "good": 0.1})["good"] == 1
