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


def per_class_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Mean of `values` within each class present, keyed by the class as a string."""
    return {str(label): float(values[labels == label].mean()) for label in range(num_classes) if np.any(labels == label)}


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
