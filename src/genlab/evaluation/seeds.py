"""An answer you can trust: the same model trained with several seeds, and each metric's mean and interval over them.

Lucic et al. 2018 ("Are GANs created equal?") trained every GAN many times and found that most variants tie once
the seeds are counted. genlab trains each model `train.seeds` times (or `models.<name>.seeds`), with the seeds
`seed, seed + 1, ...` of its entry. The first seed's model is the model's folder as it always was (the one the
registry and the restoration use); each further seed's sits in `seeds/<seed>/` inside it
(genlab.training.summary.further_seed_dirs). Every scalar a seed's
evaluation measures is reported as its mean over the seeds, with a Student-t interval of that mean.
"""

from __future__ import annotations

import numpy as np

SEEDS_FILE = "seeds.json"  # inside an evaluation's folder: every seed's values, their means and intervals


def interval_of_mean(values, confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of a few values (seeds), holding `confidence`.
    One value has no spread: its interval is the value itself; NaN among them gives NaN."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2 or not np.isfinite(values).all():
        return (mean, mean, mean) if len(values) == 1 else (mean, float("nan"), float("nan"))
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


LABELS = ("_class",)  # keys that name a class (worst_fid_class, rarest_class): the first seed's, never averaged


def scalars(results: dict) -> dict[str, float]:
    """The numbers of an evaluation's results that a mean can be taken of (no flags, labels or nested values)."""
    return {key: float(value) for key, value in results.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith(LABELS)}


def over_seeds(per_seed: dict[int, dict], confidence: float,
               bounds: dict[str, tuple[float, float]] | None = None) -> dict:
    """Every scalar that all seeds measured: each seed's value, the mean and its interval over the seeds (clipped
    to `bounds`, a measure's possible range: FID is not negative, a share not above 1)."""
    found = [scalars(results) for results in per_seed.values()]
    keys = [key for key in found[0] if all(key in values for values in found[1:])]
    summary = {"seeds": list(per_seed), "confidence": confidence, "values": {}, "mean": {}, "low": {}, "high": {}}
    for key in keys:
        values = [values[key] for values in found]
        summary["values"][key] = values
        mean, low, high = interval_of_mean(values, confidence)
        low, high = np.clip([low, high], *(bounds or {}).get(key, (-np.inf, np.inf)))
        summary["mean"][key], summary["low"][key], summary["high"][key] = mean, float(low), float(high)
    return summary


def reported(first: dict, summary: dict, interval_metrics) -> dict:
    """The first seed's results with every scalar that differs between seeds replaced by its mean over them (one
    that does not, such as the number of parameters, stays as it was, an integer), and the intervals of
    `interval_metrics` (`<metric>_low`, `<metric>_high`: each seed's over its images) replaced by the interval of
    the mean over the seeds; `num_seeds` added. What the DVC metrics file and the model's run report: with one
    seed, the first seed's results as they were."""
    if len(summary["seeds"]) < 2:
        return first
    found = first | {key: value for key, value in summary["mean"].items()  # the same in every seed: as it was
                     if not key.endswith(("_low", "_high")) and len(set(summary["values"][key])) > 1}
    for metric in interval_metrics:
        if metric in summary["mean"]:
            found[f"{metric}_low"], found[f"{metric}_high"] = summary["low"][metric], summary["high"][metric]
    return found | {"num_seeds": len(summary["seeds"])}


def intervals(over_seeds: dict, values: dict) -> dict[str, float]:
    """`<key>_low` and `<key>_high` over the seeds of every key of `values` that the seeds measured (not of the
    intervals themselves)."""
    return {f"{key}_{end}": over_seeds[end][key] for key in over_seeds["low"]
            if key in values and not key.endswith(("_low", "_high")) for end in ("low", "high")}
