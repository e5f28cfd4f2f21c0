"""Representation audit: how each class is represented in each split (first version).

Pure functions over label arrays and images; the audit stage writes and logs what
they return. Split consistency is Pearson's chi-square test of independence on the
split-by-class contingency table: a small p-value says the splits do not share
one class distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def class_counts(labels_by_split: dict[str, np.ndarray], num_classes: int) -> pd.DataFrame:
    """Rows: splits (and `all`); columns: classes 0..num_classes-1; values: image counts."""
    rows = {name: np.bincount(labels, minlength=num_classes)[:num_classes] for name, labels in labels_by_split.items()}
    table = pd.DataFrame(rows).T
    table.loc["all"] = table.sum(axis=0)
    table.columns = [str(label) for label in range(num_classes)]
    return table


def class_shares(counts: pd.DataFrame) -> pd.DataFrame:
    return counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)


def imbalance_ratio(counts: np.ndarray) -> float:
    """Largest class count over smallest: 1 is balanced; inf when a class is missing."""
    counts = np.asarray(counts, dtype=float)
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


def split_consistency(counts: pd.DataFrame, significance: float) -> dict[str, float | bool]:
    """Chi-square test that the splits share one class distribution (the `all` row excluded)."""
    table = counts.drop(index="all", errors="ignore").to_numpy()
    table = table[:, table.sum(axis=0) > 0]  # a class absent everywhere carries no information
    statistic, p_value, dof, _ = stats.chi2_contingency(table)
    return {"chi2": float(statistic), "p_value": float(p_value), "dof": int(dof),
            "consistent": bool(p_value >= significance)}


def mean_images(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, H, W): the average image of each class (zeros for an absent class)."""
    means = np.zeros((num_classes, *x.shape[1:]), dtype=np.float32)
    for label in range(num_classes):
        members = x[y == label]
        if len(members):
            means[label] = members.mean(axis=0)
    return means


def audit_metrics(counts: pd.DataFrame, significance: float) -> dict:
    """The numbers `dvc metrics show` and MLflow display."""
    shares = class_shares(counts)
    per_split = {
        name: {"images": int(counts.loc[name].sum()), "imbalance_ratio": imbalance_ratio(counts.loc[name].to_numpy()),
               "min_class_share": float(shares.loc[name].min()), "max_class_share": float(shares.loc[name].max())}
        for name in counts.index
    }
    return {"splits": per_split, "split_consistency": split_consistency(counts, significance)}
