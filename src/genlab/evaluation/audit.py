"""Representation audit: how each class, and each stroke subgroup within a class, is represented.

Pure functions over label arrays, morphometric tables and images; the audit stage writes
and logs what they return. Split consistency is Pearson's chi-square test of independence
on the split-by-class contingency table: a small p-value says the splits do not share one
class distribution. Per split, each class's share is compared with the whole data set's
(goodness of fit) and with a balanced share (`genlab.evaluation.bias.representation_flags`: the
four-fifths rule with a bootstrap noise floor), and within each class the thin/medium/thick
and left/upright/right subgroups are counted
(`genlab.evaluation.morphometry`), so that a thin cell (few thin 7s, say) is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from genlab.evaluation import bias


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


def class_representation(counts: pd.DataFrame, seed: int = 0) -> dict:
    """Per split: goodness of fit against uniform and against the whole data set, the distances to the
    other splits, and each class's representation ratio to a balanced share with its flag (and reason)."""
    whole = counts.loc["all"].to_numpy(dtype=float)
    whole_shares = whole / whole.sum()
    uniform = np.full(len(whole), 1.0 / len(whole))
    shares = class_shares(counts)
    report = {}
    for split in counts.index.drop("all"):
        observed = counts.loc[split].to_numpy(dtype=float)
        report[split] = {
            "fit_to_uniform": bias.goodness_of_fit(observed, uniform),
            "fit_to_whole": bias.goodness_of_fit(observed, whole_shares),
            "distances": {other: bias.split_distances(shares.loc[split].to_numpy(), shares.loc[other].to_numpy())
                          for other in counts.index.drop(["all", split])},
            "classes": bias.representation_flags(observed, uniform, seed=seed),  # against balance
        }
    return report


def subgroup_counts(labels: np.ndarray, groups: pd.Series, num_classes: int, names: tuple[str, ...]) -> pd.DataFrame:
    """Rows: classes; columns: the subgroups `names`; values: image counts."""
    table = pd.crosstab(pd.Categorical(labels, categories=range(num_classes)),
                        pd.Categorical(groups, categories=names), dropna=False)
    table.index = [str(label) for label in range(num_classes)]
    return table


def thin_cells(table: pd.DataFrame, ratio: float) -> list[str]:
    """Class-by-subgroup cells holding fewer than `ratio` times the images expected if every class had
    the subgroup's overall share (the independence expectation: class total x subgroup total / total)."""
    values = table.to_numpy(dtype=float)
    expected = values.sum(axis=1, keepdims=True) * values.sum(axis=0, keepdims=True) / max(values.sum(), 1.0)
    rows, columns = np.nonzero(values < ratio * expected)
    return [f"class {table.index[row]}, {table.columns[column]}: {int(values[row, column])} images, "
            f"{values[row, column] / expected[row, column]:.2f}x the {expected[row, column]:.1f} expected "
            f"from the subgroup's overall share" for row, column in zip(rows, columns)]


