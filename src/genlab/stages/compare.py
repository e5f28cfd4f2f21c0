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

from pathlib import Path

import numpy as np

from genlab import tracking
from genlab.config.params import load_params
from genlab.data import splits
from genlab.evaluation import comparison, page, plots, seeds
from genlab.evaluation.outputs import GRID_FILE, SAMPLE_SEED, SAMPLES_FILE, SUMMARY_FILE
from genlab.runtime.files import atomic_dir, read_json
from genlab.runtime.stage import argument_parser, run_stage


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
    names = [*params.models, *params.priors]
    evaluations, summaries = read_evaluations(args, names)
    histories = {name: comparison.read_history(Path(args.histories) / f"{name}.csv") for name in names}
    judge = read_json(args.judge_metrics)
    prepared = splits.load_prepared(args.data)
    table = comparison.add_verdicts(comparison.comparison_table(evaluations, summaries, params.compare.rank_by),
                                    prepared.num_classes, params.compare)
    fair = comparison.fairness_table({name: read_json(Path(args.restorations) / f"{name}.json") for name in names})
    answers = comparison.which_is_right_for_you(table, prepared.num_classes, params.compare.rank_by)
    answers += [line for line in [comparison.copying_answer(table, params.compare.min_heldout_ratio),
                                  comparison.fairness_answer(fair)] if line]
    grid = splits.grid_indices(prepared.test.y, params.train.grid_images)
    samples = image_rows(args.evaluations, table, SAMPLES_FILE)
    figures = comparison.figures(table, samples,
                                 {"original": prepared.test.x[grid]} | image_rows(args.evaluations, table, GRID_FILE),
                                 comparison.restoration_rows(Path(args.evaluations), table), histories, SAMPLE_SEED)
    with atomic_dir(args.out) as staging:
        table.to_csv(staging / "comparison.csv", index=False, float_format="%.6g")
        fair.to_csv(staging / "fairness.csv", index=False, float_format="%.6g")
        (staging / "comparison.md").write_text(comparison.markdown(table, answers, params.compare.rank_by, judge))
        for name, (_, figure) in figures.items():
            plots.save(figure, staging / name)
        (staging / "comparison.html").write_text(page.comparison_page(
            table, answers, params.compare.rank_by, judge,
            {title: staging / name for name, (title, _) in figures.items()}, samples))
    best, champion = record_comparison(params, table, answers, summaries, args.data, args.out)
    tag_model_runs(table, {name: summaries[name]["run_id"] for name in names}, best["comparison_run_id"])
    print(comparison.console_line(table, best["row"], params.compare.rank_by, champion,
                                  f"models:/{params.compare.registered_model}@{tracking.CHAMPION_ALIAS}",
                                  Path(args.out) / "comparison.html"))


def read_evaluations(args, names: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per model, every measured value (the evaluation's, the restoration's summary, the times; of a model
    trained with several seeds, each value's interval over them) and the evaluation's summary (run, family,
    settings)."""
    evaluations = {name: read_json(Path(args.evaluations) / f"{name}.json") | comparison.restoration_columns(
        read_json(Path(args.restorations) / f"{name}.json"), read_json(Path(args.timings) / f"{name}.json"))
        for name in names}
    for name, values in evaluations.items():
        path = Path(args.evaluations) / name / seeds.SEEDS_FILE
        if path.is_file():
            values |= seeds.intervals(read_json(path), values)
    return evaluations, {name: read_json(Path(args.evaluations) / name / SUMMARY_FILE) for name in names}


def image_rows(evaluations: str, table, file_name: str) -> dict[str, np.ndarray]:
    """Each model's row of images that evaluate saved under `file_name`, in the table's order."""
    return {name: np.load(Path(evaluations) / name / file_name, allow_pickle=False)
            for name in table["model"] if (Path(evaluations) / name / file_name).is_file()}


def record_comparison(params, table, answers: list[str], summaries: dict, data_dir: str, out: str):
    """The comparison's MLflow run (the table, the figures, the answer; not copies of the model runs'
    metrics), and the best recommended model by `compare.rank_by` registered as the champion."""
    experiment_id = tracking.setup(params.tracking.experiment)
    names, rank_by = [*params.models, *params.priors], params.compare.rank_by
    tags = tracking.provenance_tags("compare", splits.data_hash(data_dir))
    tags |= {f"{tracking.TAG_PREFIX}role": "comparison",
             f"{tracking.TAG_PREFIX}compared_runs": ",".join(f"{name}={summaries[name]['run_id']}" for name in names)}
    recommended = table[table["recommended"]]
    best = recommended.iloc[0] if len(recommended) else None  # the table is sorted by rank_by
    champion = None
    with tracking.run(experiment_id, run_name="comparison", tags=tags) as comparison_run_id:
        tracking.log_params({"rank_by": rank_by, "models": ",".join(names), "num_samples": params.evaluate.num_samples})
        tracking.log_metrics({"compare/models": len(table), "compare/recommended": len(recommended)})
        tracking.log_table(table, "comparison_table.json")
        tracking.log_artifacts(Path(out), "comparison")
        tracking.describe(comparison.description(table, answers, rank_by))
        if params.compare.register_champion and best is not None and best[rank_by] == best[rank_by]:  # not NaN
            champion = tracking.register_best(best["model"], summaries[best["model"]].get("model_id"),
                                              params.compare.registered_model)
    return {"row": best, "comparison_run_id": comparison_run_id}, champion


def tag_model_runs(table, run_ids: dict[str, str], comparison_run_id: str) -> None:
    """Each model's run tagged with the comparison's id, its verdict and the inputs of its train and evaluate
    stages as dvc.lock recorded them (both ran before compare)."""
    stages = ("train", "evaluate", "train_prior", "evaluate_prior")  # a model's, or a prior's (dvc.yaml)
    lock = tracking.lock_tags(["prepare", *(f"{stage}@{name}" for name in run_ids for stage in stages)])
    verdicts = table.set_index("model")["verdict"]
    for name, run_id in run_ids.items():
        if not tracking.tag_run(run_id, f"{tracking.TAG_PREFIX}comparison_run_id", comparison_run_id):
            print(f"compare: run {run_id} of {name} is not in this MLflow store; it is listed but not tagged")
            continue
        tracking.tag_run(run_id, f"{tracking.TAG_PREFIX}verdict", verdicts[name])
        for key, value in lock.items():
            if key.endswith((".prepare", f"/{name}")):
                tracking.tag_run(run_id, key, value)


if __name__ == "__main__":
    run_stage(main)
