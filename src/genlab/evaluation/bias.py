"""Is the bias in the data or in the model? Representation statistics and bias amplification.

The lecture asks it of the PULSE model: "models are neutral, the bias is in the data (or is
it?)". Pure numpy/scipy functions that answer it with numbers:

- the data side: how far each class's share is from what is expected, flagged by the
  four-fifths rule (a ratio outside 0.8-1.25, as Aequitas does) only when a multinomial
  bootstrap at the split's size says the gap is not chance; distances between splits;
- the model side: a sample set's class shares as labelled by the judge, corrected for the
  judge's own mistakes by black-box shift estimation (Lipton et al. 2018), so that a judge's
  confusion does not pass for bias; and amplification: the same disparity on the samples
  minus on the training data (AIF360's model-minus-data pattern), positive when the model
  made the data's imbalance worse.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

FOUR_FIFTHS = (0.8, 1.25)


def shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def split_distances(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """Total variation and Jensen-Shannon distance (base 2, 0..1) between two share vectors."""
    return {"tv_distance": float(0.5 * np.abs(first - second).sum()),
            "js_distance": float(jensenshannon(first, second, base=2))}


def goodness_of_fit(counts: np.ndarray, expected_shares: np.ndarray) -> dict[str, float]:
    """Chi-square goodness of fit of class counts against expected shares."""
    expected = expected_shares / expected_shares.sum() * counts.sum()
    result = stats.chisquare(counts, expected)
    return {"chi2": float(result.statistic), "p_value": float(result.pvalue)}


def representation_flags(counts: np.ndarray, expected_shares: np.ndarray, bootstraps: int = 2000,
                         level: float = 0.95, seed: int = 0) -> list[dict]:
    """Per class: its share over the expected share (the representation ratio), the bootstrap interval
    of that ratio for a split of this size drawn from the expected shares, and a flag with its reason
    when the ratio is outside the four-fifths band and outside the interval (not chance)."""
    total = int(counts.sum())
    expected_shares = expected_shares / expected_shares.sum()
    draws = np.random.default_rng(seed).multinomial(total, expected_shares, size=bootstraps) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (counts / total) / expected_shares
        bootstrap_ratios = draws / expected_shares
    low, high = np.quantile(bootstrap_ratios, [(1 - level) / 2, (1 + level) / 2], axis=0)
    rows = []
    for label, ratio in enumerate(ratios):
        outside_band = not FOUR_FIFTHS[0] <= ratio <= FOUR_FIFTHS[1]
        beyond_chance = not low[label] <= ratio <= high[label]
        reason = ""
        if outside_band and beyond_chance:
            side = "under" if ratio < 1 else "over"
            reason = (f"class {label} is {side}-represented: {ratio:.2f}x its expected share, outside the "
                      f"four-fifths band {FOUR_FIFTHS[0]}-{FOUR_FIFTHS[1]} and the {level:.0%} chance interval "
                      f"{low[label]:.2f}-{high[label]:.2f} at {total} images")
        rows.append({"class": label, "ratio": float(ratio), "chance_low": float(low[label]),
                     "chance_high": float(high[label]), "flagged": bool(reason), "reason": reason})
    return rows


# --- the model side -------------------------------------------------------------------------------


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """C[i, j] = P(the judge says i | the image is of class j), from labelled images (the test split)."""
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (predicted, true), 1.0)
    return counts / np.maximum(counts.sum(axis=0, keepdims=True), 1.0)


def corrected_shares(predicted_shares: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """Black-box shift estimation: the true class shares p of a sample set from the judge's predicted
    shares q = C p, solved by least squares, clipped at 0 and renormalised."""
    solution, *_ = np.linalg.lstsq(confusion, predicted_shares, rcond=None)
    solution = np.clip(solution, 0.0, None)
    return solution / solution.sum() if solution.sum() > 0 else predicted_shares


def disparity(class_shares: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How unevenly classes are represented against a reference (the balanced or expected shares):
    the total variation from it, the smallest and largest share ratio, and the classes missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(reference > 0, class_shares / reference, np.nan)
    return {"tv_from_reference": float(0.5 * np.abs(class_shares - reference).sum()),
            "min_share_ratio": float(np.nanmin(ratios)), "max_share_ratio": float(np.nanmax(ratios)),
            "missing_classes": int(np.sum((class_shares == 0) & (reference > 0)))}


def kl_divergence(reference: np.ndarray, other: np.ndarray, floor: float = 1e-6) -> float:
    """KL(reference || other) in nats, with `other` floored so that a missing class costs a finite amount."""
    other = np.maximum(other, floor)
    other = other / other.sum()
    mask = reference > 0
    return float(np.sum(reference[mask] * np.log(reference[mask] / other[mask])))


def amplification(sample_shares: np.ndarray, training_shares: np.ndarray) -> dict[str, float]:
    """Model minus data: the samples' disparity from balance less the training data's. Positive: the model
    amplified the data's imbalance; negative: it evened it out; near 0: it reproduced it. Also the
    samples' distance to the training shares (what the model got wrong about the data at all)."""
    balanced = np.full_like(training_shares, 1.0 / len(training_shares))
    model, data = disparity(sample_shares, balanced), disparity(training_shares, balanced)
    return {"bias_amplification": model["tv_from_reference"] - data["tv_from_reference"],
            "min_ratio_change": model["min_share_ratio"] - data["min_share_ratio"],
            "tv_to_training": float(0.5 * np.abs(sample_shares - training_shares).sum()),
            "kl_training_to_samples": kl_divergence(training_shares, sample_shares)}


def share_ratios(sample_shares: np.ndarray, training_shares: np.ndarray) -> dict[str, float]:
    """Each class's share among the samples over its share in training: 1 reproduces the data, above 1 the
    model over-represents the class, below 1 it under-represents it (0: the class is missing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(training_shares > 0, sample_shares / training_shares, np.nan)
    return {str(label): float(ratio) for label, ratio in enumerate(ratios)}


def amplification_noise(training_shares: np.ndarray, num_samples: int, bootstraps: int = 2000, level: float = 0.95,
                        seed: int = 0) -> float:
    """The bias amplification a faithful model shows by chance: samples drawn with exactly the training
    shares still scatter, by about 0.04 in total variation for 1000 samples of 10 classes. The `level`
    quantile of that over multinomial draws; a model's amplification above it is not chance."""
    draws = np.random.default_rng(seed).multinomial(num_samples, training_shares, size=bootstraps) / num_samples
    balanced = np.full_like(training_shares, 1.0 / len(training_shares))
    data = 0.5 * np.abs(training_shares - balanced).sum()
    return float(np.quantile(0.5 * np.abs(draws - balanced).sum(axis=1) - data, level))
