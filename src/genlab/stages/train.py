"""DVC stage `train@<model>`: fit one model from params.yaml and record it in its own MLflow run; and
`train_prior@<prior>`: fit a learned prior over a trained encoder's codes (`priors:`, genlab.models.latent).

Writes the weights and config (`--out`), the loss history and its figure (`--history`, `--figure`),
and logs to MLflow the hyperparameters, the splits it used (datasets), per-epoch losses (`train/...`),
a progress grid every few epochs, the loss-curve diagnosis (the run's description) and the model as a
LoggedModel (a pyfunc generator). The run id and the model id are saved with the model, so that
`evaluate@<model>` continues the same run and links its metrics to the same model. The state after
every few epochs is kept until the outputs are written: a rerun after an interruption (SIGTERM,
SIGKILL, a crash) resumes from it and continues the same MLflow run.

With several seeds (`train.seeds`, or the model's own `seeds`: genlab.evaluation.seeds), the first trains as
above and the further ones meanwhile in a process beside the stage on the other core (genlab.runtime.parallel),
without MLflow and without a resume; the stage then logs each as a run nested under the model's (`<model> seed
<seed>`: its settings, curves and diagnosis) and saves it in `seeds/<seed>/` of the model's folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from genlab import tracking
from genlab.config.params import (
    ParamsError,
    check_image_shape,
    entry_key,
    hyperparameter_count,
    load_params,
    model_params,
    seeds_of,
)
from genlab.data import splits
from genlab.evaluation import plots
from genlab.runtime import parallel
from genlab.runtime.files import atomic_dir, write_json
from genlab.runtime.stage import argument_parser, run_stage
from genlab.training.diagnostics import diagnose

RESUME_DIR = Path(".genlab") / "resume"  # per model, beside the workspace (git- and DVC-ignored)
FURTHER_SEEDS_DIR = Path(".genlab") / "seeds"  # per model, the further seeds until they join the model's folder


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("model", help="a key of `models:` in params.yaml")
    parser.add_argument("--out", required=True, help="folder for the model's weights, config and run id")
    parser.add_argument("--history", required=True, help="CSV of the per-epoch losses (DVC plots)")
    parser.add_argument("--figure", required=True, help="PNG of the loss curves and their diagnosis")
    parser.add_argument("--encoder-dir", help="for a prior over codes (`priors:`): the trained encoder's folder")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    config = model_params(params, args.model)
    prepared = splits.load_prepared(args.data)
    check_image_shape(args.model, config, prepared.image_shape)
    experiment_id = tracking.setup(params.tracking.experiment)  # fails fast, before any training

    data_md5 = splits.data_hash(args.data)
    # the further seeds train beside this one, in a process forked before this stage's first TensorFlow operation
    scratch = FURTHER_SEEDS_DIR / args.model
    shutil.rmtree(scratch, ignore_errors=True)  # what a failed run left
    further = seeds_of(params, config)[1:]
    beside = parallel.Beside(train_further_seeds, config, further, prepared, params.train, args.encoder_dir,
                             args.model, str(scratch)) if further else None
    try:
        train_first_seed(args, params, config, prepared, experiment_id, data_md5, beside)
    finally:
        if beside is not None:
            beside.cancel()
        shutil.rmtree(scratch, ignore_errors=True)


def train_first_seed(args, params, config, prepared: splits.PreparedData, experiment_id: str, data_md5: str,
                     further: parallel.Beside | None) -> None:
    """The model with its entry's seed, in the model's MLflow run, resumable; then the further seeds' results
    (`further`), each logged as a nested run and saved beside it in the model's folder."""
    from genlab.models.networks import trainable_parameters
    from genlab.training import devices, fit

    encoder = load_encoder(config, args.encoder_dir, args.model)
    backup = fit.Backup(RESUME_DIR / args.model, fit.backup_fingerprint(config, params.train, data_md5,
                                                                        encoder and encoder[1]))
    resumed_run = tracking.continuable_run(backup.open().get("run_id"), experiment_id)
    devices.set_seed(config.seed)
    model, replicas = build_on_replicas(config, prepared.image_shape, prepared.num_classes, params.train.distribute,
                                        args.model)
    if encoder is not None:
        model.take_encoder(encoder[0])
    num_params = trainable_parameters(model)
    originals = prepared.test.x[splits.grid_indices(prepared.test.y, params.train.grid_images)]
    log = tracking.EpochLog(lambda: plots.tile(list(model.progress_rows(originals).values())),
                            params.train.grid_every_epochs, resumed_run)
    tags = tracking.model_run_tags(f"{stage_name(config)}@{args.model}", args.model, config.family, data_md5)
    with tracking.run(experiment_id, run_name=args.model, run_id=resumed_run, tags=tags) as run_id:
        backup.remember(run_id=run_id)
        tracking.log_splits(prepared, args.data, data_md5, ("train", "validation"))
        if resumed_run is None:
            tracking.log_params(config.model_dump(exclude={"encoder_model"}) | hyperparameter_count(config)
                                | devices.resolved_settings(config)
                                | {"num_params": num_params, "image_shape": prepared.image_shape,
                                   "replicas": replicas})
            log.grid(0)
        result = train(model, config, prepared, params.train, backup, log, args.model)
        trained, diagnosis = judge_training(model, config, prepared, params.train, result, num_params, log, args.model)
        others = further.result() if further is not None else []
        seed_runs = {found["seed"]: log_further_seed(found, experiment_id, run_id, tags, config, args.model)
                     for found in others}
        write_outputs(args, model, config, prepared.image_shape, result.history, trained, diagnosis,
                      {"run_id": run_id, "experiment_id": experiment_id}, params.tracking.log_model_weights,
                      {found["seed"]: Path(found["folder"]) for found in others}, seed_runs)
    backup.clear()  # the outputs are in place: nothing left to resume
    print(f"{args.model}: {trained['epochs_trained']} epochs in {result.seconds:.1f}s, validation "
          f"{trained['monitored_loss']} {trained['final_val_loss']:.5g}; {diagnosis.verdict.replace('_', ' ')} "
          f"(why: {args.figure})")
    for found in others:
        other = found["trained"]
        print(f"{args.model} seed {found['seed']}: {other['epochs_trained']} epochs in {other['train_seconds']:.1f}s "
              f"beside it, validation {other['final_val_loss']:.5g}; {other['diagnosis'].replace('_', ' ')}")


