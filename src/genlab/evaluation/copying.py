"""Does a model copy its training images? The first thing a reviewer asks of a generative model trained on a
thousand images, and one FID cannot answer: a model that returned its training split would score exactly the
data floor, the best FID there is.

Two tests, each in pixels and in the judge's features:

- **The held-out test** (the verdict's): the training split is cut into K sets as large as the test split, so that
  with the test split there are K + 1 sets of real images from one distribution, K of them seen in training. For
  each sample, the set that holds its nearest image: a model that learned the distribution and not the images
  finds the unseen set nearest for 1/(K + 1) of its samples, whatever its samples look like; a model that copies
  (or copies with a little blur or noise) finds it nearest for almost none. `heldout_ratio` is the unseen set's
  share over 1/(K + 1) (1: like unseen data, 0: every sample's nearest image was trained on), counted over the
  distinct nearest images (samples collapsed onto one image are one observation), with a binomial p-value.
- **Meehan, Chaudhuri and Dasgupta's C_T** (AISTATS 2020): the training images cut into k-means cells; in each,
  the samples' distances to their nearest training image against the unseen images' by a Mann-Whitney U test as
  a z-score; C_T is their mean weighted by the unseen images' share of each cell, over the cells holding at least
  a share `tau` of the samples. Samples closer to the training images than unseen images are give C_T << 0, and
  samples farther (an underfitting model's, the usual case) C_T > 0. A model that draws only typical digits is
  closer to *some* training image than real digits are, copies or not (a VAE sampled cold scores C_T = -4.7 on
  the digits, and the unseen set holds its samples' nearest images 0.78x as often as its share, p = 0.05): C_T
  is reported, the verdict is the held-out test's.

Beside them, the plain nearest-neighbour view: the samples' median distance to the training split over the
unseen images', and the share of samples closer to a training image than 95% of unseen images are (5% when they
sit like unseen data). `compare` flags a model whose held-out ratio is under `compare.min_heldout_ratio` (0.5),
with p under SIGNIFICANCE, in either space.
"""

from __future__ import annotations

import numpy as np

SPACES = (("pixels", "pixels"), ("features", "the judge's features"))  # (key suffix, in words)
CLOSE_QUANTILE = 0.05  # "closer than 95% of unseen images are": the unseen images' 5% quantile of distances
SIGNIFICANCE = 0.001  # a held-out ratio under the line counts only when chance explains it this rarely


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each query's Euclidean distance to its nearest reference point (rows of flattened arrays)."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(queries)
    return distances[:, 0]


def u_z_score(sample_distances: np.ndarray, unseen_distances: np.ndarray) -> float:
    """The Mann-Whitney U of the samples' distances against the unseen images', z-scored under the null of
    one distribution (with the continuity correction of Meehan et al.'s code): below 0 when samples are closer."""
    from scipy.stats import mannwhitneyu

    m, n = len(sample_distances), len(unseen_distances)
    u = mannwhitneyu(sample_distances, unseen_distances).statistic  # pairs where the sample is farther
    return float((u - (m * n / 2 - 0.5)) / np.sqrt(m * n * (m + n + 1) / 12))


