"""The lecture's "always check your loss function", automated: a loss-curve diagnosis.

`diagnose` reads the last `window` of a training run's epochs and names what the
curves say, with the numbers behind it:

- overfitting: validation loss has risen well above its best while training loss kept falling;
- jumpy: the epoch-to-epoch changes are large against the trend (a learning rate too high);
- still learning: the loss was still falling at the end, either by more than `still_learning`
  over the window or, for a slow learner, by more than `progress_share` of its whole fall
  (the curve had not flattened: more epochs, or a faster optimizer, would help);
- converged: none of the above;
- too_short: fewer than 3 epochs, nothing to judge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DIAGNOSES = ("overfitting", "jumpy", "still_learning", "converged", "too_short")


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # one of DIAGNOSES
    reason: str
    recent_improvement: float  # relative fall of the judged loss over the window (trend fit)
    recent_share: float  # the window's share of the whole fall in log-loss (about `window` if not flattening)
    roughness: float  # mean |relative change per epoch| left after removing the trend
    rise_from_best: float  # relative rise of val loss above its minimum
    best_epoch: int  # epoch (0-based) of the lowest judged loss

    def metrics(self) -> dict[str, float]:
        return {f"diagnosis_{key}": float(value) for key, value in asdict(self).items()
                if key not in ("verdict", "reason")}


def _trend_and_roughness(curve: np.ndarray) -> tuple[float, float]:
    """Relative fall over the curve from a straight-line fit to log(loss), and the residual noise per epoch."""
    log_curve = np.log(np.maximum(curve, 1e-12))
    epochs = np.arange(len(curve))
    slope, intercept = np.polyfit(epochs, log_curve, 1) if len(curve) > 1 else (0.0, log_curve[0])
    fall = 1.0 - float(np.exp(slope * (len(curve) - 1)))
    residual_steps = np.diff(log_curve - (slope * epochs + intercept))
    roughness = float(np.mean(np.abs(residual_steps))) if len(residual_steps) else 0.0
    return fall, roughness


def diagnose(
    train_loss: list[float] | np.ndarray,
    val_loss: list[float] | np.ndarray | None = None,
    window: float = 0.2,
    still_learning: float = 0.02,
    overfitting: float = 0.05,
    jumpy: float = 0.02,
    progress_share: float = 0.1,
) -> Diagnosis:
    """Judge a loss curve; validation loss is judged when given, else training loss."""
    train = np.asarray(train_loss, dtype=float)
    judged = np.asarray(val_loss, dtype=float) if val_loss is not None and len(val_loss) else train
    if not np.all(np.isfinite(judged)):
        raise ValueError(f"diagnosis needs finite losses, got {judged.tolist()[:5]}")
    if len(judged) < 3:
        return Diagnosis("too_short", f"{len(judged)} epoch(s) are too few to judge a loss curve (3 or more)",
                         0.0, 0.0, 0.0, 0.0, int(np.argmin(judged)) if len(judged) else 0)
    size = max(3, int(round(window * len(judged))))
    recent = judged[-size:]
    fall, roughness = _trend_and_roughness(recent)
    total_log_fall = float(np.log(judged[0] / judged.min())) if judged[0] > judged.min() else 0.0
    window_log_fall = -np.log1p(-fall) if fall < 1 else np.inf
    share = float(window_log_fall / total_log_fall) if total_log_fall > 0 and fall > 0 else 0.0
    trend_beats_noise = fall > roughness * size
    best_epoch = int(np.argmin(judged))
    rise = float(judged[-1] / judged[best_epoch] - 1.0)
    train_still_falling = train[-1] < train[min(best_epoch, len(train) - 1)]

    if rise > overfitting and best_epoch < len(judged) - 1 and train_still_falling:
        verdict = "overfitting"
        reason = (f"validation loss is {rise:.1%} above its best (epoch {best_epoch + 1}) "
                  f"while training loss kept falling")
    elif roughness > jumpy:
        verdict = "jumpy"
        reason = f"the loss moves {roughness:.1%} per epoch around its trend (threshold {jumpy:.1%})"
    elif fall > still_learning or (share > progress_share and trend_beats_noise):
        verdict = "still_learning"
        reason = (f"the loss fell {fall:.1%} over the last {size} epochs, {share:.0%} of its whole fall "
                  f"(thresholds {still_learning:.1%}, {progress_share:.0%}): it had not finished learning")
    else:
        verdict = "converged"
        reason = f"the loss changed {fall:.1%} over the last {size} epochs"
    return Diagnosis(verdict, reason, fall, share, roughness, rise, best_epoch)