def train_further_seeds(config, further: list[int], prepared: splits.PreparedData, settings, encoder_dir: str | None,
                        name: str, scratch: str) -> list[dict]:
    """Each further seed trained as the first (its own seed for the weights, the batches and the sampling noise),
    in the process beside the stage: without MLflow and without a resume, and saved (weights, config, training
    summary) into `scratch`/<seed>. Per seed: its folder, curves and summary."""
    from genlab.models.networks import trainable_parameters
    from genlab.models.registry import save_model
    from genlab.training import devices, fit, summary

    found = []
    for seed in further:
        seeded = config.model_copy(update={"seed": seed})
        encoder = load_encoder(seeded, encoder_dir, name)
        devices.set_seed(seed)
        model, _ = build_on_replicas(seeded, prepared.image_shape, prepared.num_classes, settings.distribute, name)
        if encoder is not None:
            model.take_encoder(encoder[0])
        (train_inputs, train_targets), (validation_inputs, validation_targets) = model.training_data(
            prepared.train, prepared.validation)
        result = fit.fit(model, train_inputs, validation_inputs, targets=(train_targets, validation_targets),
                         epochs=seeded.epochs, batch_size=seeded.batch_size,
                         early_stopping_patience=seeded.early_stopping_patience, seed=seed,
                         learning_rate_schedule=seeded.learning_rate_schedule, warmup_epochs=seeded.warmup_epochs,
                         name=f"{name} seed {seed}")
        model.after_training(prepared.train)
        monitored = model.monitored_loss
        diagnosis = diagnose(result.history[monitored], result.history.get(f"val_{monitored}"),
                             **settings.diagnosis.model_dump())
        trained = summary.summarize(result, diagnosis, monitored, trainable_parameters(model),
                                    hyperparameter_count(seeded), len(prepared.train.x))
        folder = Path(scratch) / str(seed)
        folder.mkdir(parents=True)
        save_model(model, seeded, prepared.image_shape, folder)
        write_json(folder / summary.SUMMARY_FILE, trained)
        found.append({"seed": seed, "folder": str(folder), "history": result.history,
                      "epoch_seconds": result.epoch_seconds, "trained": trained})
    return found