def data_copying(training: np.ndarray, unseen: np.ndarray, samples: np.ndarray, cells: int = 10,
                 tau: float = 0.02, seed: int = 0) -> dict[str, float]:
    """Meehan et al.'s C_T of `samples` against `training`, with `unseen` real images as the reference, in the
    space of the given rows (pixels or features, flattened), and the nearest-neighbour summaries.

    ct: the statistic; ct_p_value: the one-sided chance of a C_T this low without copying (the weighted mean
    of independent standard normal z-scores has standard deviation sqrt(sum of squared weights));
    cells_used: the cells holding at least `tau` of the samples; nearest_ratio: the samples' median distance
    to the training split over the unseen images'; close_share: the share of samples closer to a training
    image than 95% of unseen images are."""
    from scipy.stats import norm
    from sklearn.cluster import KMeans

    training, unseen, samples = (np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
                                 for rows in (training, unseen, samples))
    cells = min(cells, len(unseen), len(training))
    partition = KMeans(n_clusters=cells, n_init=3, random_state=seed).fit(training)
    in_training, in_unseen, in_samples = (partition.predict(rows) for rows in (training, unseen, samples))
    weights, scores = [], []
    for cell in range(cells):
        mine, theirs = samples[in_samples == cell], unseen[in_unseen == cell]
        if len(mine) < max(tau * len(samples), 1) or len(theirs) == 0:
            continue  # too few samples here to test (the cell is left out of Pi_tau)
        reference = training[in_training == cell]
        scores.append(u_z_score(nearest_distances(mine, reference), nearest_distances(theirs, reference)))
        weights.append(len(theirs) / len(unseen))
    everywhere = nearest_distances(samples, training), nearest_distances(unseen, training)
    found = {"nearest_ratio": float(np.median(everywhere[0]) / np.median(everywhere[1])),
             "close_share": float(np.mean(everywhere[0] < np.quantile(everywhere[1], CLOSE_QUANTILE))),
             "cells_used": len(scores)}
    if not scores:  # every sample in cells without unseen images: nothing to compare
        return found | {"ct": float("nan"), "ct_p_value": float("nan")}
    weights = np.array(weights) / np.sum(weights)
    ct = float(weights @ np.array(scores))
    return found | {"ct": ct, "ct_p_value": float(norm.cdf(ct / np.sqrt(np.sum(weights ** 2))))}


def heldout_test(training: np.ndarray, unseen: np.ndarray, samples: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The held-out test (module docstring), over the distinct images nearest to some sample (samples that
    collapse onto a few images are a few observations, not many): `heldout_ratio`, the share of those images
    in the unseen set over its fair share 1/(K + 1); `heldout_p_value`, the binomial chance of so few without
    copying; `heldout_images`, how many distinct images; `heldout_sets`, K + 1."""
    from scipy.stats import binomtest
    from sklearn.neighbors import NearestNeighbors

    training, unseen, samples = (np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
                                 for rows in (training, unseen, samples))
    size = len(unseen)
    sets = len(training) // size
    if sets < 1:  # fewer training images than unseen ones: no training set of their size
        return {"heldout_ratio": float("nan"), "heldout_sets": 1, "heldout_images": 0, "heldout_p_value": float("nan")}
    order = np.random.default_rng(seed).permutation(len(training))
    found = [NearestNeighbors(n_neighbors=1).fit(rows).kneighbors(samples)
             for rows in [training[order[index * size:(index + 1) * size]] for index in range(sets)] + [unseen]]
    distances, indices = (np.concatenate([part[column] for part in found], axis=1) for column in (0, 1))
    nearest_set = distances.argmin(axis=1)
    images = np.unique(nearest_set * size + indices[np.arange(len(samples)), nearest_set])  # (set, image) as one id
    in_unseen = int(np.sum(images // size == sets))
    return {"heldout_ratio": in_unseen / len(images) * (sets + 1), "heldout_sets": sets + 1,
            "heldout_images": len(images),
            "heldout_p_value": float(binomtest(in_unseen, len(images), 1 / (sets + 1), alternative="less").pvalue)}


def copying_report(training_images: np.ndarray, unseen_images: np.ndarray, samples: np.ndarray,
                   training_features: np.ndarray, unseen_features: np.ndarray, sample_features: np.ndarray,
                   cells: int, seed: int) -> dict[str, float]:
    """Both tests in pixels and in the judge's features, as `copying_<measure>_<space>` keys."""
    spaces = {"pixels": (training_images, unseen_images, samples),
              "features": (training_features, unseen_features, sample_features)}
    return {f"copying_{key}_{space}": value for space, rows in spaces.items()
            for key, value in (heldout_test(*rows, seed=seed) | data_copying(*rows, cells=cells, seed=seed)).items()}


def copies(results: dict, min_heldout_ratio: float) -> str | None:
    """Why a model's samples count as copies of its training images (None when they do not): the unseen set
    nearest for less than `min_heldout_ratio` of its fair share, beyond chance (p under SIGNIFICANCE), in pixels
    or in the judge's features."""
    found = [f"the unseen images nearest {results[f'copying_heldout_ratio_{space}']:.2f}x as often as the "
             f"training images in {name}" for space, name in SPACES
             if results.get(f"copying_heldout_ratio_{space}", np.nan) < min_heldout_ratio
             and results.get(f"copying_heldout_p_value_{space}", np.nan) < SIGNIFICANCE]
    return " and ".join(found) or None