def data_card(source: str, image_shape: tuple[int, int], counts: pd.DataFrame, representation: dict,
              consistency: dict, strokes: pd.DataFrame, slants: pd.DataFrame, thin: list[str],
              thresholds: tuple[float, float], injected: dict[int, float],
              injected_subgroups: dict[int, dict[str, float]] | None = None, upright_degrees: float = 10.0,
              origin: str = "") -> str:
    """A Markdown data card written from the measured numbers; `origin` says where the images come from."""
    flags = [row["reason"] for split in representation.values() for row in split["classes"] if row["flagged"]]
    lines = [f"# Data card: {source}", "", *([f"Origin: {origin}.", ""] if origin else []),
             "## Composition", "",
             f"{int(counts.loc['all'].sum())} images of {image_shape[0]}x{image_shape[1]} pixels in "
             f"{counts.shape[1]} classes; imbalance ratio (largest class over smallest) "
             f"{imbalance_ratio(counts.loc['all'].to_numpy()):.2f}.", "",
             counts.to_markdown(), "",
             "## Splits", "",
             f"Chi-square test that the splits share one class distribution: chi2 {consistency['chi2']:.2f}, "
             f"p {consistency['p_value']:.3g} ({'consistent' if consistency['consistent'] else 'NOT consistent'}).",
             ""]
    for split, found in representation.items():
        distances = ", ".join(f"{other}: TV {values['tv_distance']:.3f}, JS {values['js_distance']:.3f}"
                              for other, values in found["distances"].items())
        lines.append(f"- {split}: fit to the whole data set p {found['fit_to_whole']['p_value']:.3g}, to uniform "
                     f"p {found['fit_to_uniform']['p_value']:.3g}; distances {distances}.")
    lines += ["", "## Subgroups within classes", "",
              f"Stroke thickness tertiles over the held-out images: thin below {thresholds[0]:.2f} px, thick above "
              f"{thresholds[1]:.2f} px (original pixels); slant left below -{upright_degrees:g} degrees, right "
              f"above +{upright_degrees:g}.", "",
              strokes.to_markdown(), "", slants.to_markdown(), "",
              "## Flags", ""]
    lines += [f"- {flag}" for flag in flags] or ["- no class is flagged (four-fifths rule beyond chance)."]
    lines += [f"- thin cell: {cell}" for cell in thin]
    if injected:
        lines += [f"- injected on purpose (`data.keep_fraction`): class {label} keeps {fraction:.0%} of its "
                  f"training images" for label, fraction in sorted(injected.items())]
    lines += [f"- injected on purpose (`data.keep_subgroup`): class {label} keeps {fraction:.0%} of its {group} "
              f"training images" for label, groups in sorted((injected_subgroups or {}).items())
              for group, fraction in groups.items()]
    lines += ["", "## Known limits", "",
              f"- The images are {image_shape[0]}x{image_shape[1]}: morphometry is measured on an upscaled, "
              "binarised copy, so thickness and width carry about a quarter-pixel of error.",
              "- Subgroups are drawn by thresholds on measured stroke properties, not by who wrote the digit; "
              "they describe how a digit is drawn, not a protected attribute.",
              "- Flags compare each class with a balanced share (1 / classes); a naturally rare class is flagged "
              "too, which is the point: the models learn from these shares.", ""]
    return "\n".join(lines)


@dataclass
class Audit:
    """Everything the audit found: its DVC metrics and the tables, measures and card behind them."""

    metrics: dict
    counts: pd.DataFrame  # images per split and class
    representation: dict  # per split: each class's ratio to a balanced share, its flag and reason; distances
    measures: pd.DataFrame  # every image's morphometry, split, label and subgroups
    strokes: pd.DataFrame  # training images by class and stroke subgroup
    slants: pd.DataFrame
    thin: list[str]  # the thin class-by-subgroup cells, in words
    expectations: dict  # great-expectations' verdict on the training split's representation
    card: str  # the data card (Markdown)
    means: np.ndarray  # the mean training image per class

    @property
    def flagged(self) -> dict[str, list[dict]]:
        return {split: [row for row in found["classes"] if row["flagged"]]
                for split, found in self.representation.items()}


