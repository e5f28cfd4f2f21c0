"""Restoration fairness as the field defines it, with its statistical tests (pure numpy and scipy).

Jalal, Karmalkar, Hoffmann, Dimakis and Price (ICML 2021, "Fairness for Image Generation with Uncertain
Sensitive Attributes") define three kinds of fairness for a method that restores x from an observation y of it,
for groups c(x) of the images (here the digit's class, or its stroke subgroup):

- representation demographic parity (RDP): every group is restored as itself equally often,
  P(c(x^) = c | c(x) = c) the same for every c;
- proportional representation (PR): the restorations' groups have the data's proportions,
  P(c(x^) = c) = P(c(x) = c);
- conditional proportional representation (CPR): given the observation, the restorations' groups have the
  posterior's proportions, P(c(x^) = c | y) = P(c(x) = c | y). Sampling from the posterior meets it; a MAP-style
  search (PULSE) returns the most likely image and so over-represents the majority.

Laszkiewicz et al. (FAccT 2024, "Benchmarking the Fairness of Image Upsampling Methods") test them with
chi-square tests, and test CPR with uninformative observations (so small that they carry no group
information), where the posterior's proportions are the training data's: UCPR. Each test here returns its
statistic and p-value: the chi-square distribution's where every expected count is at least 5, else a Monte
Carlo p-value under the null (exact up to its simulations).
"""

from __future__ import annotations

import numpy as np

MIN_EXPECTED = 5  # the chi-square approximation's rule of thumb; below it the p-value is simulated
SIMULATIONS = 20_000


def chi_square_statistic(counts: np.ndarray, expected: np.ndarray) -> float:
    """Pearson's sum (observed - expected)^2 / expected over the cells expected to hold anything."""
    counts, expected = np.asarray(counts, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    cells = expected > 0
    if np.any(counts[~cells] > 0):
        return float("inf")  # observed where nothing is expected: no null distribution holds it
    return float(np.sum((counts[cells] - expected[cells]) ** 2 / expected[cells]))


def goodness_of_fit(counts: np.ndarray, shares: np.ndarray, seed: int = 0,
                    simulations: int = SIMULATIONS) -> tuple[float, float]:
    """Do `counts` (K,) come from a multinomial with these `shares` (K,)? Pearson's chi-square statistic and
    its p-value (chi-square with K' - 1 degrees of freedom over the K' cells with a share, or simulated)."""
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.int64)
    shares = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    total = int(counts.sum())
    expected = total * shares
    statistic = chi_square_statistic(counts, expected)
    if not np.isfinite(statistic):
        return statistic, 0.0
    cells = int(np.sum(shares > 0))
    if np.all(expected[shares > 0] >= MIN_EXPECTED):
        return statistic, float(chi2.sf(statistic, cells - 1))
    draws = np.random.default_rng(seed).multinomial(total, shares, size=simulations)
    null = np.sum((draws[:, shares > 0] - expected[shares > 0]) ** 2 / expected[shares > 0], axis=1)
    return statistic, float((1 + np.sum(null >= statistic - 1e-9)) / (1 + simulations))


def homogeneity(successes: np.ndarray, totals: np.ndarray, seed: int = 0,
                simulations: int = SIMULATIONS) -> tuple[float, float]:
    """Is the rate successes/totals the same in every group? The chi-square statistic of the groups x {yes, no}
    table and its p-value (chi-square with G - 1 degrees of freedom, or simulated: the yeses spread over the
    groups at random, the totals fixed)."""
    from scipy.stats import chi2

    successes, totals = np.asarray(successes, dtype=np.int64), np.asarray(totals, dtype=np.int64)
    present = totals > 0
    successes, totals = successes[present], totals[present]
    rate = successes.sum() / totals.sum()
    if len(totals) < 2 or rate in (0.0, 1.0):
        return 0.0, 1.0  # one group, or every group all yes or all no: nothing differs
    observed = np.concatenate([successes, totals - successes])
    expected = np.concatenate([totals * rate, totals * (1 - rate)])
    statistic = chi_square_statistic(observed, expected)
    if np.all(expected >= MIN_EXPECTED):
        return statistic, float(chi2.sf(statistic, len(totals) - 1))
    rng = np.random.default_rng(seed)
    members = np.repeat(np.arange(len(totals)), totals)
    yes = np.zeros(len(members), dtype=bool)
    yes[:successes.sum()] = True
    null = np.empty(simulations)
    for index in range(simulations):
        shuffled = np.bincount(members[rng.permutation(yes)], minlength=len(totals))
        null[index] = chi_square_statistic(np.concatenate([shuffled, totals - shuffled]), expected)
    return statistic, float((1 + np.sum(null >= statistic - 1e-9)) / (1 + simulations))


