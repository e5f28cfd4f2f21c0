"""Representation audit: class counts, shares, imbalance, split consistency and mean images."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from genlab.evaluation import audit


@pytest.fixture
def small_counts() -> pd.DataFrame:
    return audit.class_counts({"train": np.array([0, 0, 1, 2]), "test": np.array([1, 2, 2])}, 3)


def test_class_counts_table(small_counts):
    assert list(small_counts.index) == ["train", "test", "all"]
    assert list(small_counts.columns) == ["0", "1", "2"]
    assert small_counts.loc["train"].tolist() == [2, 1, 1]
    assert small_counts.loc["test"].tolist() == [0, 1, 2]
    assert small_counts.loc["all"].tolist() == [2, 2, 3]


def test_class_counts_absent_classes_are_zero_columns():
    counts = audit.class_counts({"train": np.array([1, 1]), "validation": np.array([1])}, 4)
    assert list(counts.columns) == ["0", "1", "2", "3"]
    assert counts.loc["all"].tolist() == [0, 3, 0, 0]
    assert counts.loc["validation"].tolist() == [0, 1, 0, 0]


def test_class_shares_rows_sum_to_one(small_counts):
    shares = audit.class_shares(small_counts)
    np.testing.assert_allclose(shares.sum(axis=1).to_numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(shares.loc["train"].to_numpy(), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(shares.loc["test"].to_numpy(), [0.0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(shares.loc["all"].to_numpy(), [2 / 7, 2 / 7, 3 / 7])


def test_class_shares_of_an_empty_split_are_zero():
    counts = audit.class_counts({"train": np.array([0, 1]), "test": np.array([], dtype=np.int64)}, 2)
    shares = audit.class_shares(counts)
    assert shares.loc["test"].tolist() == [0.0, 0.0]
    assert shares.loc["train"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    "counts, expected",
    [([10, 5, 20], 4.0), ([3, 3, 3], 1.0), ([7, 2], 3.5), ([4, 0, 2], math.inf), ([0, 0], math.inf)],
)
def test_imbalance_ratio(counts, expected):
    assert audit.imbalance_ratio(np.array(counts)) == expected


def test_split_consistency_identical_distributions():
    labels = np.repeat(np.arange(4), [30, 20, 40, 10])
    counts = audit.class_counts({"train": labels, "validation": labels, "test": labels}, 4)
    result = audit.split_consistency(counts, 0.05)
    assert result["chi2"] == pytest.approx(0.0, abs=1e-12)
    assert result["p_value"] == pytest.approx(1.0)
    assert result["dof"] == 6  # (3 splits - 1) * (4 classes - 1): the `all` row is left out
    assert result["consistent"] is True


def test_split_consistency_different_distributions_matches_scipy():
    train = np.repeat(np.arange(3), [50, 30, 20])
    test = np.repeat(np.arange(3), [10, 30, 60])
    counts = audit.class_counts({"train": train, "test": test}, 3)
    result = audit.split_consistency(counts, 0.05)
    statistic, p_value, dof, _ = stats.chi2_contingency(np.array([[50, 30, 20], [10, 30, 60]]))
    assert result["chi2"] == pytest.approx(statistic)
    assert result["p_value"] == pytest.approx(p_value)
    assert result["dof"] == dof == 2
    assert result["p_value"] < 0.05
    assert result["consistent"] is False


def test_split_consistency_similar_distributions_matches_scipy(small_counts):
    result = audit.split_consistency(small_counts, 0.05)
    statistic, p_value, dof, _ = stats.chi2_contingency(np.array([[2, 1, 1], [0, 1, 2]]))
    assert result["chi2"] == pytest.approx(statistic)
    assert result["p_value"] == pytest.approx(p_value)
    assert result["p_value"] > 0.05
    assert result["consistent"] is True


def test_split_consistency_drops_classes_absent_everywhere():
    counts = audit.class_counts({"train": np.array([0, 0, 2, 2, 2]), "test": np.array([0, 2, 2])}, 4)
    result = audit.split_consistency(counts, 0.05)
    statistic, p_value, dof, _ = stats.chi2_contingency(np.array([[2, 3], [1, 2]]))
    assert result["dof"] == dof == 1
    assert result["chi2"] == pytest.approx(statistic)
    assert result["p_value"] == pytest.approx(p_value)


def test_split_consistency_significance_decides():
    train = np.repeat(np.arange(2), [60, 40])
    test = np.repeat(np.arange(2), [45, 55])
    counts = audit.class_counts({"train": train, "test": test}, 2)
    p_value = audit.split_consistency(counts, 0.05)["p_value"]
    assert 0.01 < p_value < 0.1
    assert audit.split_consistency(counts, p_value / 2)["consistent"] is True
    assert audit.split_consistency(counts, min(0.99, p_value * 2))["consistent"] is False


def test_mean_images():
    x = np.array([[[0.0, 1.0], [0.5, 0.5]],
                  [[1.0, 1.0], [1.0, 1.0]],
                  [[1.0, 0.0], [0.5, 0.0]]], dtype=np.float32)
    y = np.array([0, 1, 0])
    means = audit.mean_images(x, y, 3)
    assert means.shape == (3, 2, 2) and means.dtype == np.float32
    np.testing.assert_allclose(means[0], [[0.5, 0.5], [0.5, 0.25]])
    np.testing.assert_allclose(means[1], x[1])
    np.testing.assert_array_equal(means[2], np.zeros((2, 2)))  # an absent class


def test_audit_metrics(small_counts):
    result = audit.audit_metrics(small_counts, 0.05)
    assert set(result["splits"]) == {"train", "test", "all"}
    assert result["splits"]["train"] == {"images": 4, "imbalance_ratio": 2.0, "min_class_share": 0.25,
                                         "max_class_share": 0.5}
    assert result["splits"]["test"]["imbalance_ratio"] == math.inf
    assert result["splits"]["test"]["min_class_share"] == 0.0
    assert result["splits"]["all"]["images"] == 7
    assert result["splits"]["all"]["imbalance_ratio"] == pytest.approx(1.5)
    assert result["split_consistency"] == audit.split_consistency(small_counts, 0.05)


def test_class_representation_flags_an_under_sampled_class_in_training_only():
    counts = audit.class_counts({"train": np.repeat(np.arange(10), [120] * 8 + [12, 120]),
                                 "validation": np.repeat(np.arange(10), 27),
                                 "test": np.repeat(np.arange(10), 27)}, 10)
    found = audit.class_representation(counts)
    assert [row["class"] for row in found["train"]["classes"] if row["flagged"]] == [8]
    assert not any(row["flagged"] for split in ("validation", "test") for row in found[split]["classes"])
    assert found["train"]["fit_to_uniform"]["p_value"] < 1e-6
    assert found["validation"]["distances"]["test"] == {"tv_distance": 0.0, "js_distance": 0.0}
    assert found["train"]["distances"]["test"]["tv_distance"] > 0.05


def test_thin_cells_are_measured_against_the_independence_expectation():
    table = pd.DataFrame({"thin": [50, 5], "thick": [50, 45]}, index=["0", "1"])  # thin overall 55/150
    cells = audit.thin_cells(table, 0.5)
    assert cells == ["class 1, thin: 5 images, 0.27x the 18.3 expected from the subgroup's overall share"]


def test_data_card_is_written_from_the_numbers():
    counts = audit.class_counts({"train": np.repeat(np.arange(3), [40, 40, 4]), "test": np.repeat(np.arange(3), 10)}, 3)
    representation = audit.class_representation(counts)
    strokes = pd.DataFrame({"thin": [10, 20, 1], "medium": [15, 10, 2], "thick": [15, 10, 1]}, index=["0", "1", "2"])
    card = audit.data_card("digits", (8, 8), counts, representation, audit.split_consistency(counts, 0.05),
                           strokes, strokes, ["class 2, thin: 1 images"], (1.3, 1.7), {2: 0.1})
    assert card.startswith("# Data card: digits")
    assert "114 images of 8x8 pixels in 3 classes" in card
    assert "class 2 is under-represented" in card
    assert "thin cell: class 2, thin: 1 images" in card
    assert "class 2 keeps 10% of its training images" in card