def log_further_seed(found: dict, experiment_id: str, parent_run_id: str, tags: dict, config, name: str) -> str:
    """A further seed's run, nested under the model's: its settings, curves, diagnosis; its id."""
    from genlab.training import summary

    seeded = config.model_copy(update={"seed": found["seed"]})
    return tracking.log_seed_run(experiment_id, parent_run_id, name, found["seed"], tags,
                                 seeded.model_dump(exclude={"encoder_model"}) | hyperparameter_count(seeded)
                                 | {"num_params": found["trained"]["num_params"]},
                                 found["history"], found["epoch_seconds"], found["trained"],
                                 summary.describe_training(f"{name} seed {found['seed']}", config.family,
                                                           found["trained"]))


def stage_name(config) -> str:
    """train, or train_prior for an entry of `priors:` (dvc.yaml)."""
    return "train_prior" if entry_key(config) == "priors" else "train"


def load_encoder(config, encoder_dir: str | None, name: str):
    """A prior's trained encoder (through the registry) and its weights' md5, or None for a model of `models:`."""
    if entry_key(config) != "priors":
        return None
    if encoder_dir is None:
        raise ParamsError(f"priors.{name}: a prior over codes needs --encoder-dir, the folder of the trained "
                          f"models.{config.encoder} (dvc.yaml gives models/{config.encoder})")
    from genlab.models.registry import WEIGHTS_FILE, load_model

    weights = Path(encoder_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no trained encoder for priors.{name}; run train@{config.encoder} first")
    import hashlib

    return load_model(encoder_dir)[0], hashlib.md5(weights.read_bytes()).hexdigest()


def build_on_replicas(config, image_shape: tuple[int, int], num_classes: int, distribute: str, name: str):
    """The model built in the distribution strategy's scope (its variables and optimizer state on every
    replica), and the number of replicas."""
    from genlab.models.registry import build_model
    from genlab.training import devices

    strategy = devices.distribution_strategy(distribute)
    with strategy.scope():
        model = build_model(config, image_shape, num_classes)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        print(f"{name}: training on {replicas} replicas ({type(strategy).__name__}); each takes "
              f"{config.batch_size // replicas} images of a batch")
    return model, replicas


def train(model, config, prepared: splits.PreparedData, settings, backup, log: tracking.EpochLog, name: str):
    """genlab.training.fit with the model's settings, keeping its state in `backup` to resume from; a
    diverged training leaves no backup (a rerun with the same settings would diverge again)."""
    from genlab.training import fit

    (train_inputs, train_targets), (validation_inputs, validation_targets) = model.training_data(
        prepared.train, prepared.validation)  # the images (and classes), or a prior's codes
    try:
        result = fit.fit(model, train_inputs, validation_inputs, targets=(train_targets, validation_targets),
                         epochs=config.epochs,
                         batch_size=config.batch_size, early_stopping_patience=config.early_stopping_patience,
                         on_epoch=log.on_epoch, seed=config.seed, backup_dir=backup.folder,
                         backup_every_seconds=settings.backup_every_seconds,
                         learning_rate_schedule=config.learning_rate_schedule, warmup_epochs=config.warmup_epochs,
                         name=name)
    except fit.TrainingDiverged:
        backup.clear()
        raise
    log.finish(result.history, result.epoch_seconds, result.resumed_at_epoch)
    if result.resumed_at_epoch:
        print(f"{name}: resumed after epoch {result.resumed_at_epoch} from {backup.folder}")
    return result


def judge_training(model, config, prepared: splits.PreparedData, settings, result, num_params: int,
                   log: tracking.EpochLog, name: str):
    """After training: the model's own last step (an autoencoder fits a Gaussian to its codes), the last
    progress grid, and "always check your loss function": the diagnosis of the monitored loss's curve (a
    GAN has no single loss: its generator's), recorded as the run's tags and description."""
    from genlab.training import summary

    model.after_training(prepared.train)
    monitored = model.monitored_loss
    diagnosis = diagnose(result.history[monitored], result.history.get(f"val_{monitored}"),
                         **settings.diagnosis.model_dump())
    trained = summary.summarize(result, diagnosis, monitored, num_params,
                                hyperparameter_count(config), len(prepared.train.x))
    if trained["epochs_trained"] % settings.grid_every_epochs:
        log.grid(trained["epochs_trained"])
    tracking.set_tags({f"{tracking.TAG_PREFIX}diagnosis": diagnosis.verdict,
                       f"{tracking.TAG_PREFIX}diagnosis_reason": diagnosis.reason})
    tracking.describe(summary.describe_training(name, config.family, trained))
    return trained, diagnosis


def write_outputs(args, model, config, image_shape: tuple[int, int], history: dict, trained: dict, diagnosis,
                  run: dict, log_weights: bool, further: dict[int, Path], seed_runs: dict[int, str]) -> None:
    """The history CSV, the loss-curve figure and the model's folder (weights, config, summary, run ids; each
    further seed's folder, moved in from `further`, in seeds/<seed>/ with its run's id), the model logged as the
    run's LoggedModel."""
    from genlab.models.registry import save_model
    from genlab.training import summary

    monitored = trained["monitored_loss"]
    summary.write_history(history, monitored, args.history)
    plots.save(plots.loss_curves(history, f"{args.model}: {diagnosis.verdict} ({monitored})", diagnosis.reason),
               args.figure)
    with atomic_dir(args.out) as staging:
        save_model(model, config, image_shape, staging)
        write_json(staging / summary.SUMMARY_FILE, trained)
        model_id = record_model(staging, args.model, config.family, image_shape, trained, log_weights)
        write_json(staging / summary.RUN_FILE, run | {"model_id": model_id})
        for seed, folder in further.items():
            write_json(folder / summary.RUN_FILE, {"run_id": seed_runs[seed], "experiment_id": run["experiment_id"],
                                                   "model_id": None})
            (staging / summary.SEEDS_DIR).mkdir(exist_ok=True)
            folder.rename(staging / summary.SEEDS_DIR / str(seed))
    tracking.log_artifacts(Path(args.history), "training")
    tracking.log_artifacts(Path(args.figure), "training")


def record_model(folder: Path, name: str, family: str, image_shape: tuple[int, int], trained: dict,
                 log_weights: bool) -> str | None:
    """The model in `folder` as the run's LoggedModel (a generator mlflow.pyfunc loads), with the training's
    epochs and time linked to it; its id, or None when params.yaml logs no weights."""
    model_id = None
    if log_weights:
        model_id = tracking.log_generator(folder, name, image_shape, step=trained["epochs_trained"],
                                          tags={f"{tracking.TAG_PREFIX}family": family})
    tracking.log_metrics({"train/epochs_trained": trained["epochs_trained"],
                          "timing/train_seconds": trained["train_seconds"]}, model_id=model_id)
    return model_id


if __name__ == "__main__":
    run_stage(main)
