"""genlab's departures from stock Keras, all here, each kept for what it measurably gives, each behind a
check of the installed Keras version.

Each is tested against stock Keras to the last bit (tests/test_training.py) on the Keras versions in
`VERIFIED`. On any other version (a Keras upgrade) `active()` is false and genlab uses stock Keras, with
one warning: keras.optimizers.Adam, Keras's own weight EMA (no warm-up), Keras's evaluate after every
epoch. `GENLAB_KERAS_PATCHES=0` chooses stock Keras too (benchmarks/keras_patches.py measures both).

- `Adam` (reads the private `_momentums`, `_velocities`, `_velocity_hats` and `_get_variable_index`):
  Keras's update computes the bias-corrected step size again for every variable, about half of its graph
  operations; this computes it once per step. Measured on the digits: the flow's training 21.6 s -> 20.2-
  20.5 s, the GAN's 15.9-16.4 s -> 14.8 s (benchmarks/README.md, issue 16), the same weights bit for bit.
- `EmaWarmup` (overrides the private `_update_model_variables_moving_average`): not a speed-up but better
  samples for short trainings: Keras's EMA has no warm-up, and with decay 0.999 after 550 steps the
  averaged weights are still 58% the initial ones (DDPM's noise on MNIST, issue 12).
- `Validation` (public methods only, but it stands in for Keras's evaluate and must equal it): the
  validation pass after every epoch in one traced call; Keras's evaluate cost a small model 10-15 ms an
  epoch around it: the GAN's training 18.1 s -> 15.5 s, the VAE's 13.4 s -> 11.4 s (issue 16).

Together, measured side by side with stock Keras (benchmarks/keras_patches.py, 2026-12-04): the digits
GAN's training 9.7 s against 21.2 s, the flow's 9.2 s against 12.0 s, the VAE's 8.1 s against 9.3 s, with
the same final losses to the last digit. Measured and left out: a traced reset and read of the training
metrics around every epoch (0.4 ms an epoch saved), and a fused Adam kernel (other weights: not bit for bit).
"""

from __future__ import annotations

import math
import os
import sys

import keras
import numpy as np

VERIFIED = ("3.15",)  # Keras versions (major.minor) these were checked on, to the last bit
SWITCH_ENV = "GENLAB_KERAS_PATCHES"  # "0": stock Keras
_warned: list[str] = []


def active() -> bool:
    """Whether genlab's departures apply: the installed Keras is one they were checked on, and they are not
    switched off; otherwise stock Keras runs (said once per process where it is the Keras version)."""
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    version = ".".join(keras.__version__.split(".")[:2])
    if version in VERIFIED:
        return True
    if not _warned:
        _warned.append(version)
        print(f"genlab: Keras {keras.__version__} is not one genlab's Keras patches were checked on "
              f"({', '.join(VERIFIED)}): stock Keras is used (its Adam, its weight EMA without a warm-up, its "
              f"evaluate); see genlab/training/keras_patches.py", file=sys.stderr)
    return False


class EmaWarmup:
    """Keras's weight EMA with a warm-up, mixed into an optimizer class: the decay at step t is
    min(ema_momentum, (1 + t) / (10 + t)), as in TensorFlow's ExponentialMovingAverage with num_updates.
    Without it, a decay of 0.999 after 550 steps still keeps 0.999^550 = 58% of the initial weights, so a
    model trained for few steps samples with weights that are mostly noise."""

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        step = keras.ops.cast(self.iterations, "float32")
        momentum = keras.ops.minimum(self.ema_momentum, (1.0 + step) / (10.0 + step))
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                average.assign(momentum * average + (1.0 - momentum) * keras.ops.cast(variable, average.dtype))


class Adam(keras.optimizers.Adam):
    """Keras's Adam, its arithmetic unchanged, with the step's scalars computed once per step and dtype.

    Keras's `update_step` computes the bias-corrected step size, lr * sqrt(1 - beta_2^t) / (1 - beta_1^t),
    for every variable again: about ten of its twenty graph operations per variable, each traced one by
    one and executed at every step. Small networks are dispatch-bound, so that is time: the same value,
    once (per device under a distribution strategy), gives the same weights bit for bit."""

    def apply(self, grads, trainable_variables=None):
        self._step_scalars = {}  # (dtype, device) -> step size, for this step's updates only
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = None  # an update_step outside apply computes its own

    def _step_size(self, variable, learning_rate):
        from keras import ops

        key = (variable.dtype, getattr(variable, "device", None))
        scalars = getattr(self, "_step_scalars", None)
        if scalars is not None and key in scalars:
            return scalars[key]
        lr = ops.cast(learning_rate, variable.dtype)  # as Keras's update_step computes it
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        if scalars is not None:
            scalars[key] = alpha
        return alpha

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        gradient = ops.cast(gradient, variable.dtype)
        alpha = self._step_size(variable, learning_rate)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[self._get_variable_index(variable)]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon)))


class Validation(keras.callbacks.Callback):
    """The validation split's `val_<metric>` values at the end of every epoch, the first callback to see
    the epoch's logs: what Keras's fit(validation_data=...) computes (the metrics reset, the test step
    over the batches in order, the metrics' results) in one call of one traced function.

    Keras's evaluate does the same arithmetic in a Python loop around it: a new iterator, the callbacks'
    test hooks, and each metric reset and read by eager operations, one at a time. That costs a small
    model 10-15 ms an epoch on the 2-core machine, more than the pass itself (benchmarks/README.md).
    Only on one device without XLA (`applies`); elsewhere fit passes the split to Keras."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        super().__init__()
        self.split, self.batch_size, self.function = (x, y), batch_size, None

    @staticmethod
    def applies(model: keras.Model) -> bool:
        import tensorflow as tf

        one_device = not tf.distribute.has_strategy() and model.distribute_strategy is tf.distribute.get_strategy()
        return one_device and not model.jit_compile and active()

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        model, size = self.model, self.batch_size
        x, y = (tf.constant(values) for values in self.split)
        steps = math.ceil(len(self.split[0]) / size)
        reported = []  # the names a test step returns, seen when the function is traced

        @tf.function
        def validate():
            for metric in model.metrics:
                metric.reset_state()
            for step in tf.range(steps):  # a loop in the graph: one test step traced, whatever the split's size
                reported[:] = model.test_step((x[step * size:(step + 1) * size], y[step * size:(step + 1) * size]))
            results = model.get_metrics_result()
            if set(reported) != set(results):  # Keras's evaluate would return the last step's values instead
                raise TypeError(f"{type(model).__name__}.test_step returns {sorted(reported)}, not its metrics' "
                                f"results {sorted(results)}")
            return results

        self.function = validate

    def on_epoch_end(self, epoch, logs=None):
        logs.update({f"val_{name}": float(value) for name, value in sorted(self.function().items())})  # as evaluate
