"""DVC stage `judge`: train the classifier that measures every model's samples the same way.

Trains on the real training split (early stopping on the validation split), reports its
test accuracy overall and per class, and saves it (`--out`) for `evaluate@<model>`, which
takes FID, KID, precision and recall in its features and labels samples with it. Logged to
its own MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from genlab import tracking
from genlab.config.params import check_fits, load_params
from genlab.data import splits
from genlab.evaluation import metrics
from genlab.runtime.files import atomic_dir, write_json
from genlab.runtime.stage import argument_parser, run_stage


def parse_arguments(argv: list[str] | None):
    """The command line DVC runs (dvc.yaml)."""
    parser = argument_parser(__doc__)
    parser.add_argument("--out", required=True, help="folder for the judge's weights and config")
    parser.add_argument("--metrics", required=True, help="the judge's metrics JSON (DVC metrics)")
    parser.add_argument("--timings", required=True, help="the wall-clock times JSON (training)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    params = load_params(args.params)
    config = params.judge
    prepared = splits.load_prepared(args.data)
    check_fits("judge", config, prepared.image_shape)
    experiment_id = tracking.setup(params.tracking.experiment)

    from genlab.evaluation import judge as judges
    from genlab.training import devices, fit

    devices.set_seed(config.seed)
    judge = judges.build(config, prepared.image_shape, prepared.num_classes)
    log = tracking.EpochLog(None, 0, resumed_run=None)
    data_md5 = splits.data_hash(args.data)
    tags = tracking.provenance_tags("judge", data_md5) | {f"{tracking.TAG_PREFIX}role": "judge"}
    with tracking.run(experiment_id, run_name="judge", tags=tags) as run_id:
        tracking.log_params(config.model_dump() | {"num_classes": prepared.num_classes})
        datasets = tracking.log_splits(prepared, args.data, data_md5, ("train", "validation", "test"))
        result = fit.fit(judge.classifier, prepared.train.x, prepared.validation.x, epochs=config.epochs,
                         batch_size=config.batch_size, early_stopping_patience=config.early_stopping_patience,
                         on_epoch=log.on_epoch, targets=(prepared.train.y, prepared.validation.y), seed=config.seed,
                         name="judge")
        log.finish(result.history, result.epoch_seconds, resumed_at_epoch=0)
        results = judges.test_report(judge, prepared.test.x, prepared.test.y, prepared.num_classes, result, config)
        tracking.log_metrics({"test/accuracy": results["test_accuracy"],
                              "train/epochs_trained": results["epochs_trained"],
                              "timing/train_seconds": results["train_seconds"]}, dataset=datasets["test"])
        tracking.log_table(judges.per_class_table(results), "tables/per_class.json")
        tracking.describe(judges.describe(results))
        with atomic_dir(args.out) as staging:
            judges.save(judge, config, prepared.image_shape, prepared.num_classes, staging)
            write_json(staging / "run.json", {"run_id": run_id, "experiment_id": experiment_id})
        measured, timings = metrics.split_timings(results)
        write_json(args.metrics, measured)
        write_json(args.timings, timings)
        tracking.log_artifacts(Path(args.out), "judge")
        tracking.log_artifacts(Path(args.metrics), "judge")
    print(f"judge: test accuracy {results['test_accuracy']:.4f} after {results['epochs_trained']} epochs")
    if results["test_accuracy"] < config.min_test_accuracy:
        print(f"warning: the judge's test accuracy {results['test_accuracy']:.4f} is below "
              f"judge.min_test_accuracy {config.min_test_accuracy}: its features and labels are a weak ruler",
              file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
