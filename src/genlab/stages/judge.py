"""DVC stage `judge`: train the classifier that measures every model's samples the same way.

Trains on the real training split (early stopping on the validation split), reports its
test accuracy overall and per class, and saves it (`--out`) for `evaluate@<model>`, which
takes FID, KID, precision and recall in its features and labels samples with it. Logged to
its own MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from genlab import data, metrics, tracking
from genlab.files import atomic_dir, write_json
from genlab.params import load_params
from genlab.stages import argument_parser, run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--out", required=True, help="folder for the judge's weights and config")
    parser.add_argument("--metrics", required=True, help="the judge's metrics JSON (DVC metrics)")
    parser.add_argument("--timings", required=True, help="the wall-clock times JSON (training)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    config = params.judge
    prepared = data.load_prepared(args.data)
    problem = config.image_problem(prepared.image_shape)
    if problem:
        from genlab.params import ParamsError

        raise ParamsError(f"judge.{problem} (the prepared data's images)")
    experiment_id = tracking.setup(params.tracking.experiment)

    from genlab import judge as judges
    from genlab import training

    training.set_seed(config.seed)
    judge = judges.build(config, prepared.image_shape, prepared.num_classes)
    epoch_metrics = tracking.MetricBuffer()
    tags = tracking.provenance_tags("judge", data.data_hash(args.data)) | {f"{tracking.TAG_PREFIX}role": "judge"}
    with tracking.run(experiment_id, run_name="judge", tags=tags) as run_id:
        tracking.log_params(config.model_dump() | {"num_classes": prepared.num_classes})
        datasets = tracking.log_splits(prepared, args.data, data.data_hash(args.data), ("train", "validation", "test"))
        result = training.fit(judge.classifier, prepared.train.x, prepared.validation.x, epochs=config.epochs,
                              batch_size=config.batch_size, early_stopping_patience=config.early_stopping_patience,
                              on_epoch=lambda epoch, logs: epoch_metrics.add(tracking.curves(logs), step=epoch + 1),
                              targets=(prepared.train.y, prepared.validation.y), seed=config.seed, name="judge")
        epoch_metrics.flush()
        predicted = judge.look(prepared.test.x)[1].argmax(axis=1)
        correct = (predicted == prepared.test.y).astype(np.float64)
        results = {"test_accuracy": float(correct.mean()),
                   "per_class_accuracy": metrics.per_class_mean(correct, prepared.test.y, prepared.num_classes),
                   "num_params": judge.classifier.count_params(), "train_seconds": round(result.seconds, 3),
                   "epochs_trained": len(result.history["loss"]), "feature_dim": config.hidden_units[-1]}
        tracking.log_metrics({"test/accuracy": results["test_accuracy"], "train/epochs_trained": results["epochs_trained"],
                              "timing/train_seconds": results["train_seconds"]}, dataset=datasets["test"])
        tracking.log_table(pd.DataFrame({"class": list(results["per_class_accuracy"]),
                                         "test_accuracy": list(results["per_class_accuracy"].values())}),
                           "tables/per_class.json")
        tracking.describe(f"The judge: a classifier whose features and labels measure every model. Test accuracy "
                          f"{results['test_accuracy']:.4f} after {results['epochs_trained']} epochs; worst class "
                          f"{min(results['per_class_accuracy'], key=results['per_class_accuracy'].get)} "
                          f"({min(results['per_class_accuracy'].values()):.3f}).")
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
