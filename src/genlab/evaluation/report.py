"""What `evaluate@<model>` measures of a trained model, as functions of arrays: its samples against the
test split in the judge's features beside the data floor, its reconstructions (encoders), its bias, its
family's own metrics and figures; and what becomes of them: the DVC metrics, the MLflow run's scalars and
tables, the sentences of its description, the files `compare` lines up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genlab.config.params import EvaluateParams, Params, ParamsError, RestoreParams
from genlab.data import splits
from genlab.evaluation import bias, copying, fairness, metrics, morphometry, plots, restoration, seeds
from genlab.evaluation.outputs import (
    GRID_FILE,
    RESTORATION_DETAILS_FILE,
    RESTORATION_GRID_FILE,
    SAMPLE_SEED,
    SAMPLES_FILE,
    SUMMARY_FILE,
)
from genlab.models.contract import Encoder, class_labels, equal_shares
from genlab.runtime.files import write_json

SUBGROUP_KINDS = {"stroke": morphometry.STROKES, "slant": morphometry.SLANTS}  # column "<kind>_group"

# The scalars of a model's MLflow run, the ones a person compares across runs, by chart section (the
# family's own test metrics join `test/`); every value, per class and per subgroup included, stays in the
# DVC metrics JSON and in the run's tables.
RUN_METRICS = {
    "test": ("fid", "fid_to_floor", "kid", "precision", "recall", "coverage", "classes_covered", "judge_confidence",
             "test_mse", "test_bce", "judge_accuracy_on_reconstructions", "reconstruction_fid_to_floor",
             "intra_class_fid_to_floor", "worst_class_fid_to_floor", "asked_class_accuracy",
             "worst_asked_class_accuracy", "copying_heldout_ratio_pixels", "copying_heldout_ratio_features",
             "copying_ct_pixels", "copying_ct_features"),
    # each a `<metric>_low`, `<metric>_high` pair: the bootstrap interval over the images (metrics.bootstrap_intervals)
    "interval": ("fid_to_floor", "kid", "precision", "recall", "coverage"),
    "bias": ("bias_amplification", "rarest_class_share_ratio", "worst_class_mse_ratio", "worst_stroke_bce_ratio",
             "worst_slant_bce_ratio"),
    # the means over the restoration tasks by the model's best method (restoration.summary)
    "restore": ("psnr", "ssim", "identity_kept", "worst_class_kept", "rarest_class_gap"),
}


def run_metrics(results: dict, family_keys, timings: dict, restored: dict | None = None) -> dict[str, float]:
    """`test/fid`, `bias/amplification`, `restore/identity_kept`, `timing/sampling_seconds_per_1000`, ...: the
    model run's scalars. Of the family's own metrics, those in nats are left to the JSON (their
    bits-per-dimension twins are logged); of the restoration, the summary (every task in the tables)."""
    family = tuple(key for key in family_keys if key.startswith("test_") and not key.endswith("_nats"))
    summary = (restored or {}).get("summary", {})
    return ({f"test/{key.removeprefix('test_')}": results[key] for key in RUN_METRICS["test"] + family
             if key in results}
            | {f"interval/{key}_{end}": results[f"{key}_{end}"] for key in RUN_METRICS["interval"]
               for end in ("low", "high") if f"{key}_{end}" in results}
            | {f"bias/{key.removeprefix('bias_')}": results[key] for key in RUN_METRICS["bias"] if key in results}
            | {f"restore/{key}": summary[key] for key in RUN_METRICS["restore"] if key in summary}
            | {f"timing/{key}": value for key, value in timings.items()
               if key != "train_seconds" and not key.startswith("restore_")}
            | ({"timing/restore_seconds_per_1000": summary["seconds_per_1000"]} if summary else {}))


def restoration_outputs(restored: dict) -> tuple[dict, dict, dict[str, pd.DataFrame]]:
    """The restoration's DVC metrics (every task and method's scalars and the summary, no wall-clock
    times), its times (for the timings JSON), and its tables for MLflow: one row per task and method, per
    class and per subgroup."""
    scalars, timings, rows, per_class, per_group = {}, {}, [], [], []
    for task, by_method in restored["tasks"].items():
        for method, values in by_method.items():
            kept = {key: value for key, value in values.items() if not isinstance(value, dict)}
            timings[f"restore_{task}_{method}_seconds_per_1000"] = kept.pop("seconds_per_1000")
            scalars.setdefault(task, {})[method] = kept
            rows.append({"task": task, "method": method} | kept)
            per_class += [{"task": task, "method": method, "class": label} | found
                          | {"erased_to": values["erased_to"].get(label, {}).get("to")}
                          for label, found in values["per_class"].items()]
            per_group += [{"task": task, "method": method, "subgroup": name} | found
                          for name, found in values["per_subgroup"].items()]
    summary = {key: value for key, value in restored["summary"].items()
               if key not in ("per_method", "seconds_per_1000")}
    timings["restore_seconds_per_1000"] = restored["summary"]["seconds_per_1000"]
    tables = {"tables/restoration.json": pd.DataFrame(rows),
              "tables/restoration_per_class.json": pd.DataFrame(per_class),
              "tables/restoration_per_subgroup.json": pd.DataFrame(per_group)}
    return {"num_images": restored["num_images"], "summary": summary} | scalars, timings, tables


def run_tables(results: dict, training_shares: np.ndarray) -> dict[str, pd.DataFrame]:
    """The per-class and per-subgroup values as tables in the run's artifacts (MLflow's artifact view)."""
    labels = list(results["class_shares"])
    per_class = pd.DataFrame({"class": labels,
                              "training_share": [float(training_shares[int(label)]) for label in labels],
                              "sample_share": [results["class_shares"][label] for label in labels],
                              "corrected_sample_share": [results["corrected_class_shares"][label] for label in labels],
                              "corrected_share_ratio": [results["corrected_share_ratios"][label] for label in labels]})
    for kind, values in results.get("per_class", {}).items():
        per_class[f"test_{kind}"] = [values[label] for label in labels]
    for key in ("per_class_fid", "per_class_fid_to_floor", "per_class_asked_accuracy"):
        if key in results:
            per_class[key.removeprefix("per_class_")] = [results[key].get(label, float("nan")) for label in labels]
    tables = {"tables/per_class.json": per_class,
              "tables/morphometry_ks.json": pd.DataFrame(
                  {"measure": list(morphometry.MEASURES),
                   "ks_samples_vs_test": [results[f"morphometry_ks_{measure}"] for measure in morphometry.MEASURES]})}
    groups = [(kind, group, value) for kind in SUBGROUP_KINDS
              for group, value in results.get(f"per_{kind}_bce", {}).items()]
    if groups:
        tables["tables/per_subgroup.json"] = pd.DataFrame(groups, columns=["kind", "group", "test_bce"])
    return tables


def describe_evaluation(results: dict, num_classes: int) -> str:
    """The evaluation's key numbers in a sentence (the run's description and the stage's line)."""
    over = f"over {results['num_seeds']} seeds" if results.get("num_seeds", 1) > 1 else "over the images drawn"
    interval = (f", {results['fid_to_floor_low']:.1f}-{results['fid_to_floor_high']:.1f} {over}"
                if "fid_to_floor_low" in results else "")
    text = (f"FID {results['fid']:.3g} ({results['fid_to_floor']:.1f}x the data floor{interval}), precision "
            f"{results['precision']:.2f}, recall {results['recall']:.2f}, "
            f"{metrics.count(results['classes_covered'])}/{num_classes} "
            f"classes")
    text += f", test BCE {results['test_bce']:.4f}" if "test_bce" in results else ""
    text += (f", reconstructions {results['reconstruction_fid_to_floor']:.1f}x the floor"
             if "reconstruction_fid_to_floor" in results else "")
    text += (f", {results['test_nll_bits_per_dim']:.3f} bits/dim" if "test_nll_bits_per_dim" in results else "")
    text += (f", worst class {results['worst_fid_class']} at {results['worst_class_fid_to_floor']:.1f}x its floor"
             if results.get("worst_fid_class", -1) >= 0 else "")
    text += (f", draws the class asked for {results['asked_class_accuracy']:.0%} of the time (worst: "
             f"{results['worst_asked_class']}, {results['worst_asked_class_accuracy']:.0%})"
             if "asked_class_accuracy" in results else "")
    text += (f", unseen images nearest to its samples {results['copying_heldout_ratio_pixels']:.2f}x as often as "
             f"training images (C_T {results['copying_ct_pixels']:.2g})" if "copying_ct_pixels" in results else "")
    return text + f"; {results['sampling_seconds_per_1000']:.2g} s per 1000 samples"


