"""DVC stage `compare`: every model's metrics side by side, charts, and one MLflow comparison run.

Writes a table (Markdown and CSV) ranked by `compare.rank_by`, a bar chart, a grid
with a row per model over the same test images, and the loss curves overlaid.
The comparison run names the model runs it compares, and each model run is
tagged with the comparison run's id, so one pipeline execution is found together.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from genlab import data, metrics, plots, tracking
from genlab.files import atomic_dir, read_json
from genlab.params import load_params
from genlab.stages import argument_parser, run_stage
from genlab.stages.evaluate import GRID_FILE, SAMPLE_SEED, SAMPLES_FILE

SETTING_COLUMNS = ("output_activation", "loss", "decoder", "optimizer", "latent_dim")


def read_history(path: Path) -> dict[str, list[float]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"} if rows else {}


def comparison_table(evaluations: dict[str, dict], summaries: dict[str, dict], rank_by: str) -> pd.DataFrame:
    """One row per model: its settings, diagnosis and every metric it has, sorted by `rank_by` (lower is better).

    Families measure different things (a GAN has no reconstruction error): a metric a model
    lacks is left empty and ranks last.
    """
    rows = []
    for name, results in evaluations.items():
        settings = summaries[name]["params"]
        rows.append({"model": name, "family": summaries[name]["family"]}
                    | {key: settings.get(key) for key in SETTING_COLUMNS}
                    | {"diagnosis": summaries[name]["diagnosis"]}
                    | {key: value for key, value in results.items() if isinstance(value, (int, float))})
    table = pd.DataFrame(rows)
    table = table.dropna(axis=1, how="all")  # settings no compared model has
    if rank_by not in table:
        table[rank_by] = np.nan
    rank = metrics.ranks(dict(zip(table["model"], table[rank_by])))
    table.insert(1, f"rank_{rank_by}", table["model"].map(rank))
    return table.sort_values([f"rank_{rank_by}", "model"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--evaluations", required=True, help="folder with <model>.json and <model>/ from evaluate")
    parser.add_argument("--histories", required=True, help="folder with <model>.csv, the loss histories from train")
    parser.add_argument("--out", required=True, help="folder for the comparison table and charts")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    evaluations_dir, histories_dir = Path(args.evaluations), Path(args.histories)
    names = list(params.models)
    evaluations = {name: read_json(evaluations_dir / f"{name}.json") for name in names}
    summaries = {name: read_json(evaluations_dir / name / "summary.json") for name in names}
    histories = {name: read_history(histories_dir / f"{name}.csv") for name in names}
    table = comparison_table(evaluations, summaries, params.compare.rank_by)

    prepared = data.load_prepared(args.data)
    grid = data.grid_indices(prepared.test.y, params.train.grid_images)
    reconstructions = {"original": prepared.test.x[grid]} | {
        name: np.load(evaluations_dir / name / GRID_FILE, allow_pickle=False)
        for name in table["model"] if (evaluations_dir / name / GRID_FILE).is_file()}
    samples = {name: np.load(evaluations_dir / name / SAMPLES_FILE, allow_pickle=False)
               for name in table["model"] if (evaluations_dir / name / SAMPLES_FILE).is_file()}
    with atomic_dir(args.out) as staging:
        table.to_csv(staging / "comparison.csv", index=False, float_format="%.6g")
        (staging / "comparison.md").write_text(
            f"# Model comparison (ranked by {params.compare.rank_by}, lower is better)\n\n"
            + table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".5g", missingval="")
            + "\n")
        charted = [metric for metric in ("test_bce", "test_mse", "train_seconds") if metric in table]
        plots.save(plots.bar_chart({metric: dict(zip(table["model"], table[metric].fillna(0.0)))
                                    for metric in charted}, "test-split metrics and training time"),
                   staging / "metrics.png")
        if len(reconstructions) > 1:
            plots.save(plots.image_rows(reconstructions, "original / predicted, one row per model"),
                       staging / "reconstructions.png")
        if samples:
            plots.save(plots.image_rows(samples, f"samples, one row per model (seed {SAMPLE_SEED})"),
                       staging / "samples.png")
        plots.save(plots.overlaid_curves({name: histories[name]["val_loss"] for name in table["model"]
                                          if "val_loss" in histories[name]},
                                         "validation loss (each model's own loss)", "loss curves"),
                   staging / "loss_curves.png")

    experiment_id = tracking.setup(params.tracking.experiment)
    run_ids = {name: summaries[name]["run_id"] for name in names}
    tags = tracking.provenance_tags("compare", data.data_hash(args.data))
    tags |= {f"{tracking.TAG_PREFIX}role": "comparison",
             f"{tracking.TAG_PREFIX}compared_runs": ",".join(f"{name}={run_id}" for name, run_id in run_ids.items())}
    with tracking.run(experiment_id, run_name="comparison", tags=tags) as comparison_run_id:
        tracking.log_params({"rank_by": params.compare.rank_by, "models": ",".join(names)})
        tracking.log_metrics({f"{row['model']}.{metric}": float(row[metric]) for row in table.to_dict("records")
                              for metric in ("test_bce", "test_mse", "test_nll_bits_per_dim") if metric in row})
        tracking.log_table(table, "comparison_table.json")
        tracking.log_artifacts(Path(args.out), "comparison")
    for name, run_id in run_ids.items():
        if not tracking.tag_run(run_id, f"{tracking.TAG_PREFIX}comparison_run_id", comparison_run_id):
            print(f"compare: run {run_id} of {name} is not in this MLflow store; it is listed but not tagged")
    best = table.iloc[0]
    print(f"compare: best by {params.compare.rank_by} is {best['model']} ({best[params.compare.rank_by]:.5f}); "
          f"table in {Path(args.out) / 'comparison.md'}")


if __name__ == "__main__":
    run_stage(main)
