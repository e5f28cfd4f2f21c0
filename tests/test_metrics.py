"""Reconstruction errors, per-class summaries, ranks and the 2-D projection of codes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genlab.evaluation import metrics


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


# --- sample quality against known answers ------------------------------------------------------------


def test_frechet_distance_matches_the_closed_form_for_known_gaussians():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    mean_a, mean_b = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    cov_a = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.2], [0.0, 0.2, 0.5]])
    cov_b = np.array([[0.5, -0.1, 0.0], [-0.1, 1.0, 0.0], [0.0, 0.0, 1.5]])
    exact = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(sqrtm(cov_a @ cov_b)))
    a = rng.multivariate_normal(mean_a, cov_a, size=200_000)
    b = rng.multivariate_normal(mean_b, cov_b, size=200_000)
    assert metrics.frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    # diagonal covariances: |m_a - m_b|^2 + sum (sigma_a - sigma_b)^2
    c = rng.normal([0.0, 0.0], [1.0, 3.0], size=(200_000, 2))
    d = rng.normal([2.0, 0.0], [2.0, 1.0], size=(200_000, 2))
    assert metrics.frechet_distance(c, d) == pytest.approx(4.0 + 1.0 + 4.0, rel=0.02)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_real_valued():
    features = np.random.default_rng(1).standard_normal((100, 5))
    distance = metrics.frechet_distance(features, features)
    assert isinstance(distance, float) and distance == pytest.approx(0.0, abs=1e-8)
    rank_deficient = np.repeat(features[:, :1], 5, axis=1)  # a singular covariance still gives a real number
    assert np.isfinite(metrics.frechet_distance(rank_deficient, features))


def test_frechet_distance_refuses_fewer_samples_than_dimensions():
    with pytest.raises(metrics.TooFewSamples, match=r"more generated samples \(8\) than feature dimensions \(10\)"):
        metrics.frechet_distance(np.zeros((50, 10)), np.zeros((8, 10)))


def brute_force_mmd(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kernel = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 3)) + 0.7
    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=3, subset_size=12)
    assert mean == pytest.approx(brute_force_mmd(x, y), rel=1e-9)  # whole sets: every subset is the same
    assert std == pytest.approx(0.0, abs=1e-12)
    same = metrics.kernel_inception_distance(rng.standard_normal((400, 3)), rng.standard_normal((400, 3)),
                                             num_subsets=20, subset_size=200)
    shifted = metrics.kernel_inception_distance(rng.standard_normal((400, 3)), rng.standard_normal((400, 3)) + 1,
                                                num_subsets=20, subset_size=200)
    assert abs(same[0]) < 3 * same[1] + 1e-3 and shifted[0] > 10 * max(same[1], 1e-3)


def test_precision_recall_density_coverage_on_a_worked_example():
    real = np.arange(5, dtype=float)[:, None]  # 0..4: each ball (k = 1) has radius 1
    fake = np.array([[0.5], [10.0]])  # balls of radius 9.5
    result = metrics.precision_recall(real, fake, k=1)
    assert result == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.4}
    perfect = metrics.precision_recall(real, real.copy(), k=3)
    assert perfect["precision"] == perfect["recall"] == perfect["coverage"] == 1.0
    with pytest.raises(metrics.TooFewSamples, match="more than k = 3 samples, got 2"):
        metrics.precision_recall(real, fake, k=3)


def test_class_distribution_shares_coverage_and_distance():
    result = metrics.class_distribution(np.array([0, 0, 1, 2]), np.full(4, 0.25))
    assert result["class_shares"] == {"0": 0.5, "1": 0.25, "2": 0.25, "3": 0.0}
    assert result["classes_covered"] == 3
    assert result["class_share_tv_distance"] == pytest.approx(0.25)


def test_detail_counts_the_speckle_a_reconstruction_adds():
    images = np.zeros((2, 4, 4))
    images[:, 1:3, 1:3] = 1.0  # a 2x2 square: 4 unit steps across and 4 down per image
    assert metrics.detail(images, images) == {"detail_ratio": 1.0, "out_of_range_share": 0.0}
    speckled = images.copy()
    speckled[:, 0, 0] = -0.5  # one pixel below black: two more half-steps per image, 1 of 16 pixels out of range
    found = metrics.detail(images, speckled)
    assert found["detail_ratio"] == pytest.approx((16 + 2) / 16)
    assert found["out_of_range_share"] == pytest.approx(1 / 16)
    assert metrics.detail(images, np.full_like(images, 0.5))["detail_ratio"] == 0.0  # a flat grey guess


def test_intra_class_fid_finds_the_class_a_model_draws_badly():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 20))
    real_labels = np.repeat(np.arange(3), 100)
    real[real_labels == 1] += 3.0  # three classes apart in feature space
    real[real_labels == 2] -= 3.0
    fake = rng.standard_normal((600, 20))
    fake_labels = np.repeat(np.arange(3), 200)
    fake[fake_labels == 1] += 3.0
    fake[fake_labels == 2] -= 3.0
    fake[fake_labels == 2, :5] += 2.0  # class 2 drawn off its place
    per_class = metrics.per_class_fid(real, real_labels, fake, fake_labels, num_classes=3, components=10)
    assert per_class["2"] > 5 * max(per_class["0"], per_class["1"])
    floor_features = rng.standard_normal((300, 20))
    floor_features[real_labels == 1] += 3.0
    floor_features[real_labels == 2] -= 3.0
    floor = metrics.per_class_fid(real, real_labels, floor_features, real_labels, num_classes=3, components=10)
    found = metrics.within_class_quality(per_class, floor)
    assert found["worst_fid_class"] == 2 and found["worst_class_fid_to_floor"] > 3
    assert found["per_class_fid_to_floor"]["0"] == pytest.approx(1.0, abs=0.6)
    # at most `counts` samples of each class compared, and a class with too few is not measured
    capped = metrics.per_class_fid(real, real_labels, fake, fake_labels, 3, components=10,
                                   counts=np.array([5, 200, 200]))
    assert np.isnan(capped["0"]) and capped["1"] == per_class["1"]
    assert metrics.within_class_quality(capped, floor)["classes_unmeasured"] == 1


def test_asked_for_accuracy_is_the_share_of_each_class_the_judge_sees():
    asked = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    judged = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    found = metrics.asked_for_accuracy(asked, judged, 2)
    assert found["per_class_asked_accuracy"] == {"0": 0.75, "1": 1.0}
    assert found["asked_class_accuracy"] == 0.875 and found["worst_asked_class"] == 0


# --- sampling intervals --------------------------------------------------------------------------------------


def test_kid_of_counts_is_the_kid_of_the_sets_drawn_with_repeats():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(12, 4)), rng.normal(size=(15, 4)) + 0.5
    x, y = rng.integers(12, size=12), rng.integers(15, size=15)
    gathered = metrics._mmd(*(metrics._cubic_kernel(a, b) for a, b in
                              ((real[x], real[x]), (fake[y], fake[y]), (real[x], fake[y]))))
    kernels = [metrics._cubic_kernel(a, b) for a, b in ((real, real), (fake, fake), (real, fake))]
    counted = metrics._mmd_of_counts(*kernels, np.bincount(x, minlength=12), np.bincount(y, minlength=15))
    assert counted == pytest.approx(gathered, rel=1e-10)


def gaussian_sets(rng, transform, real: int, fake: int):
    """Real (test), generated (wider and shifted) and floor (real) features from fixed Gaussians."""
    dims = transform.shape[0]
    return (rng.normal(size=(real, dims)) @ transform, (rng.normal(size=(fake, dims)) * 1.15 + 0.1) @ transform,
            rng.normal(size=(fake, dims)) @ transform)


def measured(real, fake, floor) -> dict[str, float]:
    values = metrics.sample_quality(real, fake)
    return values | {"fid_to_floor": values["fid"] / metrics.frechet_distance(real, floor)}


def test_bootstrap_intervals_are_as_wide_as_the_spread_over_fresh_images():
    """The known answer: draw the test, generated and floor images afresh many times from the same Gaussians; one
    draw's bootstrap interval is as wide as those draws' values spread (within a factor of two), and it holds the
    value most draws give."""
    rng = np.random.default_rng(1)
    transform = rng.normal(size=(16, 16)) / 4
    values, intervals = [], []
    for repeat in range(24):
        sets = gaussian_sets(rng, transform, 270, 1000)
        values.append(measured(*sets))
        if repeat < 6:
            intervals.append(metrics.bootstrap_intervals(*sets, draws=100, centre=values[-1], seed=repeat))
    for metric in metrics.INTERVAL_METRICS:
        spread = np.std([value[metric] for value in values])
        widths = [(found[f"{metric}_high"] - found[f"{metric}_low"]) / (2 * 1.96) for found in intervals]
        assert 0.5 < np.mean(widths) / spread < 2.2, (metric, np.mean(widths), spread)
        typical = np.median([value[metric] for value in values])
        held = np.mean([found[f"{metric}_low"] <= typical <= found[f"{metric}_high"] for found in intervals])
        assert held >= 4 / 6, (metric, held)


def test_bootstrap_intervals_hold_the_reported_value_and_narrow_with_more_images():
    rng = np.random.default_rng(2)
    transform = np.eye(8)
    few, many = gaussian_sets(rng, transform, 100, 300), gaussian_sets(rng, transform, 400, 1200)
    narrow, wide = (metrics.bootstrap_intervals(*sets, draws=60, centre=measured(*sets)) for sets in (many, few))
    for found, sets in ((narrow, many), (wide, few)):
        for metric, value in measured(*sets).items():
            if metric in metrics.INTERVAL_METRICS:
                assert found[f"{metric}_low"] <= value <= found[f"{metric}_high"], metric
    for metric in ("fid", "precision"):  # 4x the images: about half as wide (coverage nears its bound of 1)
        assert (narrow[f"{metric}_high"] - narrow[f"{metric}_low"]
                < 0.75 * (wide[f"{metric}_high"] - wide[f"{metric}_low"])), metric


def test_bootstrap_intervals_are_reproducible_from_their_seed():
    sets = gaussian_sets(np.random.default_rng(0), np.eye(4), 60, 80)
    assert metrics.bootstrap_intervals(*sets, draws=30, seed=5) == metrics.bootstrap_intervals(*sets, draws=30, seed=5)


def test_ranks_with_intervals_tie_the_models_whose_intervals_overlap():
    values = {"a": 1.0, "b": 1.2, "c": 2.0, "d": float("nan")}
    intervals = {"a": (0.9, 1.1), "b": (1.05, 1.5), "c": (1.4, 2.5), "d": (float("nan"), float("nan"))}
    # a and b overlap, b and c overlap, a clears c: c is second (only a is surely better)
    assert metrics.ranks(values, intervals=intervals) == {"a": 1, "b": 1, "c": 2, "d": 4}
    assert metrics.ranks(values) == {"a": 1, "b": 2, "c": 3, "d": 4}
    higher = {"a": (0.5, 0.6), "b": (0.55, 0.7), "c": (0.8, 0.9)}
    assert metrics.ranks({"a": 0.55, "b": 0.6, "c": 0.85}, True, higher) == {"a": 2, "b": 2, "c": 1}
