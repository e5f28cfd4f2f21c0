"""Fitting a compiled model reproducibly: seeds, early stopping, a stop at the first non-finite loss.

Per-epoch hooks (`on_epoch`) let the train stage log to MLflow without this module
knowing about tracking.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no model output is written."""


class PerImageObjective(keras.Model):
    """A model trained by minimising the mean of one per-image loss.

    Subclasses define `per_image_loss(images, training) -> (B,)`. The flow (bits per
    dimension) and DDPM (noise MSE) are both this; the metric averages per image, so a
    short last batch weighs by its size.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        import tensorflow as tf

        images = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            per_image = self.per_image_loss(images, training=True)
            loss = replica_share(keras.ops.mean(per_image))
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        self.loss_tracker.update_state(per_image)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        self.loss_tracker.update_state(self.per_image_loss(images, training=False))
        return {"loss": self.loss_tracker.result()}


def distribution_strategy(setting: str = "auto"):
    """Where training runs: `auto` mirrors the model on every visible GPU when there is more than one
    (tf.distribute.MirroredStrategy: each replica takes a slice of the batch, gradients are summed across
    replicas), else TensorFlow's default one-device strategy; `mirrored` mirrors always (on a machine
    without GPUs: one replica on the CPU); `none` never. Build and compile the model in its scope()."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if setting == "mirrored" or (setting == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy(devices=None if gpus else ["/cpu:0"])
    return tf.distribute.get_strategy()


def replica_share(loss):
    """The part of a batch's mean loss that one replica differentiates: optimizers sum the replicas'
    gradients, so each replica's mean is divided by their number (a no-op on one device)."""
    import tensorflow as tf

    return loss / tf.distribute.get_strategy().num_replicas_in_sync


def predict_in_batches(network: keras.Model, inputs: np.ndarray, batch_size: int = 1024):
    """network(inputs) in inference mode, as NumPy, a batch at a time.

    A direct (eager) call: `Model.predict` builds a data pipeline per call, which costs more than
    a small network's forward pass (13x slower for 1000 8x8 samples, benchmarks/families.py), and
    `predict_on_batch` first traces a graph (0.2-0.5 s), which only a loop of many calls repays
    (the DDPM sampler's, see genlab.models.diffusion).
    """
    batches = [network(inputs[start:start + batch_size], training=False) for start in range(0, len(inputs), batch_size)]
    if isinstance(batches[0], (list, tuple)):  # several outputs, e.g. a VAE encoder's mean and log-variance
        return [np.concatenate([np.asarray(batch[index]) for batch in batches]) for index in range(len(batches[0]))]
    return np.concatenate([np.asarray(batch) for batch in batches])


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow once per stage, and make TF's CPU kernels deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class FitResult:
    history: dict[str, list[float]]  # metric -> one value per epoch
    seconds: float
    stopped_early: bool
    epoch_seconds: tuple[float, ...] = ()  # each epoch's wall time, validation included

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

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = (self.epoch + 1, batch)
            self.model.stop_training = True


class _EpochHook(keras.callbacks.Callback):
    """Times each epoch (validation included) and hands its finite logs, with `epoch_seconds`, to `on_epoch`."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None] | None):
        super().__init__()
        self.on_epoch = on_epoch
        self.seconds: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)
        logs = {key: float(value) for key, value in (logs or {}).items()}
        if self.on_epoch is not None and all(math.isfinite(value) for value in logs.values()):
            self.on_epoch(epoch, logs | {"epoch_seconds": self.seconds[-1]})


def fit(
    model: keras.Model, x_train: np.ndarray, x_val: np.ndarray, *, epochs: int, batch_size: int,
    early_stopping_patience: int | None = None, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    targets: tuple[np.ndarray, np.ndarray] | None = None,
) -> FitResult:
    """Train a model on the images, with `targets` (train, validation) for a classifier and the images
    themselves otherwise; raise TrainingDiverged on a non-finite loss."""
    divergence = _StopOnNonFinite()
    callbacks: list[keras.callbacks.Callback] = [divergence]
    early_stopping = None
    if early_stopping_patience:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=early_stopping_patience, restore_best_weights=True)
        callbacks.append(early_stopping)
    epochs_hook = _EpochHook(on_epoch)
    callbacks.append(epochs_hook)
    started = time.perf_counter()
    y_train, y_val = targets if targets is not None else (x_train, x_val)
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size,
                        shuffle=True, callbacks=callbacks, verbose=2)
    seconds = time.perf_counter() - started
    curves = {key: [float(value) for value in values] for key, values in history.history.items()}
    if divergence.diverged_at is not None or _non_finite(curves):
        epoch, batch = divergence.diverged_at or (len(curves.get("loss", [])), -1)
        raise TrainingDiverged(f"the training loss became non-finite at epoch {epoch} (batch {batch}): "
                               f"lower the learning rate or check the data")
    stopped_early = early_stopping is not None and early_stopping.stopped_epoch > 0
    return FitResult(curves, seconds, stopped_early, tuple(epochs_hook.seconds))


def _non_finite(curves: dict[str, list[float]]) -> bool:
    return any(not math.isfinite(value) for values in curves.values() for value in values)
