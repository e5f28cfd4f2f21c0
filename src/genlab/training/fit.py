"""Fitting a compiled model reproducibly: seeds, early stopping, a stop at the first non-finite loss.

Per-epoch hooks (`on_epoch`) let the train stage log to MLflow without this module
knowing about tracking.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np

from genlab.models.contract import Generator, build_optimizers
from genlab.runtime import console, progress
from genlab.runtime.files import atomic_dir, read_json, write_json
from genlab.training.keras_patches import Validation
from genlab.training.optimizers import LearningRateSchedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no model output is written."""


@dataclass(frozen=True)
class FitResult:
    history: dict[str, list[float]]  # metric -> one value per epoch
    seconds: float
    stopped_early: bool
    epoch_seconds: tuple[float, ...] = ()  # each epoch's wall time, validation included
    resumed_at_epoch: int = 0  # epochs restored from a backup (0: trained from the start)

    @property
    def seconds_per_epoch(self) -> float:
        """The median epoch after the first (which also traces the graphs)."""
        return float(np.median(self.epoch_seconds[1:] or self.epoch_seconds))


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite, and remember where."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.diverged_at: tuple[int, int] | None = None  # (epoch, batch), 1-based epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):  # every loss the family reports (a GAN has two)
        if not all(math.isfinite(float(value)) for value in (logs or {}).values()):
            self.diverged_at = (self.epoch + 1, batch)
            self.model.stop_training = True


class EpochBatches:
    """The training split in batches, every epoch's, as one tf.data pipeline that gathers them from the
    arrays in memory.

    Each epoch's order is a permutation that depends only on the seed and the epoch's number: a run
    resumed at epoch k sees the same batches as one that never stopped (Keras's own shuffling continues a
    random stream that a restart would begin again). Keras reads the pipeline through one iterator for the
    whole training, an epoch per execution of the train function (fit sets steps_per_execution to the
    epoch's batches): a PyDataset, whose batches pass through Python one by one and whose iterator is
    made again every epoch, cost a small model more than its training (benchmarks/README.md, issue 16)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epochs: int):
        import tensorflow as tf

        self.steps = math.ceil(len(x) / batch_size)
        orders = tf.constant(np.stack([np.random.default_rng([seed, epoch]).permutation(len(x))
                                       for epoch in range(epochs)]))
        images, targets = tf.constant(x), tf.constant(y)
        # the first epoch to serve, set when fit starts it (a resumed run starts after epoch 0)
        self.first_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="first_epoch")
        self.dataset = (tf.data.Dataset.range(epochs)
                        .filter(lambda epoch: epoch >= self.first_epoch)
                        .flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(orders[epoch]).batch(batch_size))
                        .map(lambda chosen: (tf.gather(images, chosen), tf.gather(targets, chosen)))
                        .prefetch(2))

    def start(self, epoch: int) -> None:
        """Called by fit's callbacks at the beginning of every epoch; the pipeline begins at the first."""
        self.first_epoch.assign(epoch)


def validation_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """The validation split in batches, in order: a pipeline without functions, whose iterator (made anew
    every epoch by Keras's evaluate) costs about a millisecond."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


class _EpochHook(keras.callbacks.Callback):
    """Times each epoch (validation included), keeps its logs, and hands the finite ones, with
    `epoch_seconds`, to `on_epoch`."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None] | None, batches: EpochBatches):
        super().__init__()
        self.on_epoch, self.batches = on_epoch, batches
        self.logs: list[dict[str, float]] = []  # per epoch, `epoch_seconds` included
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.start(epoch)
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        self.logs.append(logs | {"epoch_seconds": time.perf_counter() - self.started})
        if self.on_epoch is not None and all(math.isfinite(value) for value in logs.values()):
            self.on_epoch(epoch, self.logs[-1])