def describe_restoration(restored: dict) -> str:
    """The restoration's headline in a clause: the method, fidelity, identity kept and the rarest class."""
    summary, gap = restored["summary"], restored["summary"]["rarest_class_gap"]
    return (f"restores ({summary['method']}, {restored['num_images']} test images, "
            f"{len(restored['tasks'])} tasks) at PSNR {summary['psnr']:.1f} dB, SSIM {summary['ssim']:.2f}, "
            f"identity kept {summary['identity_kept']:.2f} (worst class {summary['worst_class_kept']:.2f}; the "
            f"rarest training class {abs(gap):.2f} {'less' if gap >= 0 else 'more'} than the others)")


def reconstruction_report(model, x_test, y_test, grid, num_classes: int, count: int, title: str,
                          groups: pd.DataFrame):
    """Metrics and figures of an encoder: errors overall, per class and per stroke and slant subgroup
    (`groups`, the test images' subgroups) with the worst/best ratio and difference, extremes, latent map."""
    reconstructions = model.reconstruct(x_test, y_test)  # a conditional encoder is told the class
    errors = metrics.reconstruction_errors(x_test, reconstructions)
    per_class = {kind: metrics.per_class_mean(values, y_test, num_classes) for kind, values in errors.items()}
    results = {"test_mse": float(errors["mse"].mean()), "test_bce": float(errors["bce"].mean()),
               "worst_class_mse_ratio": metrics.worst_best_ratio(per_class["mse"]), "per_class": per_class}
    results |= {f"test_{key}": value for key, value in metrics.detail(x_test, reconstructions).items()}
    for kind, names in SUBGROUP_KINDS.items():
        members = groups[f"{kind}_group"].to_numpy()
        per_group = {name: float(errors["bce"][members == name].mean()) for name in names if np.any(members == name)}
        results |= {f"per_{kind}_bce": per_group, f"worst_{kind}_bce_ratio": metrics.worst_best_ratio(per_group),
                    f"worst_{kind}_bce_difference": max(per_group.values()) - min(per_group.values())}
    order = np.argsort(errors["bce"])
    worst, best = order[::-1][:count], order[:count]
    figures = {
        "reconstructions.png": plots.image_rows(
            {"original": x_test[grid], "reconstruction": reconstructions[grid]}, f"{title}: test images"),
        "extremes.png": plots.image_rows(
            {"worst": x_test[worst], "rebuilt": reconstructions[worst], "best": x_test[best],
             "rebuilt ": reconstructions[best]}, f"{title}: worst and best reconstructions (BCE)"),
        "latent_map.png": plots.latent_map(metrics.pca_2d(model.encode(x_test, y_test)), y_test,
                                           f"{title}: latent codes, first two principal components"),
    }
    return results, figures, {GRID_FILE: reconstructions[grid]}, reconstructions


