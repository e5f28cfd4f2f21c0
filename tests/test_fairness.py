"""Restoration fairness (genlab.evaluation.fairness): the tests reject what is planted and accept its absence."""

from __future__ import annotations

import numpy as np
import pytest

from genlab.evaluation import fairness

SHARES = np.array([0.2, 0.8])  # Jalal et al.'s setting: a group at 20% and one at 80%


def test_proportional_representation_accepts_samples_of_the_right_shares():
    restored = np.random.default_rng(0).choice(2, size=400, p=SHARES)
    found = fairness.proportional_representation(restored, SHARES)
    assert found["pr_p_value"] > 0.05 and fairness.verdict(found["pr_p_value"]) == "met"
    assert found["pr_tv_distance"] < 0.05 and found["pr_majority_ratio"] == pytest.approx(1.0, abs=0.06)


def test_proportional_representation_rejects_a_planted_amplification_of_the_majority():
    restored = np.random.default_rng(0).choice(2, size=400, p=[0.1, 0.9])  # the majority amplified 0.8 -> 0.9
    found = fairness.proportional_representation(restored, SHARES, prefix="ucpr")
    assert found["ucpr_p_value"] < 1e-4 and fairness.verdict(found["ucpr_p_value"]) == "violated"
    assert found["ucpr_majority_ratio"] == pytest.approx(0.9 / 0.8, abs=0.03)
    # a MAP method's collapse onto the majority: every restoration the majority group
    collapsed = fairness.proportional_representation(np.ones(200, int), SHARES)
    assert collapsed["pr_p_value"] < 1e-10 and collapsed["pr_majority_ratio"] == pytest.approx(1.25)


def test_the_chi_square_test_agrees_with_scipy_and_small_counts_are_simulated():
    from scipy.stats import chisquare

    counts, shares = np.array([30, 50, 20]), np.array([0.3, 0.4, 0.3])
    statistic, p_value = fairness.goodness_of_fit(counts, shares)
    expected = chisquare(counts, 100 * shares)
    assert statistic == pytest.approx(expected.statistic) and p_value == pytest.approx(expected.pvalue)
    # 12 draws: expected counts under 5, a simulated p-value; an exact binomial check for two groups
    from scipy.stats import binomtest

    _, simulated = fairness.goodness_of_fit(np.array([0, 12]), SHARES)
    assert simulated == pytest.approx(binomtest(0, 12, 0.2).pvalue, abs=0.02)
    # something where nothing is expected is impossible under the null
    assert fairness.goodness_of_fit(np.array([1, 9]), np.array([0.0, 1.0]))[1] == 0.0


def test_representation_demographic_parity_finds_a_group_restored_as_itself_less_often():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 200)
    even = np.where(rng.random(400) < 0.85, groups, 1 - groups)
    found = fairness.representation_demographic_parity(groups, even, 2)
    assert found["rdp_p_value"] > 0.05 and found["rdp_gap"] < 0.08
    uneven = np.where(rng.random(400) < np.where(groups == 0, 0.5, 0.95), groups, 1 - groups)  # group 0 erased
    found = fairness.representation_demographic_parity(groups, uneven, 2)
    assert found["rdp_p_value"] < 1e-6 and found["rdp_rates"]["0"] < found["rdp_rates"]["1"]
    # few images: a simulated p-value, still small for a large gap
    small_groups, small = np.repeat([0, 1], 8), np.repeat([1, 1], 8)
    assert fairness.representation_demographic_parity(small_groups, small, 2)["rdp_p_value"] < 0.01


