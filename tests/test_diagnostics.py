"""Loss-curve diagnosis on synthetic curves whose verdicts and numbers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genlab.training.diagnostics import DIAGNOSES, Diagnosis, diagnose

EPOCHS = np.arange(50)


def still_falling() -> np.ndarray:
    return np.exp(-0.05 * EPOCHS)  # a straight line in log(loss): never flattens


def slow_linear() -> np.ndarray:
    return 1.0 - 0.001 * EPOCHS  # about 0.1% per epoch


def plateau() -> np.ndarray:
    return 0.1 + np.exp(-0.3 * EPOCHS)  # flat at 0.1 from epoch ~30


def overfitting_val() -> np.ndarray:
    val = 0.5 + 0.5 * np.exp(-0.2 * EPOCHS)
    best = val[30]
    val[31:] = best * (1 + 0.2 * (EPOCHS[31:] - 30) / 19)  # a straight climb to 20% above the best at epoch 49
    return val


def test_still_falling_exponential_is_still_learning():
    result = diagnose(still_falling())
    assert result.verdict == "still_learning"
    # window = round(0.2 * 50) = 10 epochs: a fall of 1 - exp(-0.05 * 9) over it
    assert result.recent_improvement == pytest.approx(1 - math.exp(-0.45), rel=1e-9)
    # the window's 0.45 of the whole 0.05 * 49 = 2.45 in log-loss
    assert result.recent_share == pytest.approx(0.45 / 2.45, rel=1e-9)
    assert result.roughness < 1e-9
    assert result.rise_from_best == 0.0
    assert result.best_epoch == 49
    assert "fell 36.2% over the last 10 epochs" in result.reason


def test_slow_linear_decline_is_still_learning_via_progress_share():
    result = diagnose(slow_linear())
    assert result.verdict == "still_learning"
    # below the 2% fall threshold ...
    assert 0.009 < result.recent_improvement < 0.0098
    assert result.recent_improvement < 0.02
    # ... but ln(0.960/0.951) / ln(1/0.951) ~= 0.1875 of the whole fall is still being made
    assert result.recent_share == pytest.approx(math.log(0.960 / 0.951) / math.log(1 / 0.951), rel=0.01)
    assert result.recent_share > 0.1
    assert result.roughness < 1e-4
    assert result.best_epoch == 49


def test_slow_learner_counts_as_converged_with_a_higher_progress_share():
    # the same curve: only the progress_share rule made it "still learning"
    assert diagnose(slow_linear(), progress_share=0.5).verdict == "converged"


def test_still_learning_threshold_is_respected():
    # falling 36% over the window: still learning at 2%, and at 30% ...
    assert diagnose(still_falling(), still_learning=0.3, progress_share=0.5).verdict == "still_learning"
    # ... but not once both thresholds lie above what the curve does
    assert diagnose(still_falling(), still_learning=0.5, progress_share=0.5).verdict == "converged"


def test_plateau_is_converged():
    result = diagnose(plateau())
    assert result.verdict == "converged"
    assert 0 <= result.recent_improvement < 1e-4
    assert 0 <= result.recent_share < 1e-4
    assert result.roughness < 1e-4
    assert result.rise_from_best == 0.0
    assert result.reason.startswith("the loss changed 0.0% over the last 10 epochs")


def test_overfitting_when_val_rises_while_train_falls():
    result = diagnose(still_falling(), overfitting_val())
    assert result.verdict == "overfitting"
    assert result.best_epoch == 30
    assert result.rise_from_best == pytest.approx(0.2, rel=1e-9)
    # the judged (validation) loss rose over the window, from 1 + 0.2 * 10/19 to 1.2 times the best
    assert result.recent_improvement == pytest.approx(1 - 1.2 / (1 + 0.2 * 10 / 19), rel=1e-3)  # fit of a near-line
    assert result.recent_improvement < 0
    assert result.recent_share == 0.0
    assert "20.0% above its best (epoch 31)" in result.reason


def test_val_rise_below_threshold_is_not_overfitting():
    val = overfitting_val()
    assert diagnose(still_falling(), val, overfitting=0.25).verdict != "overfitting"


def test_val_rise_with_train_also_rising_is_not_overfitting():
    train = np.concatenate([np.exp(-0.1 * np.arange(31)), np.exp(-3.0) * (1 + 0.01 * np.arange(1, 20))])
    assert diagnose(train, overfitting_val()).verdict != "overfitting"


def test_alternating_noise_is_jumpy():
    noisy = 1.0 + 0.1 * (-1.0) ** EPOCHS  # 1.1, 0.9, 1.1, ...
    result = diagnose(noisy)
    assert result.verdict == "jumpy"
    # each step jumps ln(1.1) - ln(0.9) ~= 0.2007 in log-loss; the trend fit takes off a little
    assert result.roughness == pytest.approx(0.2, abs=0.002)
    assert 0.15 < result.roughness < 0.25
    assert result.best_epoch == 1
    assert result.rise_from_best == pytest.approx(0.0)  # the last epoch (odd) is at the minimum 0.9
    assert "20.0% per epoch" in result.reason


def test_jumpy_threshold_is_respected():
    noisy = np.exp(-0.05 * EPOCHS) * (1.0 + 0.005 * (-1.0) ** EPOCHS)  # a falling curve with a 0.5% wobble
    result = diagnose(noisy)
    assert result.roughness == pytest.approx(0.01, abs=0.001)  # steps of about 2 * 0.5% around the trend
    assert result.verdict == "still_learning"
    assert diagnose(noisy, jumpy=0.005).verdict == "jumpy"


def test_validation_loss_is_judged_when_given():
    flat_val = np.full(50, 0.3)
    result = diagnose(still_falling(), flat_val)
    assert result.verdict == "converged"
    assert abs(result.recent_improvement) < 1e-9
    assert result.recent_share == 0.0
    assert result.best_epoch == 0
    # an empty validation list falls back to the training loss
    assert diagnose(still_falling(), []).verdict == "still_learning"


def test_three_epochs_is_enough():
    result = diagnose([1.0, 0.5, 0.25])
    assert result.verdict == "still_learning"
    assert result.recent_improvement == pytest.approx(0.75)
    assert result.recent_share == pytest.approx(1.0)


@pytest.mark.parametrize("train, val", [([1.0, 0.5], None), ([], None), ([1.0, 0.8, 0.6, 0.5], [1.0, 0.9])])
def test_fewer_than_three_epochs_is_too_short_to_judge(train, val):
    result = diagnose(train, val)
    assert result.verdict == "too_short" and "too few" in result.reason


@pytest.mark.parametrize(
    "train, val",
    [([1.0, float("nan"), 0.5, 0.4], None), ([1.0, 0.5, float("inf")], None),
     ([1.0, 0.8, 0.6], [1.0, float("nan"), 0.8])],
)
def test_nonfinite_raises(train, val):
    with pytest.raises(ValueError, match="finite losses"):
        diagnose(train, val)


def test_metrics_keys_and_values():
    result = diagnose(still_falling(), overfitting_val())
    metrics = result.metrics()
    assert set(metrics) == {"diagnosis_recent_improvement", "diagnosis_recent_share", "diagnosis_roughness",
                            "diagnosis_rise_from_best", "diagnosis_best_epoch"}
    assert all(key.startswith("diagnosis_") for key in metrics)
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["diagnosis_best_epoch"] == 30.0
    assert metrics["diagnosis_rise_from_best"] == pytest.approx(0.2)


def test_verdicts_are_known_names():
    curves = [still_falling(), slow_linear(), plateau(), 1.0 + 0.1 * (-1.0) ** EPOCHS]
    verdicts = {diagnose(curve).verdict for curve in curves} | {diagnose(still_falling(), overfitting_val()).verdict}
    verdicts |= {diagnose([1.0, 0.5]).verdict}
    assert verdicts == set(DIAGNOSES)
    assert isinstance(diagnose(plateau()), Diagnosis)
