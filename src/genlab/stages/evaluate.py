"""DVC stages `evaluate@<model>` and `evaluate_prior@<prior>`: the model's test-split metrics, samples and figures.

Every model generates `evaluate.num_samples` images, measured the same way in the judge's features
against the test split beside the data floor, with the judge's class shares of the samples, its bias
and its sampling time; encoders add their reconstruction errors, and each family its own metrics
(genlab.evaluation.report). Then image-to-image (genlab.evaluation.restoration, settings `restore:`):
the model restores upsampled, inpainted and noisy test images, and the judge says whether each keeps
its digit. Restoration is a part of this stage rather than a `restore@<model>` of its own: it reuses
the test images and their morphometry, and it runs beside the rest of the stage, in a second process
on the other core (genlab.runtime.parallel), where DVC would run a stage of its own after this one.
A model trained with several seeds (genlab.evaluation.seeds) has each further seed measured the same way (all but
the restoration, which is the first seed's), its metrics logged to the seed's own run; the model reports every
scalar as its mean over the seeds, with intervals over them, and keeps each seed's values (`seeds.json`).
Continues the model's MLflow run (its id is saved with the model) and writes the DVC metrics JSON
(`--metrics`, `--restore`), the times (`--timings`) and the figures plus the rows that `compare`
lines up (`--out`).
"""

from __future__ import annotations

from pathlib import Path

from genlab import tracking
from genlab.config.params import entry_key, load_params, model_params
from genlab.data import splits
from genlab.evaluation import bias, metrics, report, seeds
from genlab.runtime import parallel, progress
from genlab.runtime.files import atomic_dir, read_json, write_json
from genlab.runtime.stage import argument_parser, run_stage
from genlab.training.summary import RUN_FILE, SUMMARY_FILE, describe_training, further_seed_dirs


def parse_arguments(argv: list[str] | None):
    """The command line DVC runs (dvc.yaml)."""
    parser = argument_parser(__doc__)
    parser.add_argument("model", help="a key of `models:` (or `priors:`) in params.yaml")
    parser.add_argument("--model-dir", required=True, help="the trained model's folder")
    parser.add_argument("--judge", required=True, help="the judge stage's folder")
    parser.add_argument("--audit", required=True, help="the audit's metrics JSON (the stroke subgroups' thresholds)")
    parser.add_argument("--metrics", required=True, help="the evaluation metrics JSON (DVC metrics)")
    parser.add_argument("--restore", required=True, help="the restoration metrics JSON (DVC metrics)")
    parser.add_argument("--timings", required=True, help="the wall-clock times JSON (training, sampling, restoring)")
    parser.add_argument("--out", required=True, help="folder for figures and the rows compare lines up")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    params = load_params(args.params)
    prepared = splits.load_prepared(args.data)
    report.check_settings(params, prepared)
    recorded, trained = read_json(Path(args.model_dir) / RUN_FILE), read_json(Path(args.model_dir) / SUMMARY_FILE)
    experiment_id = tracking.setup(params.tracking.experiment)
    data_md5 = splits.data_hash(args.data)
    config = model_params(params, args.model)
    stage = "evaluate_prior" if entry_key(config) == "priors" else "evaluate"
    run_id, run_tags = tracking.model_run_to_continue(recorded["run_id"], f"{stage}@{args.model}", args.model, data_md5)
    model_id = tracking.existing_logged_model(recorded.get("model_id"))  # the Models tab lines its metrics up
    test = report.TestImages.measure(prepared, read_json(args.audit)["subgroups"], params.audit.upright_degrees)
    seed = config.seed
    further = further_seed_dirs(args.model_dir)
    phases = progress.Phases(f"evaluate {args.model}", total=9 + bool(further))
    # The restorations need nothing of the measures below: they run beside them, in a process of their own on
    # the other core (genlab.runtime.parallel), forked before this stage's first TensorFlow operation.
    with parallel.Beside(report.restore_saved_model, args.model_dir, args.judge, seed,
                         *test.restoration_inputs(prepared.train.y, prepared.num_classes, params.restore,
                                                  params.train.grid_images)) as restoring:
        model, config, judge = load_model_and_judge(args.model_dir, args.judge, seed)
        evaluation = report.evaluate(model, judge, prepared, test, params.evaluate, params.train.grid_images,
                                     args.model, trained, phases.done)
        per_seed = {seed: evaluation.results} | {
            other: evaluate_further_seed(folder, other, judge, prepared, test, params, args.model)
            for other, folder in further.items()}
        if further:
            phases.done("seeds")
        restored, restoration_grids = restoring.result()
    over_seeds = seeds.over_seeds(per_seed, params.evaluate.confidence, metrics.INTERVAL_BOUNDS)
    evaluation.results = seeds.reported(evaluation.results, over_seeds, metrics.INTERVAL_METRICS)
    report.add_own_proportions(restored, evaluation.results["class_shares"], params.restore.seed)
    evaluation.figures |= report.restoration_figures(restoration_grids, args.model)
    phases.done("restoration")
    phases.close()
    with tracking.run(experiment_id, run_name=args.model, run_id=run_id, tags=run_tags) as run_id:
        with atomic_dir(args.out) as staging:
            report.save_folder(staging, evaluation, restored, restoration_grids, {
                "run_id": run_id, "model_id": model_id, "diagnosis": trained["diagnosis"],
                "diagnosis_reason": trained["diagnosis_reason"], "family": config.family,
                "likelihood": model.likelihood, "params": config.model_dump(mode="json", exclude={"encoder_model"})}
                | ({"prior_over": config.encoder} if entry_key(config) == "priors" else {}),
                over_seeds if further else None)
        described = write_and_log(args, evaluation, restored, prepared, data_md5, model_id)
        if further:
            log_seeds(per_seed, over_seeds, further, evaluation.family_keys)
        tracking.describe(f"{describe_training(args.model, config.family, trained)}\n\nTest: {described}.\n\n"
                          f"Image-to-image: {report.describe_restoration(restored)}.")
    restoring = restored["summary"]
    print(f"{args.model}: {described}; restores at PSNR {restoring['psnr']:.1f} dB, identity kept "
          f"{restoring['identity_kept']:.2f}")