def audit(prepared, settings, data_settings, max_class_kl: float) -> Audit:
    """The representation audit of the prepared splits: classes (counts, shares, imbalance, split
    consistency, four-fifths flags beyond a bootstrap noise floor), stroke and slant subgroups (Morpho-MNIST
    measures, thin cells), great-expectations on the training split's representation, and the data card.
    `settings` is params.audit, `data_settings` params.data (the seed and the injected bias)."""
    from genlab.data.validate import validate_representation
    from genlab.evaluation import morphometry

    by_split = prepared.splits()
    counts = class_counts({name: split.y for name, split in by_split.items()}, prepared.num_classes)
    metrics = audit_metrics(counts, settings.significance)
    representation = class_representation(counts, seed=data_settings.seed)
    measures = pd.concat([morphometry.measure(split.x).assign(split=name, label=split.y)
                          for name, split in by_split.items()], ignore_index=True)
    thresholds = morphometry.stroke_thresholds(measures.loc[measures["split"] != "train", "thickness"].to_numpy())
    measures = measures.join(morphometry.subgroups(measures, thresholds, settings.upright_degrees))
    train = measures[measures["split"] == "train"]
    strokes = subgroup_counts(train["label"].to_numpy(), train["stroke_group"], prepared.num_classes,
                              morphometry.STROKES)
    slants = subgroup_counts(train["label"].to_numpy(), train["slant_group"], prepared.num_classes,
                             morphometry.SLANTS)
    thin = thin_cells(strokes, settings.thin_cell_ratio) + thin_cells(slants, settings.thin_cell_ratio)
    held_out = np.concatenate([prepared.validation.y, prepared.test.y])  # never injected: the natural partition
    expectations = validate_representation(prepared.train.y, prepared.num_classes,
                                           np.bincount(held_out, minlength=prepared.num_classes) / len(held_out),
                                           max_class_kl)
    flagged = {split: sum(row["flagged"] for row in found["classes"]) for split, found in representation.items()}
    metrics |= {
        "representation": {split: {"flagged_classes": flagged[split],
                                   "min_class_ratio": min(row["ratio"] for row in found["classes"]),
                                   "fit_to_uniform_p": found["fit_to_uniform"]["p_value"],
                                   "fit_to_whole_p": found["fit_to_whole"]["p_value"]}
                           | {f"tv_to_{other}": values["tv_distance"] for other, values in found["distances"].items()}
                           | {f"js_to_{other}": values["js_distance"] for other, values in found["distances"].items()}
                           for split, found in representation.items()},
        "expectations": {"train_representation_success": bool(expectations["success"]),
                         "failed": len(expectations["failures"])},
        "subgroups": {"thin_cells": len(thin), "thick_stroke_threshold": thresholds[1],
                      "thin_stroke_threshold": thresholds[0]}
                     | {f"train_{group}_share": float(np.mean(train["stroke_group"] == group))
                        for group in morphometry.STROKES}
                     | {f"train_{group}_share": float(np.mean(train["slant_group"] == group))
                        for group in morphometry.SLANTS},
    }
    card = data_card(prepared.source, prepared.image_shape, counts, representation, metrics["split_consistency"],
                     strokes, slants, thin, thresholds, dict(data_settings.keep_fraction),
                     dict(data_settings.keep_subgroup), settings.upright_degrees, origin=prepared.origin)
    return Audit(metrics, counts, representation, measures, strokes, slants, thin, expectations, card,
                 mean_images(prepared.train.x, prepared.train.y, prepared.num_classes))


def describe(found: Audit) -> str:
    """The audit in a line: imbalance, split consistency, flagged classes per split, thin subgroup cells."""
    consistency = found.metrics["split_consistency"]
    return (f"imbalance ratio {found.metrics['splits']['all']['imbalance_ratio']:.2f}; split consistency "
            f"chi2 {consistency['chi2']:.2f}, p {consistency['p_value']:.3f}; flagged classes "
            f"{ {split: len(rows) for split, rows in found.flagged.items()} }; thin subgroup cells {len(found.thin)}")


def run_metrics(metrics: dict, per_split: tuple[str, ...]) -> tuple[dict[str, float], pd.DataFrame]:
    """The audit run's scalars, the ones a person compares: one chart section per split ("all": the three
    together) and per check; and every value of every split as a table."""
    every = {split: metrics["splits"].get(split, {}) | metrics["representation"].get(split, {})
             for split in dict.fromkeys([*metrics["splits"], *metrics["representation"]])}
    scalars = ({f"{split}/{key}": values[key] for split, values in every.items() for key in per_split if key in values}
               | {f"split_consistency/{key}": float(metrics["split_consistency"][key]) for key in ("chi2", "p_value")}
               | {"subgroups/thin_cells": metrics["subgroups"]["thin_cells"],
                  "expectations/failed": metrics["expectations"]["failed"]})
    return scalars, pd.DataFrame([{"split": split} | values for split, values in every.items()])
