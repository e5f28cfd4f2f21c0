"""DVC stage `train@<model>`: fit one model from params.yaml and record it in its own MLflow run.

Writes the weights and config (`--out`), the loss history and its figure (`--history`),
and logs to MLflow the hyperparameters, the splits it used (datasets), per-epoch losses
(`train/...`), a reconstruction grid every few epochs, the loss-curve diagnosis (the run's
description) and the model as a LoggedModel (a pyfunc generator). The run id and the model id
are saved with the model, so that `evaluate@<model>` continues the same run and links its
metrics to the same model.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from genlab import data, plots, tracking
from genlab.diagnostics import diagnose
from genlab.files import atomic_dir, atomic_file, write_json
from genlab.params import check_image_shape, hyperparameter_count, load_params, model_params
from genlab.stages import argument_parser, run_stage

RUN_FILE = "run.json"
SUMMARY_FILE = "training.json"
RESUME_DIR = Path(".genlab") / "resume"  # per model, beside the workspace (git- and DVC-ignored)


def fingerprint(config, train_params, data_md5: str) -> str:
    """What a backup must match to be resumed: the model's settings, the train section, the data, and
    the code that trains them (genlab's sources, TensorFlow's and Keras's versions)."""
    import keras
    import tensorflow as tf

    package = Path(__file__).resolve().parents[1]
    code = hashlib.md5(b"".join(path.read_bytes() for path in sorted(package.rglob("*.py")))).hexdigest()
    described = {"model": config.model_dump(mode="json"), "train": train_params.model_dump(mode="json"),
                 "data_md5": data_md5, "code_md5": code, "versions": [tf.__version__, keras.__version__]}
    return hashlib.md5(json.dumps(described, sort_keys=True).encode()).hexdigest()


def write_history(history: dict[str, list[float]], path: str | Path) -> None:
    """One row per epoch: the CSV that `dvc plots` draws."""
    keys = list(history)
    with atomic_file(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch, values in enumerate(zip(*(history[key] for key in keys)), start=1):
            writer.writerow([epoch, *(f"{value:.8g}" for value in values)])


def describe_training(name: str, family: str, summary: dict) -> str:
    """The run's description: the loss curve's diagnosis and the numbers behind it."""
    return (f"{family} `{name}`: {summary['diagnosis'].replace('_', ' ')} after {summary['epochs_trained']} epochs "
            f"({summary['train_seconds']:.0f} s, {summary['num_params']:,} parameters). "
            f"{summary['diagnosis_reason'][:1].upper()}{summary['diagnosis_reason'][1:]}. "
            f"Final {summary['monitored_loss']}: {summary['final_loss']:.4g} (validation {summary['final_val_loss']:.4g}).")


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("model", help="a key of `models:` in params.yaml")
    parser.add_argument("--out", required=True, help="folder for the model's weights, config and run id")
    parser.add_argument("--history", required=True, help="CSV of the per-epoch losses (DVC plots)")
    parser.add_argument("--figure", required=True, help="PNG of the loss curves and their diagnosis")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    config = model_params(params, args.model)
    prepared = data.load_prepared(args.data)
    check_image_shape(args.model, config, prepared.image_shape)
    experiment_id = tracking.setup(params.tracking.experiment)  # fails fast, before any training

    from genlab import training
    from genlab.models import build_model, save_model

    data_md5 = data.data_hash(args.data)
    # the state after every completed epoch, kept until the outputs are written: a rerun after an
    # interruption (SIGTERM, SIGKILL, a crash) resumes from it and continues the same MLflow run
    backup = training.Backup(RESUME_DIR / args.model, fingerprint(config, params.train, data_md5))
    previous = backup.open()
    resumed_run = previous.get("run_id") if tracking.run_continuable(previous.get("run_id"), experiment_id) else None

    training.set_seed(config.seed)
    strategy = training.distribution_strategy(params.train.distribute)
    with strategy.scope():  # the model's variables and optimizer state live on every replica
        model = build_model(config, prepared.image_shape)
    if strategy.num_replicas_in_sync > 1:
        print(f"{args.model}: training on {strategy.num_replicas_in_sync} replicas ({type(strategy).__name__}); "
              f"each takes {config.batch_size // strategy.num_replicas_in_sync} images of a batch")
    originals = prepared.test.x[data.grid_indices(prepared.test.y, params.train.grid_images)]

    def log_grid(step: int) -> None:
        # encoders: originals above reconstructions; generators: samples from a fixed seed
        tracking.log_image(plots.tile(list(model.progress_rows(originals).values())), key="progress", step=step)

    epoch_metrics = tracking.MetricBuffer()
    # epochs a resumed run logged before it stopped (after its last backup, some are trained again)
    logged = tracking.metric_steps(resumed_run, tracking.EPOCH_SECONDS) if resumed_run else set()

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        if epoch + 1 in logged:
            return
        epoch_metrics.add(tracking.curves(logs), step=epoch + 1)
        if (epoch + 1) % params.train.grid_every_epochs == 0:
            log_grid(epoch + 1)

    tags = tracking.provenance_tags(f"train@{args.model}", data_md5)
    tags |= {f"{tracking.TAG_PREFIX}model": args.model, f"{tracking.TAG_PREFIX}family": config.family}
    with tracking.run(experiment_id, run_name=args.model, run_id=resumed_run, tags=tags) as run_id:
        backup.remember(run_id=run_id)
        num_params = training.trainable_parameters(model)
        tracking.log_splits(prepared, args.data, data_md5, ("train", "validation"))
        if resumed_run is None:
            # `precision: auto` as this machine resolved it (float32 or mixed_bfloat16)
            resolved = ({"precision_used": training.compute_precision(config.precision)}
                        if hasattr(config, "precision") else {})
            tracking.log_params(config.model_dump() | hyperparameter_count(config) | resolved
                                | {"num_params": num_params, "image_shape": prepared.image_shape,
                                   "replicas": strategy.num_replicas_in_sync})
            log_grid(0)
        try:
            result = training.fit(model, prepared.train.x, prepared.validation.x, epochs=config.epochs,
                                  batch_size=config.batch_size,
                                  early_stopping_patience=config.early_stopping_patience,
                                  on_epoch=on_epoch, seed=config.seed, backup_dir=backup.folder,
                                  backup_every_seconds=params.train.backup_every_seconds,
                                  learning_rate_schedule=config.learning_rate_schedule,
                                  warmup_epochs=config.warmup_epochs, name=args.model)
        except training.TrainingDiverged:
            backup.clear()  # a rerun with the same settings would diverge again: start it afresh
            raise
        if result.resumed_at_epoch:  # the epochs before the interruption that the run lacks (a kill loses
            for epoch in range(result.resumed_at_epoch):  # the last few seconds' batch of metrics)
                if epoch + 1 not in logged:
                    epoch_metrics.add(tracking.curves({key: values[epoch] for key, values in result.history.items()}
                                                      | {"epoch_seconds": result.epoch_seconds[epoch]}), step=epoch + 1)
            tracking.set_tags({f"{tracking.TAG_PREFIX}resumed_at_epoch": str(result.resumed_at_epoch)})
            print(f"{args.model}: resumed after epoch {result.resumed_at_epoch} from {backup.folder}")
        epoch_metrics.flush()
        if hasattr(model, "fit_latent_prior"):  # an autoencoder generates from a Gaussian fitted to its codes
            model.fit_latent_prior(prepared.train.x)
        monitored = getattr(model, "monitored_loss", "loss")  # a GAN has no single loss: its generator's
        epochs_trained = len(result.history[monitored])
        if epochs_trained % params.train.grid_every_epochs:
            log_grid(epochs_trained)
        diagnosis = diagnose(result.history[monitored], result.history.get(f"val_{monitored}"),
                             **params.train.diagnosis.model_dump())
        summary = {"num_params": num_params, **hyperparameter_count(config),
                   "train_seconds": round(result.seconds, 3),
                   "seconds_per_epoch": round(result.seconds_per_epoch, 4),
                   "train_images_per_second": round(len(prepared.train.x) / result.seconds_per_epoch, 1),
                   "epochs_trained": epochs_trained, "stopped_early": result.stopped_early,
                   "monitored_loss": monitored, "final_loss": result.history[monitored][-1],
                   "final_val_loss": result.history[f"val_{monitored}"][-1],
                   "diagnosis": diagnosis.verdict, "diagnosis_reason": diagnosis.reason} | diagnosis.metrics()
        tracking.set_tags({f"{tracking.TAG_PREFIX}diagnosis": diagnosis.verdict,
                           f"{tracking.TAG_PREFIX}diagnosis_reason": diagnosis.reason})
        tracking.describe(describe_training(args.model, config.family, summary))

        # dvc plots draws loss and val_loss for every model: the monitored pair stands in where a family
        # has no single loss (a GAN's generator loss)
        write_history({"loss": result.history[monitored], "val_loss": result.history[f"val_{monitored}"]}
                      | result.history, args.history)
        plots.save(plots.loss_curves(result.history, f"{args.model}: {diagnosis.verdict} ({monitored})",
                                     diagnosis.reason),
                   args.figure)
        with atomic_dir(args.out) as staging:
            save_model(model, config, prepared.image_shape, staging)
            write_json(staging / SUMMARY_FILE, summary)
            model_id = None
            if params.tracking.log_model_weights:  # the run's LoggedModel: a generator mlflow.pyfunc loads
                model_id = tracking.log_generator(staging, args.model, prepared.image_shape, step=epochs_trained,
                                                  tags={f"{tracking.TAG_PREFIX}family": config.family})
            tracking.log_metrics({"train/epochs_trained": epochs_trained,
                                  "timing/train_seconds": summary["train_seconds"]}, model_id=model_id)
            write_json(staging / RUN_FILE, {"run_id": run_id, "experiment_id": experiment_id, "model_id": model_id})
        tracking.log_artifacts(Path(args.history), "training")
        tracking.log_artifacts(Path(args.figure), "training")
    backup.clear()  # the outputs are in place: nothing left to resume
    print(f"{args.model}: {epochs_trained} epochs in {result.seconds:.1f}s, validation {monitored} "
          f"{summary['final_val_loss']:.5g}; {diagnosis.verdict.replace('_', ' ')} (why: {args.figure})")


if __name__ == "__main__":
    run_stage(main)