def asked_classes(model, num_samples: int, training_labels: np.ndarray, shares: str) -> np.ndarray | None:
    """The classes a conditional model is asked for (None for an unconditional one): equal shares, or the
    training split's, in an order shuffled by the sampling seed."""
    if not model.num_classes:
        return None
    wanted = (equal_shares(model.num_classes) if shares == "equal"
              else bias.shares(training_labels, model.num_classes))
    return class_labels(num_samples, wanted, SAMPLE_SEED)


def sampling_report(model, num_samples: int, title: str, asked: np.ndarray | None = None):
    """Sampling time per 1000 images and a grid of samples from a fixed seed: four rows of ten, or for a
    conditional model (asked for the classes `asked`) a row per class asked for."""
    started = time.perf_counter()
    samples = model.sample(num_samples, seed=SAMPLE_SEED, labels=asked)
    seconds = time.perf_counter() - started
    if asked is None:
        shown = samples[:40]
        rows = {f"{index * 10}-{index * 10 + 9}": shown[index * 10:(index + 1) * 10]
                for index in range(len(shown) // 10)}
        thumbnails = samples[:10]
    else:
        rows = {f"class {label}": samples[asked == label][:10] for label in np.unique(asked)[:10]}
        thumbnails = np.stack([samples[asked == label][0] for label in np.unique(asked)[:10]])
    figures = {"samples.png": plots.image_rows(rows or {"samples": samples[:40]},
                                               f"{title}: samples (seed {SAMPLE_SEED})")}
    return {"sampling_seconds_per_1000": 1000 * seconds / num_samples}, figures, {SAMPLES_FILE: thumbnails}, samples


def class_quality_report(judge, test_view, sample_view, validation_images: np.ndarray, validation_labels: np.ndarray,
                         test_labels: np.ndarray, training_labels: np.ndarray, num_classes: int,
                         asked: np.ndarray | None) -> dict:
    """Within each class: the intra-class FID of the samples (by the class asked for, or the judge's label of
    an unconditional model's) against the test images of the class, beside the class's floor (the validation
    split's images of the class, as many samples compared as it has: unseen real images, never thinned by
    data.keep_fraction); and for a conditional model, how often the judge sees the class asked for. The
    rarest training class's values apart: what a model makes of the class it saw least."""
    (real, _), (fake, probabilities) = test_view, sample_view
    judged = probabilities.argmax(axis=1)
    drawn = judged if asked is None else asked
    floor_features, _ = judge.look(validation_images)
    counts = np.bincount(validation_labels, minlength=num_classes)
    floor = metrics.per_class_fid(real, test_labels, floor_features, validation_labels, num_classes)
    found = metrics.within_class_quality(metrics.per_class_fid(real, test_labels, fake, drawn, num_classes,
                                                               counts=counts), floor)
    found["per_class_fid_floor"] = floor
    rarest = str(int(np.argmin(bias.shares(training_labels, num_classes))))
    found["rarest_class_fid_to_floor"] = found["per_class_fid_to_floor"].get(rarest, float("nan"))
    found["rarest_class_samples"] = int(np.sum(drawn == int(rarest)))
    if asked is not None:
        found |= metrics.asked_for_accuracy(asked, judged, num_classes)
        found["rarest_class_asked_accuracy"] = found["per_class_asked_accuracy"][rarest]
    return found


def quality_report(judge, test_view, sample_view, prepared: splits.PreparedData, settings: EvaluateParams,
                   seed: int = SAMPLE_SEED, reconstruct: Callable | None = None) -> dict:
    """The samples against the test split in the judge's features, beside the data floor: as many
    training images as samples against the same test split, so that a reader knows what "good" is.
    `test_view` and `sample_view` are the judge's (features, probabilities) of the test split and samples.
    An encoder's `reconstruct` adds the ceiling of anything that decodes from its codes: the floor's own
    training images, encoded and decoded, against the same test split (what a perfect prior would score)."""
    (real, _), (fake, probabilities) = test_view, sample_view
    chosen = np.random.default_rng(seed).choice(len(prepared.train.x), len(fake), replace=False)
    floor_images = prepared.train.x[chosen]
    floor_features, _ = judge.look(floor_images)
    options = {"k": settings.nearest_neighbours, "kid_subsets": settings.kid_subsets,
               "kid_subset_size": settings.kid_subset_size, "seed": seed}
    measured = metrics.sample_quality(real, fake, **options)
    floor = metrics.sample_quality(real, floor_features, **options)
    reference = bias.shares(prepared.train.y, prepared.num_classes)
    classes = metrics.class_distribution(probabilities.argmax(axis=1), reference, settings.min_class_share_ratio)

    def to_floor(fid: float) -> float:
        return fid / floor["fid"] if floor["fid"] > 0 else float("inf")

    ceiling = {}
    if reconstruct is not None:
        fid = metrics.frechet_distance(real, judge.look(np.clip(reconstruct(floor_images, prepared.train.y[chosen]),
                                                                0, 1))[0])
        ceiling = {"reconstruction_fid": fid, "reconstruction_fid_to_floor": to_floor(fid)}
    measured["fid_to_floor"] = to_floor(measured["fid"])
    intervals = metrics.bootstrap_intervals(real, fake, floor_features, settings.nearest_neighbours,
                                            settings.kid_subset_size, settings.bootstraps, settings.confidence,
                                            seed, centre=measured)
    return (measured | intervals | {f"data_floor_{key}": value for key, value in floor.items()} | ceiling
            | {"judge_confidence": float(probabilities.max(axis=1).mean()), "num_samples": len(fake)}
            | classes)


def bias_report(test_probabilities: np.ndarray, sample_probabilities: np.ndarray, samples: np.ndarray,
                prepared: splits.PreparedData, test_measures) -> dict:
    """Is the bias in the model? The samples' class shares as the judge labels them, raw and corrected
    for the judge's confusion on the test split (black-box shift estimation), against the training
    shares: amplification (model minus data), distance, missing classes; and how the samples are drawn
    against the test images: a two-sample Kolmogorov-Smirnov statistic per morphometric measure."""
    from scipy.stats import ks_2samp

    confusion = bias.confusion_matrix(prepared.test.y, test_probabilities.argmax(axis=1), prepared.num_classes)
    raw = bias.shares(sample_probabilities.argmax(axis=1), prepared.num_classes)
    corrected = bias.corrected_shares(raw, confusion)
    training = bias.shares(prepared.train.y, prepared.num_classes)
    sample_measures = morphometry.measure(samples)
    return ({f"raw_{key}": value for key, value in bias.amplification(raw, training).items()}
            | bias.amplification(corrected, training)
            | {"bias_amplification_noise": bias.amplification_noise(training, len(samples)),
               "corrected_missing_classes": int(np.sum(corrected < 1e-3)),
               "corrected_class_shares": {str(label): float(share) for label, share in enumerate(corrected)},
               "raw_share_ratios": bias.share_ratios(raw, training),
               "corrected_share_ratios": bias.share_ratios(corrected, training),
               "rarest_class": int(np.argmin(training)),  # the training split's least represented class
               "rarest_class_share_ratio": float(corrected[np.argmin(training)] / training.min())}
            | {f"morphometry_ks_{measure}": float(ks_2samp(sample_measures[measure].dropna(),
                                                            test_measures[measure].dropna()).statistic)
               for measure in morphometry.MEASURES})


def restore_saved_model(model_dir: str, judge_dir: str, seed: int, *report_args):
    """genlab.evaluation.restoration's report of the saved model, in the process beside the stage: with a model and a
    judge of its own, loaded there (a fork cannot share the stage's TensorFlow)."""
    from genlab.evaluation import judge as judges
    from genlab.models.registry import load_model
    from genlab.training.devices import set_seed

    set_seed(seed)
    model, _ = load_model(model_dir)
    return restoration.report(model, judges.load(judge_dir), *report_args)


def check_settings(params: Params, prepared: splits.PreparedData) -> None:
    """What params.yaml could not check before the data was prepared: enough training images for the data
    floor, and an upsampling factor that fits the images."""
    if params.evaluate.num_samples > len(prepared.train.y):
        raise ParamsError(f"evaluate.num_samples: {params.evaluate.num_samples} is more than the training split's "
                          f"{len(prepared.train.y)} images, which the data floor compares with the test split; "
                          f"use at most {len(prepared.train.y)}")
    problem = params.restore.image_problem(prepared.image_shape)
    if problem:
        raise ParamsError(f"restore.{problem} (the prepared data's images)")


@dataclass(frozen=True)
class TestImages:
    """The test split with what the measures need of every image: its morphometry and its stroke and slant
    subgroups (by the audit's thresholds)."""

    x: np.ndarray
    y: np.ndarray
    measures: pd.DataFrame
    groups: pd.DataFrame
    thresholds: tuple[float, float]  # thin below the first, thick above the second
    upright_degrees: float
    training_strokes: np.ndarray  # the training split's share of each stroke subgroup (morphometry.STROKES)

    @classmethod
    def measure(cls, prepared: splits.PreparedData, audit_subgroups: dict, upright_degrees: float) -> TestImages:
        thresholds = (audit_subgroups["thin_stroke_threshold"], audit_subgroups["thick_stroke_threshold"])
        measures = morphometry.measure(prepared.test.x)
        return cls(prepared.test.x, prepared.test.y, measures,
                   morphometry.subgroups(measures, thresholds, upright_degrees), thresholds, upright_degrees,
                   np.array([audit_subgroups[f"train_{name}_share"] for name in morphometry.STROKES]))

    def restoration_inputs(self, training_labels: np.ndarray, num_classes: int, settings: RestoreParams,
                           grid_images: int) -> tuple:
        """`restoration.report`'s arguments after the model and the judge, for its stratified subset."""
        subset = restoration.stratified_subset(self.y, settings.num_images)
        return (self.x[subset], self.y[subset], self.measures.iloc[subset], bias.shares(training_labels, num_classes),
                self.training_strokes, self.thresholds, self.upright_degrees, settings,
                splits.grid_indices(self.y[subset], grid_images))


@dataclass
class Evaluation:
    """A model's measured values (`results`), its figures, and the image rows `compare` lines up."""

    results: dict
    figures: dict = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    family_keys: list[str] = field(default_factory=list)

    def add(self, results: dict, figures: dict, rows: dict) -> None:
        self.results |= results
        self.figures |= figures
        self.rows |= rows


def evaluate(model, judge, prepared: splits.PreparedData, test: TestImages, settings: EvaluateParams,
             grid_images: int, title: str, training_summary: dict, done: Callable[[str], None],
             figures: bool = True) -> Evaluation:
    """Every measure of a trained model but the restoration, phase by phase (`done` is told each phase); without
    `figures`, no family figures (a further seed's: genlab.evaluation.seeds)."""
    kept = ("num_params", "num_hyperparameters", "train_seconds", "epochs_trained")
    evaluation = Evaluation({key: training_summary[key] for key in kept if key in training_summary})
    reconstructions = None
    if isinstance(model, Encoder):
        grid = splits.grid_indices(test.y, grid_images)
        *found, reconstructions = reconstruction_report(model, test.x, test.y, grid, prepared.num_classes,
                                                        settings.num_extreme_images, title, test.groups)
        evaluation.add(*found)
    done("reconstructions")
    asked = asked_classes(model, settings.num_samples, prepared.train.y, settings.conditional_shares)
    *found, samples = sampling_report(model, settings.num_samples, title, asked)
    evaluation.add(*found)
    done("sampling")
    test_view, sample_view = judge.look(test.x), judge.look(samples)  # (features, probabilities), once each
    if reconstructions is not None:  # does the rebuilt test image still show its digit? (the judge's view)
        evaluation.results["judge_accuracy_on_reconstructions"] = judge.accuracy(reconstructions, test.y)
    done("judge")
    evaluation.results |= quality_report(judge, test_view, sample_view, prepared, settings,
                                         reconstruct=model.reconstruct if isinstance(model, Encoder) else None)
    evaluation.results |= class_quality_report(judge, test_view, sample_view, prepared.validation.x,
                                               prepared.validation.y, test.y, prepared.train.y,
                                               prepared.num_classes, asked)
    done("sample quality")
    evaluation.results |= copying.copying_report(prepared.train.x, test.x, samples, judge.look(prepared.train.x)[0],
                                                 test_view[0], sample_view[0], settings.copying_cells, SAMPLE_SEED)
    done("copies")
    evaluation.results |= bias_report(test_view[1], sample_view[1], samples, prepared, test.measures)
    done("bias")
    family_results = model.family_metrics(test.x, test.y)
    evaluation.results |= family_results
    evaluation.family_keys = list(family_results)
    done("family metrics")
    evaluation.figures |= {name: plots.image_rows(shown, f"{title}: {name.removesuffix('.png').replace('_', ' ')}")
                           for name, shown in (model.family_images(test.x, test.y) if figures else {}).items()}
    done("figures")
    return evaluation


def save_folder(folder: Path, evaluation: Evaluation, restored: dict, restoration_grids: dict, summary: dict,
                over_seeds: dict | None = None) -> None:
    """The evaluation's folder: the rows compare lines up, the figures, the restoration's grids and details,
    the summary that names the model's run and settings, and with several seeds each seed's values, their means
    and intervals (genlab.evaluation.seeds.over_seeds)."""
    if over_seeds is not None:
        write_json(folder / seeds.SEEDS_FILE, over_seeds)
    for name, images in evaluation.rows.items():
        np.save(folder / name, np.asarray(images, dtype=np.float32))
    for name, figure in evaluation.figures.items():
        plots.save(figure, folder / name)
    np.savez(folder / RESTORATION_GRID_FILE, **{f"{task}/{row}": np.asarray(images, dtype=np.float32)
                                                for task, rows in restoration_grids.items()
                                                for row, images in rows.items()})
    write_json(folder / RESTORATION_DETAILS_FILE, restored)
    write_json(folder / SUMMARY_FILE, summary)


def add_own_proportions(restored: dict, sample_shares: dict[str, float], seed: int) -> None:
    """Each method's restorations of uninformative observations against the model's own samples' class shares
    (fairness.against_own_samples; `own_pr_` keys), beside UCPR's test against the training data's."""
    for task in restoration.PROBES:
        for values in restored["tasks"].get(task, {}).values():
            values |= fairness.against_own_samples(values["ucpr_shares"], restored["num_images"], sample_shares, seed)


def restoration_figures(restoration_grids: dict, title: str) -> dict:
    """One figure per restoration task: the grid images original, degraded and restored by each method."""
    return {f"restore_{task}.png": plots.image_rows(rows, f"{title}: {task.replace('_', ' ')}")
            for task, rows in restoration_grids.items()}
