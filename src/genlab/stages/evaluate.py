"""DVC stage `evaluate@<model>`: test-split reconstruction errors, per class, extremes and the latent map.

Continues the model's MLflow run (its id is saved with the model) and writes the
DVC metrics JSON (`--metrics`) and figures plus the grid reconstructions that
`compare` lines up (`--out`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genlab import data, metrics, plots, tracking
from genlab.files import atomic_dir, read_json, write_json
from genlab.params import load_params
from genlab.stages import argument_parser, run_stage
from genlab.stages.train import RUN_FILE, SUMMARY_FILE

GRID_FILE = "grid_reconstructions.npy"


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("model", help="a key of `models:` in params.yaml")
    parser.add_argument("--model-dir", required=True, help="the trained model's folder")
    parser.add_argument("--metrics", required=True, help="the evaluation metrics JSON (DVC metrics)")
    parser.add_argument("--out", required=True, help="folder for figures and grid reconstructions")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    prepared = data.load_prepared(args.data)
    run_id = read_json(Path(args.model_dir) / RUN_FILE)["run_id"]
    training_summary = read_json(Path(args.model_dir) / SUMMARY_FILE)
    experiment_id = tracking.setup(params.tracking.experiment)
    run_tags = {f"{tracking.TAG_PREFIX}evaluated": "true"}
    if not tracking.run_exists(run_id):  # the model was trained against another store: record it afresh
        print(f"{args.model}: training run {run_id} is not in this MLflow store; evaluating in a new run")
        run_tags |= tracking.provenance_tags(f"evaluate@{args.model}", data.data_hash(args.data))
        run_tags |= {f"{tracking.TAG_PREFIX}model": args.model, f"{tracking.TAG_PREFIX}training_run_id": run_id}
        run_id = None

    from genlab.models import load_model

    model, config = load_model(args.model_dir)
    x_test, y_test = prepared.test.x, prepared.test.y
    reconstructions = model.reconstruct(x_test)
    errors = metrics.reconstruction_errors(x_test, reconstructions)
    per_class = {kind: metrics.per_class_mean(values, y_test, prepared.num_classes) for kind, values in errors.items()}
    results = {
        "test_mse": float(errors["mse"].mean()),
        "test_bce": float(errors["bce"].mean()),
        "worst_class_mse_ratio": metrics.worst_best_ratio(per_class["mse"]),
        "per_class": per_class,
        "num_params": training_summary["num_params"],
        "train_seconds": training_summary["train_seconds"],
        "epochs_trained": training_summary["epochs_trained"],
    }

    order = np.argsort(errors["bce"])
    count = params.evaluate.num_extreme_images
    worst, best = order[::-1][:count], order[:count]
    grid = data.grid_indices(y_test, params.train.grid_images)
    with tracking.run(experiment_id, run_name=args.model, run_id=run_id, tags=run_tags) as run_id:
        with atomic_dir(args.out) as staging:
            np.save(staging / GRID_FILE, reconstructions[grid].astype(np.float32))
            plots.save(plots.image_rows({"original": x_test[grid], "reconstruction": reconstructions[grid]},
                                        f"{args.model}: test images"), staging / "reconstructions.png")
            plots.save(plots.image_rows(
                {"worst": x_test[worst], "rebuilt": reconstructions[worst], "best": x_test[best],
                 "rebuilt ": reconstructions[best]},
                f"{args.model}: worst and best reconstructions (BCE)"), staging / "extremes.png")
            plots.save(plots.latent_map(
                metrics.pca_2d(model.encode(x_test)), y_test,
                f"{args.model}: bottleneck ({config.latent_dim}-D), first two principal components"),
                staging / "latent_map.png")
            write_json(staging / "summary.json", {
                "run_id": run_id, "diagnosis": training_summary["diagnosis"],
                "diagnosis_reason": training_summary["diagnosis_reason"],
                "family": config.family, "params": config.model_dump(mode="json")})
        write_json(args.metrics, results)
        flat = {key: value for key, value in results.items() if isinstance(value, (int, float))}
        flat |= {f"test_{kind}_class_{label}": value for kind, values in per_class.items()
                 for label, value in values.items()}
        tracking.log_metrics(flat)
        tracking.log_artifacts(Path(args.out), "evaluation")
        tracking.log_artifacts(Path(args.metrics), "evaluation")
    print(f"{args.model}: test MSE {results['test_mse']:.5f}, BCE {results['test_bce']:.5f}")


if __name__ == "__main__":
    run_stage(main)
