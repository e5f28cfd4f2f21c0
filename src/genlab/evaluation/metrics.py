"""Pure numpy measures of models: reconstruction errors, per-class summaries and ranks."""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7  # clip for log(0) in binary cross-entropy, as Keras does


def reconstruction_errors(images: np.ndarray, reconstructions: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean squared error and binary cross-entropy (pixels in [0, 1]), each of shape (N,)."""
    x = images.reshape(len(images), -1).astype(np.float64)
    x_hat = np.clip(reconstructions.reshape(len(reconstructions), -1).astype(np.float64), EPSILON, 1 - EPSILON)
    raw = reconstructions.reshape(len(reconstructions), -1).astype(np.float64)
    mse = np.mean((x - raw) ** 2, axis=1)
    bce = -np.mean(x * np.log(x_hat) + (1 - x) * np.log(1 - x_hat), axis=1)
    return {"mse": mse, "bce": bce}


def detail(images: np.ndarray, reconstructions: np.ndarray) -> dict[str, float]:
    """How much fine detail the reconstructions add: their total variation (the summed absolute differences
    between neighbouring pixels) over the originals' (1: as detailed as the digits; a speckled background
    is more), and the share of reconstructed pixels outside the image range [0, 1] (a linear output's)."""
    def total_variation(batch: np.ndarray) -> float:
        batch = batch.astype(np.float64)
        return float(np.abs(np.diff(batch, axis=1)).sum() + np.abs(np.diff(batch, axis=2)).sum())

    original = total_variation(images)
    return {"detail_ratio": total_variation(reconstructions) / original if original > 0 else float("inf"),
            "out_of_range_share": float(np.mean((reconstructions < 0) | (reconstructions > 1)))}


def per_class_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Mean of `values` within each class present, keyed by the class as a string."""
    return {str(label): float(values[labels == label].mean()) for label in range(num_classes)
            if np.any(labels == label)}


def worst_best_ratio(per_class: dict[str, float]) -> float:
    """How much worse the worst class is than the best (1 is even)."""
    values = np.array(list(per_class.values()))
    return float(values.max() / values.min()) if values.min() > 0 else float("inf")


def ranks(values: dict[str, float], higher_is_better: bool = False,
          intervals: dict[str, tuple[float, float]] | None = None) -> dict[str, int]:
    """1 + the number of others that are better for certain: with `intervals` (name -> (low, high)), those whose
    whole interval is better than this one's, so that models whose intervals overlap share a rank (a tie within
    noise); without, those with a better value (equal values share the better rank). NaN ranks last."""
    def badness(value: float) -> float:
        return np.inf if np.isnan(value) else (-value if higher_is_better else value)

    def span(name: str) -> tuple[float, float]:  # (best end, worst end), as badness
        ends = sorted(badness(end) for end in (intervals or {}).get(name, (values[name], values[name])))
        return (np.inf, np.inf) if np.isnan(values[name]) or np.isnan(ends).any() else (ends[0], ends[1])

    spans = {name: span(name) for name in values}
    return {name: 1 + sum(other[1] < spans[name][0] for other in spans.values()) for name in values}


def pca_2d(codes: np.ndarray) -> np.ndarray:
    """Project codes (N, D) onto their two main directions (zero-padded when D < 2)."""
    centred = codes - codes.mean(axis=0)
    if codes.shape[1] < 2:
        return np.hstack([centred, np.zeros((len(codes), 2 - codes.shape[1]))])
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    signs = np.sign(projected[np.argmax(np.abs(projected), axis=0), [0, 1]])  # a fixed orientation per axis
    return projected * np.where(signs == 0, 1, signs)


# --- sample quality: distances between feature distributions -------------------------------------
# Features are the judge's penultimate layer; "real" is the test split, "fake" a model's samples.


class TooFewSamples(ValueError):
    """A statistic needs more samples than it was given (named in the message)."""


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (FID when the features
    are a classifier's): |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r^1/2 S_f S_r^1/2)^1/2).

    The matrix square roots come from symmetric eigendecompositions (eigenvalues clipped at 0), so
    no complex parts or scipy.linalg.sqrtm iterations are involved.
    """
    dims = real.shape[1]
    for name, features in (("real", real), ("generated", fake)):
        if len(features) <= dims:
            raise TooFewSamples(f"the Frechet distance needs more {name} samples ({len(features)}) than feature "
                                f"dimensions ({dims}) for a full-rank covariance")
    return _frechet(_Gaussian.fit(real), fake)


