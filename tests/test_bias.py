"""Representation and bias-amplification statistics against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from genlab.evaluation import bias


def test_shares_and_split_distances():
    np.testing.assert_allclose(bias.shares(np.array([0, 0, 1, 3]), 4), [0.5, 0.25, 0.0, 0.25])
    same = bias.split_distances(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    assert same == {"tv_distance": 0.0, "js_distance": 0.0}
    disjoint = bias.split_distances(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert disjoint["tv_distance"] == 1.0 and disjoint["js_distance"] == pytest.approx(1.0)


def test_goodness_of_fit_matches_scipy():
    counts = np.array([30, 20, 50])
    found = bias.goodness_of_fit(counts, np.array([1.0, 1.0, 1.0]))
    expected = stats.chisquare(counts, [100 / 3] * 3)
    assert found["chi2"] == pytest.approx(expected.statistic) and found["p_value"] == pytest.approx(expected.pvalue)


def test_four_fifths_flags_need_a_real_gap_beyond_chance():
    expected = np.full(10, 0.1)
    big = np.full(10, 1000)
    big[8] = 100  # 10% of the 8s kept: ratio about 0.11
    rows = bias.representation_flags(big, expected)
    assert [row["class"] for row in rows if row["flagged"]] == [8]
    assert "class 8 is under-represented: 0.11x its expected share" in rows[8]["reason"]
    # in a split of 50 images, 3 of one class (ratio 0.6) is within chance: not flagged
    small = np.array([3, 5, 5, 5, 5, 5, 5, 5, 5, 7])
    flagged = [row for row in bias.representation_flags(small, expected) if row["flagged"]]
    assert flagged == []
    assert bias.representation_flags(small, expected)[0]["ratio"] == pytest.approx(0.6)


def test_black_box_shift_estimation_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    num_classes = 3
    confusion = np.array([[0.8, 0.1, 0.2], [0.15, 0.85, 0.1], [0.05, 0.05, 0.7]])  # columns: true class
    true_shares = np.array([0.6, 0.1, 0.3])
    labels = rng.choice(num_classes, size=50_000, p=true_shares)
    judged = np.array([rng.choice(num_classes, p=confusion[:, label]) for label in labels[:20_000]])
    raw = bias.shares(judged, num_classes)
    assert np.abs(raw - true_shares[:]).max() > 0.05  # the judge's mistakes distort the raw shares
    corrected = bias.corrected_shares(raw, confusion)
    np.testing.assert_allclose(corrected, true_shares, atol=0.02)
    # the confusion matrix as measured from labelled data
    test_true = rng.choice(num_classes, size=30_000)
    test_predicted = np.array([rng.choice(num_classes, p=confusion[:, label]) for label in test_true])
    np.testing.assert_allclose(bias.confusion_matrix(test_true, test_predicted, num_classes), confusion, atol=0.02)


def test_amplification_is_model_minus_data():
    training = np.array([0.3, 0.3, 0.3, 0.1])
    reproduced = bias.amplification(training.copy(), training)
    assert reproduced["bias_amplification"] == pytest.approx(0.0) and reproduced["tv_to_training"] == 0.0
    amplified = bias.amplification(np.array([0.33, 0.33, 0.33, 0.01]), training)
    assert amplified["bias_amplification"] == pytest.approx(0.24 - 0.15)
    assert amplified["min_ratio_change"] == pytest.approx(0.04 - 0.4)
    evened = bias.amplification(np.full(4, 0.25), training)
    assert evened["bias_amplification"] == pytest.approx(-0.15)
    assert bias.disparity(np.array([0.5, 0.5, 0.0]), np.full(3, 1 / 3))["missing_classes"] == 1


def test_kl_divergence_known_value_and_a_missing_class():
    assert bias.kl_divergence(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(
        0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75))
    assert np.isfinite(bias.kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])))


def test_amplification_noise_is_what_a_faithful_model_shows_by_chance():
    training = np.full(10, 0.1)
    noise = bias.amplification_noise(training, 1000)
    assert 0.03 < noise < 0.06  # about 0.04 total variation for 1000 samples of 10 classes
    assert bias.amplification_noise(training, 100_000) < noise / 5  # shrinks like 1 / sqrt(n)


def test_share_ratios_per_class():
    ratios = bias.share_ratios(np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.25, 0.25, 0.4, 0.1]))
    assert ratios == pytest.approx({"0": 2.0, "1": 1.2, "2": 0.5, "3": 0.0})
    assert np.isnan(bias.share_ratios(np.array([0.5, 0.5]), np.array([1.0, 0.0]))["1"])