class _EpochBar(keras.callbacks.Callback):
    """One progress bar per training (epochs, with the current losses) in place of Keras's epoch lines."""

    SHOWN = 4  # losses on the bar; the CSV, the figure and MLflow have them all

    def __init__(self, epochs: int, name: str) -> None:
        super().__init__()
        self.epochs, self.name, self.bar = epochs, name, None

    def on_train_begin(self, logs=None):
        self.bar = progress.bar(desc=f"train {self.name}", total=self.epochs, unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        shown = [(key, value) for key, value in (logs or {}).items() if key != "learning_rate"][: self.SHOWN]
        self.bar.set_postfix_str(", ".join(f"{key} {float(value):.4g}" for key, value in shown), refresh=False)
        self.bar.update(epoch + 1 - self.bar.n)  # a resumed training starts at its first epoch not done

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


def _noise_states(model: keras.Model) -> list:
    """The state variables of the model's keras.random.SeedGenerators (a VAE's, GAN's, flow's or DDPM's
    noise), which `save_weights` leaves out."""
    return [variable for variable in model.non_trainable_variables if variable.name == "seed_generator_state"]


class _Resumable(keras.callbacks.Callback):
    """A training's state after an epoch, kept to resume from: the weights with the optimizers' state (what
    Keras's BackupAndRestore keeps, through its private attributes), the noise generators' state and the
    epochs' logs so far. All of it is written to a new folder that replaces the last backup in one rename,
    so a kill during a backup leaves the previous one whole (or, between two renames, none)."""

    FILES = ("latest.weights.h5", "training_metadata.json", "epochs.json")

    def __init__(self, backup_dir: Path, epochs_hook: _EpochHook, every_seconds: float):
        super().__init__()
        self.state_dir = backup_dir / "state"
        self.epochs_hook = epochs_hook
        self.first_epoch = 0
        self.every_seconds, self.saved_at = every_seconds, time.monotonic()

    def restore(self, model: keras.Model) -> int:
        """Before fit: the last backup's state into `model` (built, with its optimizers built); the number
        of epochs it had completed, where fit starts again (0: no backup)."""
        if not all((self.state_dir / name).is_file() for name in self.FILES):
            shutil.rmtree(self.state_dir, ignore_errors=True)  # none yet, or a kill between two renames
            return 0
        model.load_weights(self.state_dir / "latest.weights.h5")
        self.first_epoch = int(read_json(self.state_dir / "training_metadata.json")["epoch"])
        done = read_json(self.state_dir / "epochs.json")
        if len(done["epochs"]) != self.first_epoch:
            raise RuntimeError(f"{self.state_dir}: the backup is at epoch {self.first_epoch} but holds the logs "
                               f"of {len(done['epochs'])}; delete the folder to train from the start")
        self.epochs_hook.logs[:0] = done["epochs"]
        for variable, state in zip(_noise_states(model), done["noise"]):
            variable.assign(np.asarray(state, dtype=variable.dtype))
        return self.first_epoch

    def on_epoch_end(self, epoch, logs=None):
        if not all(math.isfinite(float(value)) for value in (logs or {}).values()):
            return  # never back up a diverged state
        if time.monotonic() - self.saved_at < self.every_seconds:
            return  # a backup costs a write of the weights and optimizer state: not after every short epoch
        with atomic_dir(self.state_dir) as staging:
            self.model.save_weights(staging / "latest.weights.h5")
            write_json(staging / "training_metadata.json", {"epoch": epoch + 1, "batch": 0})
            write_json(staging / "epochs.json", {  # the noise generators' state at the end of this epoch
                "epochs": self.epochs_hook.logs,
                "noise": [np.asarray(variable).tolist() for variable in _noise_states(self.model)]})
        self.saved_at = time.monotonic()


def backup_fingerprint(config, train_params, data_md5: str, encoder_md5: str | None = None) -> str:
    """What a backup must match to be resumed: the model's settings, the train section, the data (and a
    prior's trained encoder), and the code that trains them (genlab's sources, TensorFlow's and Keras's versions)."""
    import tensorflow as tf

    package = Path(__file__).resolve().parents[1]
    code = hashlib.md5(b"".join(path.read_bytes() for path in sorted(package.rglob("*.py")))).hexdigest()
    described = {"model": config.model_dump(mode="json"), "train": train_params.model_dump(mode="json"),
                 "data_md5": data_md5, "encoder_md5": encoder_md5, "code_md5": code,
                 "versions": [tf.__version__, keras.__version__]}
    return hashlib.md5(json.dumps(described, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Backup:
    """A folder that keeps a training's state between an interruption and the rerun that resumes it.

    `fingerprint` names what is trained (model settings, data hash): a backup of anything else is
    stale and is deleted on `open`. `remember` keeps small facts beside it (the MLflow run id).
    """

    folder: Path
    fingerprint: str

    STATE_FILE: ClassVar[str] = "state.json"

    def open(self) -> dict:
        """The remembered facts of a backup of the same training, or {} (a stale one is deleted)."""
        state_path = self.folder / self.STATE_FILE
        state = read_json(state_path) if state_path.is_file() else {}
        if state.get("fingerprint") != self.fingerprint:
            self.clear()
            return {}
        return state

    def remember(self, **facts) -> None:
        write_json(self.folder / self.STATE_FILE, {"fingerprint": self.fingerprint} | facts)

    def clear(self) -> None:
        (self.folder / self.STATE_FILE).unlink(missing_ok=True)  # first: what is left is never resumed
        shutil.rmtree(self.folder, ignore_errors=True)


def fit(
    model: keras.Model, x_train: np.ndarray, x_val: np.ndarray, *, epochs: int, batch_size: int,
    early_stopping_patience: int | None = None, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    targets: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0, backup_dir: str | Path | None = None,
    backup_every_seconds: float = 0.0, learning_rate_schedule: str = "constant", warmup_epochs: int = 0,
    name: str = "model",
) -> FitResult:
    """Train a model on the images, with `targets` (train, validation) for a classifier and the images
    themselves otherwise; raise TrainingDiverged on a non-finite loss.

    With `backup_dir`, the state after an epoch is kept there (after every epoch, or the first to end
    `backup_every_seconds` after the last backup) and a later call with the same folder resumes
    from the last one kept, ending with the same weights as a run that never
    stopped (on the CPU, where the kernels are deterministic). The caller deletes the folder once
    the outputs are safe. With early stopping there is no backup (its state is not kept).
    The console shows one progress bar named `name`, or Keras's epoch lines when console.verbose().
    """
    y_train, y_val = targets if targets is not None else (x_train, x_val)
    batches = EpochBatches(x_train, y_train, batch_size, seed, epochs)
    # one execution of the train function per epoch: with one iterator for all epochs, an execution of
    # more steps than an epoch has would run into the next epoch's batches
    model.steps_per_execution = batches.steps
    model.train_function = model.test_function = None  # traced again with that number of steps
    divergence = _StopOnNonFinite()
    epochs_hook = _EpochHook(on_epoch, batches)
    callbacks: list[keras.callbacks.Callback] = [divergence, epochs_hook]
    validation_data = None  # the split goes to Validation, or to Keras's evaluate where it does not apply
    if Validation.applies(model):  # first: every other callback sees the epoch's validation values
        callbacks.insert(0, Validation(x_val, y_val, batch_size))
    else:
        validation_data = validation_batches(x_val, y_val, batch_size)
    if learning_rate_schedule != "constant" or warmup_epochs:
        callbacks.append(LearningRateSchedule(model, epochs, learning_rate_schedule, warmup_epochs))
    if backup_dir is not None and early_stopping_patience:
        print("note: no backup for a resume with early stopping (its patience and best weights are not "
              "kept); an interrupted run starts again")
        backup_dir = None
    resumable = None
    if backup_dir is not None:
        build_optimizers(model)  # every optimizer's state is restored too (a GAN has two)
        resumable = _Resumable(Path(backup_dir), epochs_hook, backup_every_seconds)
        callbacks.append(resumable)
    early_stopping = None
    if early_stopping_patience:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=early_stopping_patience, restore_best_weights=True)
        callbacks.append(early_stopping)
    if not console.verbose():
        callbacks.append(_EpochBar(epochs, name))
    started = time.perf_counter()
    first_epoch = resumable.restore(model) if resumable is not None else 0  # after the schedule read its rates
    model.fit(batches.dataset, validation_data=validation_data, epochs=epochs, initial_epoch=first_epoch,
              steps_per_epoch=batches.steps, shuffle=False, callbacks=callbacks,
              verbose=2 if console.verbose() else 0)
    if isinstance(model, Generator):  # what Keras's fit does not do itself (a GAN's generator: its weights' average)
        model.finalize_weights()
    seconds = time.perf_counter() - started
    seconds += sum(entry["epoch_seconds"] for entry in epochs_hook.logs[:first_epoch])  # before the interruption
    keys = dict.fromkeys(key for entry in epochs_hook.logs for key in entry if key != "epoch_seconds")
    curves = {key: [entry[key] for entry in epochs_hook.logs if key in entry] for key in keys}
    if divergence.diverged_at is not None or _non_finite(curves):
        epoch, batch = divergence.diverged_at or (len(curves.get("loss", [])), -1)
        raise TrainingDiverged(f"the training loss became non-finite at epoch {epoch} (batch {batch}): "
                               f"lower the learning rate or check the data")
    stopped_early = early_stopping is not None and early_stopping.stopped_epoch > 0
    return FitResult(curves, seconds, stopped_early, tuple(entry["epoch_seconds"] for entry in epochs_hook.logs),
                     resumed_at_epoch=first_epoch)


def _non_finite(curves: dict[str, list[float]]) -> bool:
    return any(not math.isfinite(value) for values in curves.values() for value in values)
