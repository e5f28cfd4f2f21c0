"""DVC stage `compare`: which generative AI is right for you? Every model's metrics side by side.

Writes the comparison (Markdown, CSV and a self-contained HTML page) with a rank per
criterion and the lecture's closing question answered from the measured numbers; charts
(quality against sampling speed with coverage as colour, sample grids and reconstructions
with a row per model, loss curves overlaid, a bar chart); and one MLflow comparison run
that holds all of it and names the model runs, each of which is tagged with the comparison
run's id. The best model by `compare.rank_by` is registered in the MLflow Model Registry
under `compare.registered_model` with the alias `champion`, as a pyfunc that generates images.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from genlab import comparison, data, plots, tracking
from genlab.files import atomic_dir, read_json
from genlab.params import load_params
from genlab.stages import argument_parser, run_stage
from genlab.stages.evaluate import GRID_FILE, RESTORATION_GRID_FILE, SAMPLE_SEED, SAMPLES_FILE


def read_history(path: Path) -> dict[str, list[float]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"} if rows else {}


def restoration_columns(restored: dict, timings: dict) -> dict:
    """A model's times and its restoration summary as `restore_<key>` columns (the times of each task and
    method stay in the timings JSON)."""
    return ({key: value for key, value in timings.items() if not key.startswith("restore_")}
            | {f"restore_{key}": value for key, value in restored["summary"].items()}
            | {"restore_seconds_per_1000": timings.get("restore_seconds_per_1000")})


def restoration_rows(evaluations_dir: Path, table) -> dict[str, dict[str, np.ndarray]]:
    """Per task, the figure's rows: the original and degraded grid images, then each model's restoration
    by its own best method."""
    rows = {}
    for name, method in zip(table["model"], table.get("restore_method", [None] * len(table))):
        path = evaluations_dir / name / RESTORATION_GRID_FILE
        if not isinstance(method, str) or not path.is_file():
            continue
        with np.load(path, allow_pickle=False) as grids:
            for key in grids.files:
                task, row = key.split("/")
                if row in ("original", "degraded"):
                    rows.setdefault(task, {}).setdefault(row, grids[key])
                elif row == method:
                    rows.setdefault(task, {})[f"{name} ({method})"] = grids[key]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--evaluations", required=True, help="folder with <model>.json and <model>/ from evaluate")
    parser.add_argument("--restorations", required=True, help="folder with <model>.json, the restoration metrics")
    parser.add_argument("--timings", required=True, help="folder with <model>.json, the times from evaluate")
    parser.add_argument("--histories", required=True, help="folder with <model>.csv, the loss histories from train")
    parser.add_argument("--judge-metrics", required=True, help="the judge stage's metrics JSON")
    parser.add_argument("--out", required=True, help="folder for the comparison table and charts")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    evaluations_dir, histories_dir = Path(args.evaluations), Path(args.histories)
    names = list(params.models)
    evaluations = {name: read_json(evaluations_dir / f"{name}.json") | restoration_columns(
                       read_json(Path(args.restorations) / f"{name}.json"), read_json(Path(args.timings) / f"{name}.json"))
                   for name in names}
    summaries = {name: read_json(evaluations_dir / name / "summary.json") for name in names}
    histories = {name: read_history(histories_dir / f"{name}.csv") for name in names}
    judge = read_json(args.judge_metrics)
    prepared = data.load_prepared(args.data)
    table = comparison.add_verdicts(comparison.comparison_table(evaluations, summaries, params.compare.rank_by),
                                    prepared.num_classes, params.compare)
    answers = comparison.which_is_right_for_you(table, prepared.num_classes)
    grid = data.grid_indices(prepared.test.y, params.train.grid_images)
    reconstructions = {"original": prepared.test.x[grid]} | {
        name: np.load(evaluations_dir / name / GRID_FILE, allow_pickle=False)
        for name in table["model"] if (evaluations_dir / name / GRID_FILE).is_file()}
    samples = {name: np.load(evaluations_dir / name / SAMPLES_FILE, allow_pickle=False)
               for name in table["model"] if (evaluations_dir / name / SAMPLES_FILE).is_file()}
    with atomic_dir(args.out) as staging:
        table.to_csv(staging / "comparison.csv", index=False, float_format="%.6g")
        (staging / "comparison.md").write_text(
            comparison.markdown(table, answers, params.compare.rank_by, judge))
        figures = {"quality, speed and coverage (the generative trilemma)": staging / "trilemma.png",
                   "samples, one row per model": staging / "samples.png",
                   "original / reconstructed, one row per encoder": staging / "reconstructions.png",
                   "loss curves": staging / "loss_curves.png", "metrics": staging / "metrics.png"}
        if "fid_to_floor" in table:
            plots.save(plots.trilemma(list(table["model"]), list(table["sampling_seconds_per_1000"]),
                                      list(table["fid_to_floor"]), list(table["recall"]),
                                      float(table["data_floor_fid"].iloc[0]),
                                      "which generative AI is right for you? quality, speed, coverage"),
                       staging / "trilemma.png")
        charted = [metric for metric in ("fid_to_floor", "recall", "test_bce", "train_seconds") if metric in table]
        plots.save(plots.bar_chart({metric: dict(zip(table["model"], table[metric].fillna(0.0)))
                                    for metric in charted}, "sample quality, coverage, reconstruction, training time"),
                   staging / "metrics.png")
        if len(reconstructions) > 1:
            plots.save(plots.image_rows(reconstructions, "original / predicted, one row per model"),
                       staging / "reconstructions.png")
        if samples:
            plots.save(plots.image_rows(samples, f"samples, one row per model (seed {SAMPLE_SEED})"),
                       staging / "samples.png")
        for task, rows in restoration_rows(evaluations_dir, table).items():
            figures[f"{task.replace('_', ' ')}: original, degraded, one row per model"] = staging / f"restore_{task}.png"
            plots.save(plots.image_rows(rows, f"{task.replace('_', ' ')}: original, degraded, restored by each model"),
                       staging / f"restore_{task}.png")
        plots.save(plots.overlaid_curves({name: histories[name]["val_loss"] for name in table["model"]
                                          if "val_loss" in histories[name]},
                                         "validation loss (each model's own loss)", "loss curves"),
                   staging / "loss_curves.png")
        (staging / "comparison.html").write_text(
            comparison.html_page(table, answers, params.compare.rank_by, judge, figures))

    experiment_id = tracking.setup(params.tracking.experiment)
    run_ids = {name: summaries[name]["run_id"] for name in names}
    tags = tracking.provenance_tags("compare", data.data_hash(args.data))
    tags |= {f"{tracking.TAG_PREFIX}role": "comparison",
             f"{tracking.TAG_PREFIX}compared_runs": ",".join(f"{name}={run_id}" for name, run_id in run_ids.items())}
    rank_by = params.compare.rank_by
    recommended = table[table["recommended"]]
    best = recommended.iloc[0] if len(recommended) else None  # the table is sorted by rank_by
    champion = None
    with tracking.run(experiment_id, run_name="comparison", tags=tags) as comparison_run_id:
        tracking.log_params({"rank_by": rank_by, "models": ",".join(names), "num_samples": params.evaluate.num_samples})
        # the comparison itself, not copies of the model runs' metrics (each is in its own run and LoggedModel)
        tracking.log_metrics({"compare/models": len(table), "compare/recommended": len(recommended)})
        tracking.log_table(table, "comparison_table.json")
        tracking.log_artifacts(Path(args.out), "comparison")
        tracking.describe(comparison.description(table, answers, rank_by))
        champion_id = summaries[best["model"]].get("model_id") if best is not None else None
        if params.compare.register_champion and best is not None and best[rank_by] == best[rank_by]:  # not NaN
            if tracking.logged_model_exists(champion_id):
                champion = tracking.register_champion(champion_id, params.compare.registered_model)
                tracking.set_tags({f"{tracking.TAG_PREFIX}champion": best["model"],
                                   f"{tracking.TAG_PREFIX}champion_model_id": champion_id,
                                   f"{tracking.TAG_PREFIX}champion_version": champion})
            else:
                print(f"compare: {best['model']} has no LoggedModel in this MLflow store (tracking.log_model_weights "
                      f"is false, or it was trained against another store), so no champion is registered")
    # the inputs of each model's train and evaluate stages as dvc.lock recorded them (both ran before compare)
    lock = tracking.lock_tags(["prepare", *(f"{stage}@{name}" for name in names for stage in ("train", "evaluate"))])
    verdicts = table.set_index("model")["verdict"]
    for name, run_id in run_ids.items():
        if not tracking.tag_run(run_id, f"{tracking.TAG_PREFIX}comparison_run_id", comparison_run_id):
            print(f"compare: run {run_id} of {name} is not in this MLflow store; it is listed but not tagged")
            continue
        tracking.tag_run(run_id, f"{tracking.TAG_PREFIX}verdict", verdicts[name])
        for key, value in lock.items():
            if key.endswith((".prepare", f"/{name}")):
                tracking.tag_run(run_id, key, value)
    rejected = list(table.loc[~table["recommended"], "model"])
    line = (f"compare: {len(table) - len(rejected)} of {len(table)} models recommended"
            + (f" (not: {', '.join(rejected)}; the reasons are in the answer)" if rejected else ""))
    if best is None:
        print(f"{line}; none is registered; report in {Path(args.out) / 'comparison.html'}")
        return
    print(f"{line}; best by {rank_by}: {best['model']} ({best[rank_by]:.5g})"
          + (f", registered as models:/{params.compare.registered_model}@{tracking.CHAMPION_ALIAS} "
             f"(version {champion})" if champion else "")
          + f"; report in {Path(args.out) / 'comparison.html'}")


if __name__ == "__main__":
    run_stage(main)