class _Gaussian:
    """A Gaussian fitted to features: mean, covariance and the covariance's square root."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray) -> None:
        self.mean, self.cov, self.root = mean, cov, _symmetric_sqrt(cov)

    @classmethod
    def fit(cls, features: np.ndarray) -> _Gaussian:
        return cls(features.mean(axis=0), np.cov(features, rowvar=False))


def _frechet(real: _Gaussian, fake: np.ndarray) -> float:
    mean_f, cov_f = fake.mean(axis=0), np.cov(fake, rowvar=False)
    cross = _symmetric_sqrt(real.root @ cov_f @ real.root)
    distance = np.sum((real.mean - mean_f) ** 2) + np.trace(real.cov) + np.trace(cov_f) - 2 * np.trace(cross)
    return float(max(distance, 0.0))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, over random subsets; (mean, standard deviation) over the subsets."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise TooFewSamples(f"KID needs at least 2 samples of each set, got {len(real)} real and {len(fake)} generated")
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(num_subsets):
        x = real[rng.choice(len(real), size, replace=False)].astype(np.float64)
        y = fake[rng.choice(len(fake), size, replace=False)].astype(np.float64)
        estimates.append(_mmd(*(_cubic_kernel(a, b) for a, b in ((x, x), (y, y), (x, y)))))
    return float(np.mean(estimates)), float(np.std(estimates))


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _mmd(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """The unbiased MMD^2 from the kernel matrices within and across two sets (no point paired with itself)."""
    m, n = len(k_xx), len(k_yy)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def _kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point."""
    from scipy.spatial.distance import cdist

    if len(features) <= k:
        raise TooFewSamples(f"k-nearest-neighbour balls need more than k = {k} samples, got {len(features)}")
    distances = cdist(features, features)
    return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) and density and coverage (Naeem et
    al. 2020), from k-nearest-neighbour balls around each sample.

    precision: share of generated samples inside some real sample's ball (quality);
    recall: share of real samples inside some generated sample's ball (diversity);
    density: generated samples counted per real ball, over k (1 when they sit like real ones);
    coverage: share of real balls holding at least one generated sample.
    """
    from scipy.spatial.distance import cdist

    real_radii, fake_radii = _kth_neighbour_radii(real, k), _kth_neighbour_radii(fake, k)
    distances = cdist(real, fake)  # (real, fake)
    inside_real = distances <= real_radii[:, None]  # fake j inside real i's ball
    inside_fake = distances <= fake_radii[None, :]  # real i inside fake j's ball
    return {"precision": float(inside_real.any(axis=0).mean()), "recall": float(inside_fake.any(axis=1).mean()),
            "density": float(inside_real.sum() / (k * len(fake))), "coverage": float(inside_real.any(axis=1).mean())}


def _mmd_of_counts(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """_mmd of the sets that hold distinct image i x[i] (and y[i]) times, from the distinct images' kernels: the
    sums over pairs as quadratic forms of the counts, so that no matrix of the drawn sets is gathered."""
    m, n = x.sum(), y.sum()
    return float((x @ k_xx @ x - x @ np.diag(k_xx)) / (m * (m - 1)) + (y @ k_yy @ y - y @ np.diag(k_yy)) / (n * (n - 1))
                 - 2 * x @ k_xy @ y / (m * n))


# --- sampling intervals: how much a single run's numbers move with the images drawn -------------------

INTERVAL_METRICS = ("fid", "fid_to_floor", "kid", "precision", "recall", "coverage")
# where a re-centred interval may not reach (KID, an unbiased estimate, can be below 0)
INTERVAL_BOUNDS = {"fid": (0, np.inf), "fid_to_floor": (0, np.inf), "precision": (0, 1), "recall": (0, 1),
                   "coverage": (0, 1), "judge_confidence": (0, 1), "classes_covered": (0, np.inf)}


def count(value: float) -> str:
    """A count as a person reads it: 10, or a mean over seeds such as 9.7."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def bootstrap_intervals(real: np.ndarray, fake: np.ndarray, floor: np.ndarray, k: int = 3,
                        kid_subset_size: int = 1000, draws: int = 200, confidence: float = 0.95,
                        seed: int = 0, centre: dict[str, float] | None = None) -> dict[str, float]:
    """`<metric>_low` and `<metric>_high` of INTERVAL_METRICS: a bootstrap interval over the images, so that a
    single run's number has its error too. Each draw resamples the real (test) features, the generated ones and
    the floor's, each with replacement, and measures again: FID and FID over the floor (the floor's FID from the
    same real draw), KID (the unbiased MMD^2 over the first `kid_subset_size` of each set, KID's subset size),
    precision, recall and coverage (each image keeps the k-th-neighbour ball of the whole set: a duplicate
    drawn twice would otherwise shrink balls to nothing).

    A set drawn with replacement holds about 63% distinct images, which raises FID and KID and lowers coverage
    by itself, so the percentile interval of the draws need not even hold the measured value. The interval is
    the draws' spread about their median placed about the full sets' value (a percentile interval re-centred):
    [value - (median - low quantile), value + (high quantile - median)], where the value is `centre`'s (the
    reported one: KID's is a mean over random subsets) or else the one measured on the whole sets here."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    real_radii, fake_radii = _kth_neighbour_radii(real, k), _kth_neighbour_radii(fake, k)
    distances = cdist(real, fake)
    inside_real, inside_fake = distances <= real_radii[:, None], distances <= fake_radii[None, :]
    kid_real, kid_fake = (features[:kid_subset_size].astype(np.float64) for features in (real, fake))
    kernels = [_cubic_kernel(a, b) for a, b in ((kid_real, kid_real), (kid_fake, kid_fake), (kid_real, kid_fake))]

    def measure(r: np.ndarray, f: np.ndarray, g: np.ndarray) -> dict[str, float]:
        reference = _Gaussian.fit(real[r])
        fid, floor_fid = _frechet(reference, fake[f]), _frechet(reference, floor[g])
        # each image's count in the draw, of those in KID's subset: the kernel sums without gathering the matrices
        x, y = np.bincount(r, minlength=len(real))[:len(kid_real)], np.bincount(f, minlength=len(fake))[:len(kid_fake)]
        kid = _mmd_of_counts(*kernels, x, y)
        real_drawn, fake_drawn = np.unique(r), np.unique(f)  # "any ball" needs each image once
        return {"fid": fid, "fid_to_floor": fid / floor_fid if floor_fid > 0 else float("inf"), "kid": kid,
                "precision": float(inside_real[real_drawn].any(axis=0)[f].mean()),
                "recall": float(inside_fake[:, fake_drawn].any(axis=1)[r].mean()),
                "coverage": float(inside_real[:, fake_drawn].any(axis=1)[r].mean())}

    everything = measure(*(np.arange(len(features)) for features in (real, fake, floor))) | (centre or {})
    drawn = [measure(*(rng.integers(len(features), size=len(features)) for features in (real, fake, floor)))
             for _ in range(draws)]
    tail = 100 * (1 - confidence) / 2
    found = {}
    for metric in INTERVAL_METRICS:
        low, middle, high = np.percentile([draw[metric] for draw in drawn], [tail, 50, 100 - tail])
        bounds = INTERVAL_BOUNDS.get(metric, (-np.inf, np.inf))
        found[f"{metric}_low"] = float(np.clip(everything[metric] - (middle - low), *bounds))
        found[f"{metric}_high"] = float(np.clip(everything[metric] + (high - middle), *bounds))
    return found


def class_distribution(labels: np.ndarray, reference_shares: np.ndarray, min_share_ratio: float = 0.25
                       ) -> dict[str, object]:
    """How a sample set's classes (the judge's labels) spread: shares per class, the number of
    classes covered (share at least `min_share_ratio` of the class's reference share) and the total
    variation distance to the reference (training) shares, 0 (same) to 1 (disjoint)."""
    from genlab.evaluation.bias import shares as class_shares

    shares = class_shares(labels, len(reference_shares))
    covered = int(np.sum(shares >= min_share_ratio * reference_shares))
    return {"class_shares": {str(label): float(share) for label, share in enumerate(shares)},
            "classes_covered": covered,
            "class_share_tv_distance": float(0.5 * np.abs(shares - reference_shares).sum())}


def sample_quality(real: np.ndarray, fake: np.ndarray, k: int = 3, kid_subsets: int = 100,
                   kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every distribution metric of a sample set against the real features, in one dict."""
    kid, kid_std = kernel_inception_distance(real, fake, kid_subsets, kid_subset_size, seed)
    return {"fid": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std} | precision_recall(real, fake, k)


# --- within each class -------------------------------------------------------------------------------

# Intra-class FID is measured in this many principal components of the judge's features: a class of the test
# split has tens of images (27 on the digits, 75 on the MNIST sample), fewer than the judge's 128 features,
# and a Frechet distance needs more samples than dimensions for a full-rank covariance.
CLASS_FID_COMPONENTS = 16


def principal_projection(features: np.ndarray, components: int) -> np.ndarray:
    """The (F, components) directions of largest variance of (N, F) features, to project any features onto
    (after subtracting these features' mean)."""
    _, _, directions = np.linalg.svd(features - features.mean(axis=0), full_matrices=False)
    return directions[:components].T


def per_class_fid(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                  num_classes: int, components: int = CLASS_FID_COMPONENTS,
                  counts: np.ndarray | None = None) -> dict[str, float]:
    """FID within each class (intra-class FID): the real features of class c against the generated ones of
    class c (a conditional model's asked-for class, else the judge's label), at most `counts[c]` of them (the
    first), both projected onto the real features' first `components` principal directions. NaN for a class
    with too few of either."""
    mean = real.mean(axis=0)
    projection = principal_projection(real, min(components, real.shape[1]))
    real_projected, fake_projected = (real - mean) @ projection, (fake - mean) @ projection
    found = {}
    for label in range(num_classes):
        generated = fake_projected[fake_labels == label][:None if counts is None else int(counts[label])]
        try:
            found[str(label)] = frechet_distance(real_projected[real_labels == label], generated)
        except TooFewSamples:
            found[str(label)] = float("nan")
    return found


def within_class_quality(per_class: dict[str, float], floor: dict[str, float]) -> dict[str, object]:
    """Intra-class FID beside its data floor (the training images of each class against the test ones): the
    mean over the classes measured, the worst class and its ratio to its floor, and the classes that could
    not be measured (too few samples of them)."""
    ratios = {label: value / floor[label] for label, value in per_class.items()
              if np.isfinite(value) and np.isfinite(floor.get(label, np.nan)) and floor[label] > 0}
    measured = [value for value in per_class.values() if np.isfinite(value)]
    worst = max(ratios, key=ratios.get) if ratios else None
    return {"intra_class_fid": float(np.mean(measured)) if measured else float("nan"),
            "intra_class_fid_to_floor": float(np.mean(list(ratios.values()))) if ratios else float("nan"),
            "worst_class_fid_to_floor": ratios[worst] if worst is not None else float("nan"),
            "worst_fid_class": int(worst) if worst is not None else -1,
            "classes_unmeasured": int(len(per_class) - len(ratios)),
            "per_class_fid": per_class, "per_class_fid_to_floor": ratios}


def asked_for_accuracy(asked: np.ndarray, judged: np.ndarray, num_classes: int) -> dict[str, object]:
    """"Does it draw what you asked for?": per class asked for, the share of its samples the judge labels with
    that class; the mean over classes and the worst class."""
    per_class = per_class_mean((asked == judged).astype(np.float64), asked, num_classes)
    worst = min(per_class, key=per_class.get)
    return {"asked_class_accuracy": float(np.mean(list(per_class.values()))),
            "worst_asked_class_accuracy": per_class[worst], "worst_asked_class": int(worst),
            "per_class_asked_accuracy": per_class}


TIMING_MARKERS = ("_seconds", "seconds_per_", "per_second")


def split_timings(results: dict) -> tuple[dict, dict]:
    """(what a rerun reproduces bit for bit, wall-clock times): the DVC metrics files hold the first, so
    that `dvc metrics diff` after a rerun with the same params and seed shows no change; the times
    go to a file of their own."""
    timed = {key for key in results if any(marker in key for marker in TIMING_MARKERS)}
    return ({key: value for key, value in results.items() if key not in timed},
            {key: value for key, value in results.items() if key in timed})
