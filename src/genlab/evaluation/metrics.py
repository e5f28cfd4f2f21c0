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


def ranks(values: dict[str, float], higher_is_better: bool = False) -> dict[str, int]:
    """1 for the best; ties share the better rank; NaN ranks last."""
    def badness(value: float) -> float:
        return np.inf if np.isnan(value) else (-value if higher_is_better else value)

    ordered = sorted(badness(value) for value in values.values())
    return {name: ordered.index(badness(value)) + 1 for name, value in values.items()}


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
    mean_r, mean_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root_r = _symmetric_sqrt(cov_r)
    cross = _symmetric_sqrt(root_r @ cov_f @ root_r)
    distance = np.sum((mean_r - mean_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2 * np.trace(cross)
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
    dims = real.shape[1]
    estimates = []
    for _ in range(num_subsets):
        x = real[rng.choice(len(real), size, replace=False)].astype(np.float64)
        y = fake[rng.choice(len(fake), size, replace=False)].astype(np.float64)
        k_xx, k_yy, k_xy = ((a @ b.T / dims + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diagonal = size * (size - 1)
        estimates.append((k_xx.sum() - np.trace(k_xx)) / off_diagonal + (k_yy.sum() - np.trace(k_yy)) / off_diagonal
                         - 2 * k_xy.mean())
    return float(np.mean(estimates)), float(np.std(estimates))


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