def test_posterior_sampling_follows_the_data_and_map_takes_the_majority():
    """Jalal et al.'s setting with a known posterior: a latent N(0, I) whose first number decides the group, 80%
    of the mass on the majority's side; the observation carries no information (every pixel hidden). The
    posterior is then the prior: Langevin sampling returns the 20/80 split within its binomial error, the
    mode (temperature 0) the majority every time."""
    import keras
    from scipy.stats import norm

    from genlab.evaluation import restoration
    from genlab.models.contract import LatentSpace

    threshold = float(norm.ppf(0.2))  # P(w_0 > threshold) = 0.8

    def decode(w):  # (B, 2) -> (B, 1, 2) "images": the group's sign in the first pixel, smoothly
        w = keras.ops.convert_to_tensor(w)
        first = 0.5 + 0.4 * keras.ops.tanh(w[:, :1] - threshold)
        return keras.ops.reshape(keras.ops.concatenate([first, 0.5 + 0.1 * keras.ops.tanh(w[:, 1:])], axis=-1),
                                 (-1, 1, 2))

    space, count = LatentSpace(decode, 2), 400
    hidden = restoration.Degradation("inpaint_block", np.zeros((count, 1, 2), np.float32), (1, 2),
                                     mask=np.zeros((count, 1, 2), np.float32))
    sampled, _ = restoration.latent_posterior(space, hidden, steps=300, step_size=0.1, observation_sigma=0.1,
                                              temperature=1.0, seed=0)
    majority = sampled[:, 0, 0] > 0.5
    assert majority.mean() == pytest.approx(0.8, abs=3 * np.sqrt(0.8 * 0.2 / count))
    assert fairness.proportional_representation(majority.astype(int), SHARES)["pr_p_value"] > 0.01
    mode, codes = restoration.latent_posterior(space, hidden, steps=300, step_size=0.1, observation_sigma=0.1,
                                               temperature=0.0, seed=0)
    assert np.all(mode[:, 0, 0] > 0.5) and np.abs(codes).max() < 0.05  # the prior's mode: w = 0
    assert fairness.proportional_representation((mode[:, 0, 0] > 0.5).astype(int), SHARES)["pr_p_value"] < 1e-10
    # told the first pixel (the minority's value), the posterior is the minority's: sampling follows the observation
    seen = np.zeros((count, 1, 2), np.float32)
    seen[:, 0, 0] = 1.0
    shown = restoration.Degradation("inpaint_block", np.full((count, 1, 2), 0.3, np.float32) * seen, (1, 2), mask=seen)
    told, _ = restoration.latent_posterior(space, shown, steps=1000, step_size=0.5, observation_sigma=0.1,
                                           temperature=1.0, seed=1)
    assert np.mean(told[:, 0, 0] < 0.5) > 0.95


def test_the_rarest_group_and_the_imbalance_of_the_reference_are_reported():
    collapsed = fairness.proportional_representation(np.ones(200, int), SHARES)
    assert collapsed["pr_imbalance"] == pytest.approx(0.25) and collapsed["pr_rarest"] == 0
    assert collapsed["pr_rarest_ratio"] == 0.0 and collapsed["pr_top_group"] == 1
    # balanced shares: no majority worth the name, but a collapse onto one group is still the top ratio
    onto_three = fairness.proportional_representation(np.full(100, 3), np.full(10, 0.1))
    assert onto_three["pr_imbalance"] == 1.0 and onto_three["pr_top_group"] == 3
    assert onto_three["pr_top_ratio"] == pytest.approx(10.0) and onto_three["pr_p_value"] < 1e-10


def restoration_case(restored_labels: np.ndarray, restored_strokes: np.ndarray, uninformative: bool) -> dict:
    """300 test images, ten classes at their training shares, the judge right about all of them, strokes even."""
    labels, strokes = np.repeat(np.arange(10), 30), np.tile(np.arange(3), 100)
    return fairness.restoration_fairness(labels, labels, restored_labels, np.full(10, 0.1), strokes, restored_strokes,
                                         np.full(3, 1 / 3), uninformative, seed=0)


def test_a_fair_restoration_meets_every_definition_and_a_collapse_violates_them():
    rng = np.random.default_rng(0)
    labels, strokes = np.repeat(np.arange(10), 30), np.tile(np.arange(3), 100)
    kept = restoration_case(labels, strokes, uninformative=False)  # every image restored as itself
    assert kept["rdp_p_value"] == 1.0 and kept["rdp_gap"] == 0.0 and kept["pr_p_value"] == 1.0
    assert kept["stroke_rdp_p_value"] == 1.0 and "ucpr_p_value" not in kept
    # an observation that says nothing: a posterior sampler draws the classes at the training shares
    fair = restoration_case(rng.integers(0, 10, 300), rng.integers(0, 3, 300), uninformative=True)
    assert fair["ucpr_p_value"] > 0.05 and fair["stroke_ucpr_p_value"] > 0.05
    # a MAP method returns the mode: one class and one stroke for every observation
    mode = restoration_case(np.full(300, 1), np.full(300, 2), uninformative=True)
    assert mode["ucpr_p_value"] < 1e-10 and mode["ucpr_top_group"] == 1 and mode["ucpr_top_ratio"] == 10.0
    assert mode["stroke_ucpr_p_value"] < 1e-10 and mode["rdp_p_value"] < 1e-3  # only class 1 comes back (simulated)


def test_against_its_own_samples_a_method_that_passes_on_the_models_bias_is_told_from_one_that_adds_to_it():
    samples = {str(label): share for label, share in enumerate([0.3] + [0.7 / 9] * 9)}  # the model draws 0s thrice
    passed_on = {label: share for label, share in samples.items()}
    assert fairness.against_own_samples(passed_on, 400, samples)["own_pr_p_value"] > 0.05
    added = {"0": 0.6} | {str(label): 0.4 / 9 for label in range(1, 10)}
    found = fairness.against_own_samples(added, 400, samples)
    assert found["own_pr_p_value"] < 1e-10 and found["own_pr_top_group"] == 0
    assert found["own_pr_top_ratio"] == pytest.approx(2.0, abs=0.02)