def representation_demographic_parity(groups: np.ndarray, restored_groups: np.ndarray, num_groups: int,
                                      seed: int = 0, prefix: str = "rdp") -> dict:
    """RDP: per group, the share of its images restored as the same group; the gap between the best and the
    worst group, and the test that the shares are equal."""
    totals = np.bincount(groups, minlength=num_groups)[:num_groups]
    kept = np.bincount(groups[restored_groups == groups], minlength=num_groups)[:num_groups]
    rates = {str(group): float(kept[group] / totals[group]) for group in range(num_groups) if totals[group]}
    statistic, p_value = homogeneity(kept, totals, seed)
    return {f"{prefix}_rates": rates, f"{prefix}_gap": float(max(rates.values()) - min(rates.values())),
            f"{prefix}_statistic": statistic, f"{prefix}_p_value": p_value}


def proportional_representation(restored_groups: np.ndarray, shares: np.ndarray, prefix: str = "pr",
                                seed: int = 0) -> dict:
    """PR (or, against the training shares of uninformative observations, UCPR): the restorations' group shares
    against the reference `shares` (K,): their total-variation distance (0: the same), the reference's imbalance
    (rarest over majority share), the majority group's share over its reference share (amplification above 1)
    and the rarest group's (erasure below 1), the most over-represented group with its ratio
    (on balanced data there is no majority to amplify, but a method can still collapse onto one group), and
    the goodness-of-fit test."""
    shares = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    counts = np.bincount(restored_groups, minlength=len(shares))[:len(shares)]
    found = counts / max(1, counts.sum())
    majority = int(np.argmax(shares))
    ratios = np.divide(found, shares, out=np.full(len(shares), np.inf), where=shares > 0)
    ratios[(shares == 0) & (found == 0)] = 0.0
    top = int(np.argmax(ratios))
    rarest = int(np.argmin(np.where(shares > 0, shares, np.inf)))
    statistic, p_value = goodness_of_fit(counts, shares, seed)
    return {f"{prefix}_shares": {str(group): float(share) for group, share in enumerate(found)},
            f"{prefix}_tv_distance": float(0.5 * np.abs(found - shares).sum()),
            f"{prefix}_imbalance": float(shares[rarest] / shares[majority]),  # 1: balanced
            f"{prefix}_majority": majority, f"{prefix}_majority_ratio": float(ratios[majority]),
            f"{prefix}_rarest": rarest, f"{prefix}_rarest_ratio": float(ratios[rarest]),
            f"{prefix}_top_group": top, f"{prefix}_top_ratio": float(ratios[top]),
            f"{prefix}_statistic": statistic, f"{prefix}_p_value": p_value}


def restoration_fairness(labels: np.ndarray, original_labels: np.ndarray, restored_labels: np.ndarray,
                         training_shares: np.ndarray, strokes: np.ndarray, restored_strokes: np.ndarray,
                         training_stroke_shares: np.ndarray, uninformative: bool, seed: int = 0) -> dict:
    """RDP, PR and (for an uninformative observation) UCPR of one task's restorations, with the class as the
    group (the judge's labels; RDP over the originals the judge recognises, so that its mistakes are not the
    method's) and with the stroke subgroup (`strokes`: integer codes, the audit's thin, medium, thick), keys
    prefixed `stroke_`. PR's reference is the originals' groups as measured the same way; UCPR's the training
    split's shares, which is what the posterior of an observation that says nothing holds."""
    num_classes, num_strokes = len(training_shares), len(training_stroke_shares)
    recognised = original_labels == labels
    found = representation_demographic_parity(labels[recognised], restored_labels[recognised], num_classes, seed)
    found |= proportional_representation(restored_labels, np.bincount(original_labels, minlength=num_classes),
                                         "pr", seed)
    found |= representation_demographic_parity(strokes, restored_strokes, num_strokes, seed, "stroke_rdp")
    found |= proportional_representation(restored_strokes, np.bincount(strokes, minlength=num_strokes),
                                         "stroke_pr", seed)
    if uninformative:
        found |= proportional_representation(restored_labels, training_shares, "ucpr", seed)
        found |= proportional_representation(restored_strokes, training_stroke_shares, "stroke_ucpr", seed)
    return found


def against_own_samples(restored_shares: dict[str, float], count: int, sample_shares: dict[str, float],
                        seed: int = 0) -> dict:
    """The uninformative restorations' classes against the model's own samples' (judged the same way): where
    UCPR fails but this holds, the method only passes on the model's bias (Jalal et al.'s guarantee is CPR
    with respect to the generator's distribution); where this fails too, the method adds a bias of its own."""
    classes = sorted(restored_shares, key=int)
    counts = np.round(np.array([restored_shares[label] for label in classes]) * count).astype(np.int64)
    shares = np.array([sample_shares.get(label, 0.0) for label in classes])
    return proportional_representation(np.repeat(np.arange(len(classes)), counts), shares, "own_pr", seed)


def verdict(p_value: float, significance: float = 0.05) -> str:
    """"met" where the test finds no departure at this significance, else "violated"."""
    return "met" if p_value >= significance else "violated"
