"""Optimizers by name, with gradient clipping and a warmed-up weight EMA, and the learning-rate schedule."""

from __future__ import annotations

import math

import keras

from genlab.models.contract import training_optimizers
from genlab.training import keras_patches


def make_optimizer(name: str, learning_rate: float, ema_decay: float = 0.0, clip_norm: float | None = None,
                   **settings) -> keras.optimizers.Optimizer:
    """The Keras optimizer `name` at `learning_rate`, its gradients rescaled to a global norm of at most
    `clip_norm` when given; with `ema_decay` > 0 it also keeps a warmed-up exponential moving average
    of the weights (EmaWarmup), which replaces them when training ends. genlab's Adam and the warm-up
    where keras_patches applies; stock Keras elsewhere."""
    optimizer_class = type(keras.optimizers.get(name))
    patched = keras_patches.active()
    if optimizer_class is keras.optimizers.Adam and patched:
        optimizer_class = keras_patches.Adam
    if clip_norm is not None:
        settings["global_clipnorm"] = clip_norm
    if ema_decay > 0 and not patched:  # Keras's own moving average, without the warm-up
        settings |= {"use_ema": True, "ema_momentum": ema_decay}
    if ema_decay <= 0 or not patched:
        return optimizer_class(learning_rate=learning_rate, **settings)
    warmed = type(f"{optimizer_class.__name__}WithEmaWarmup", (keras_patches.EmaWarmup, optimizer_class), {})
    return warmed(learning_rate=learning_rate, use_ema=True, ema_momentum=ema_decay, **settings)


def schedule_factor(epoch: int, epochs: int, schedule: str, warmup_epochs: int = 0) -> float:
    """The learning rate of `epoch` (0-based) over the configured one: a linear warm-up over
    `warmup_epochs`, then constant, or a half cosine that falls to 0 over the remaining epochs."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    if schedule == "constant":
        return 1.0
    elapsed = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * elapsed))


class LearningRateSchedule(keras.callbacks.Callback):
    """Sets every optimizer's learning rate at the start of each epoch (a function of the epoch's number
    alone, so that a resumed run follows the same schedule)."""

    def __init__(self, model: keras.Model, epochs: int, schedule: str, warmup_epochs: int):
        super().__init__()
        self.epochs, self.schedule, self.warmup_epochs = epochs, schedule, warmup_epochs
        # the configured rates, read before training (a resumed backup restores a scheduled one)
        self.base = [float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                     for optimizer in training_optimizers(model)]

    def on_epoch_begin(self, epoch, logs=None):
        factor = schedule_factor(epoch, self.epochs, self.schedule, self.warmup_epochs)
        for optimizer, base in zip(training_optimizers(self.model), self.base):
            optimizer.learning_rate.assign(base * factor)

    def on_train_end(self, logs=None):  # the model keeps its configured rate, as saved with its settings
        for optimizer, base in zip(training_optimizers(self.model), self.base):
            optimizer.learning_rate.assign(base)