def evaluate_further_seed(folder: Path, seed: int, judge, prepared: splits.PreparedData, test: report.TestImages,
                          params, name: str) -> dict:
    """A further seed's model measured as the first (seeded with its own seed), without figures or restoration."""
    from genlab.models.registry import load_model
    from genlab.training.devices import set_seed

    set_seed(seed)
    model, _ = load_model(folder)
    return report.evaluate(model, judge, prepared, test, params.evaluate, params.train.grid_images,
                           f"{name} seed {seed}", read_json(folder / SUMMARY_FILE), lambda phase: None,
                           figures=False).results


def log_seeds(per_seed: dict[int, dict], over_seeds: dict, further: dict, family_keys) -> None:
    """Each further seed's test metrics in its own run (nested under the model's), and every seed's values as a
    table of the model's run (one row per seed)."""
    import pandas as pd

    for seed, folder in further.items():
        results, run_id = per_seed[seed], read_json(folder / RUN_FILE)["run_id"]
        if not tracking.run_exists(run_id):  # another store than the one it trained in: its values stay in the table
            print(f"note: the run {run_id} of seed {seed} is not in this MLflow store; its values are in "
                  f"tables/seeds.json of the model's run")
            continue
        tracking.log_to_run(run_id, report.run_metrics(results, family_keys, metrics.split_timings(results)[1]))
    tracking.log_table(pd.DataFrame({"seed": over_seeds["seeds"]} | over_seeds["values"]), "tables/seeds.json")


def load_model_and_judge(model_dir: str, judge_dir: str, seed: int):
    """The trained model (seeded first: its sampling noise), its config, and the judge."""
    from genlab.evaluation import judge as judges
    from genlab.models.registry import load_model
    from genlab.training.devices import set_seed

    set_seed(seed)
    model, config = load_model(model_dir)
    return model, config, judges.load(judge_dir)


def write_and_log(args, evaluation: report.Evaluation, restored: dict, prepared: splits.PreparedData,
                  data_md5: str, model_id: str | None) -> str:
    """The DVC metrics (what a rerun reproduces) and times, and the run's scalars, tables and artifacts;
    the evaluation's key numbers in a sentence."""
    restore_metrics, restore_timings, restore_tables = report.restoration_outputs(restored)
    measured, timings = metrics.split_timings(evaluation.results)
    write_json(args.metrics, measured)
    write_json(args.restore, restore_metrics)
    write_json(args.timings, timings | restore_timings)
    test_set = tracking.log_splits(prepared, args.data, data_md5, ("test",))["test"]
    tracking.log_metrics(report.run_metrics(evaluation.results, evaluation.family_keys, timings, restored),
                         model_id=model_id, dataset=test_set)
    tables = report.run_tables(evaluation.results, bias.shares(prepared.train.y, prepared.num_classes))
    for artifact_file, table in (tables | restore_tables).items():
        tracking.log_table(table, artifact_file)
    tracking.log_artifacts(Path(args.out), "evaluation")
    for path in (args.metrics, args.restore, args.timings):
        tracking.log_artifacts(Path(path), "evaluation")
    return report.describe_evaluation(evaluation.results, prepared.num_classes)


if __name__ == "__main__":
    run_stage(main)
