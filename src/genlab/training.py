"""Fitting a compiled model reproducibly: seeds, early stopping, a stop at the first non-finite loss.

Per-epoch hooks (`on_epoch`) let the train stage log to MLflow without this module
knowing about tracking.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np

from genlab import console, progress
from genlab.files import atomic_dir, read_json, write_json


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


def make_optimizer(name: str, learning_rate: float, ema_decay: float = 0.0, clip_norm: float | None = None,
                   **settings) -> keras.optimizers.Optimizer:
    """The Keras optimizer `name` at `learning_rate`, its gradients rescaled to a global norm of at most
    `clip_norm` when given; with `ema_decay` > 0 it also keeps a warmed-up exponential moving average
    of the weights (EmaWarmup), which replaces them when training ends."""
    optimizer_class = type(keras.optimizers.get(name))
    if optimizer_class is keras.optimizers.Adam:
        optimizer_class = Adam
    if clip_norm is not None:
        settings["global_clipnorm"] = clip_norm
    if ema_decay <= 0:
        return optimizer_class(learning_rate=learning_rate, **settings)
    warmed = type(f"{optimizer_class.__name__}WithEmaWarmup", (EmaWarmup, optimizer_class), {})
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


def model_optimizers(model: keras.Model) -> list:
    """The optimizers that train a model: its own, or a GAN's two."""
    return list(getattr(model, "game_optimizers", None) or [model.optimizer])


class _LearningRateSchedule(keras.callbacks.Callback):
    """Sets every optimizer's learning rate at the start of each epoch (a function of the epoch's number
    alone, so that a resumed run follows the same schedule)."""

    def __init__(self, model: keras.Model, epochs: int, schedule: str, warmup_epochs: int):
        super().__init__()
        self.epochs, self.schedule, self.warmup_epochs = epochs, schedule, warmup_epochs
        # the configured rates, read before training (a resumed backup restores a scheduled one)
        self.base = [float(keras.ops.convert_to_numpy(optimizer.learning_rate)) for optimizer in model_optimizers(model)]

    def on_epoch_begin(self, epoch, logs=None):
        factor = schedule_factor(epoch, self.epochs, self.schedule, self.warmup_epochs)
        for optimizer, base in zip(model_optimizers(self.model), self.base):
            optimizer.learning_rate.assign(base * factor)

    def on_train_end(self, logs=None):  # the model keeps its configured rate, as saved with its settings
        for optimizer, base in zip(model_optimizers(self.model), self.base):
            optimizer.learning_rate.assign(base)


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


def trainable_parameters(model: keras.Model) -> int:
    """The numbers training learns (the lecture's "this simple model has 200K parameters!"): weights and
    biases, not an autoencoder's fitted Gaussian, batch-normalisation statistics or an optimizer's state."""
    return int(sum(np.prod(variable.shape) for variable in model.trainable_variables))


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


def prior_noise(count: int, dims: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """`count` draws of z ~ N(0, T^2 I) in `dims` dimensions at temperature T, the same for the same seed:
    what the VAE, the GAN and the flow sample from."""
    return temperature * np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)


NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags: bfloat16 matrix products in hardware
CPUINFO = Path("/proc/cpuinfo")


def compute_precision(precision: str) -> str:
    """The Keras dtype policy of a network's arithmetic for a model's `precision` setting: "float32", or
    "mixed_bfloat16" (mixed precision: products in bfloat16, weights and their updates in float32). `auto` takes
    bfloat16 only where it pays: on a CPU that multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16 in
    /proc/cpuinfo) and with no GPU. There a compute-bound network trains faster (DDPM on the digits: 25-26 s
    against 34 s, back to back, the same FID); a CPU without those instructions emulates bfloat16 at about
    half float32's speed (benchmarks/README.md)."""
    if precision != "auto":
        return "mixed_bfloat16" if precision == "bfloat16" else "float32"
    import tensorflow as tf

    try:
        flags = set(CPUINFO.read_text().split())
    except OSError:  # not Linux: no way to tell here
        return "float32"
    native = any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)
    return "mixed_bfloat16" if native and not tf.config.list_physical_devices("GPU") else "float32"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers built inside take the Keras dtype policy `name` (compute_precision's)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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


class _Validation(keras.callbacks.Callback):
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
        return one_device and not model.jit_compile

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


class _Resumable(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (the weights with the optimizer's state, and the epoch, restored when
    training starts again) plus what it does not keep: the noise generators' state and the epochs'
    logs so far. All of it is written to a new folder that replaces the last backup in one rename, so
    a kill during a backup leaves the previous one whole (or, between two renames, none)."""

    def __init__(self, backup_dir: Path, epochs_hook: _EpochHook, every_seconds: float):
        self.state_dir = backup_dir / "state"
        super().__init__(str(self.state_dir), save_freq="epoch", delete_checkpoint=False, double_checkpoint=False)
        self.epochs_hook = epochs_hook
        self.first_epoch = 0
        self.every_seconds, self.saved_at = every_seconds, time.monotonic()

    def on_train_begin(self, logs=None):
        complete = all((self.state_dir / name).is_file()
                       for name in ("latest.weights.h5", "training_metadata.json", "epochs.json"))
        if not complete:  # none yet, or the rare kill between the two renames of a swap
            shutil.rmtree(self.state_dir, ignore_errors=True)
            return
        super().on_train_begin(logs)
        self.first_epoch = int(getattr(self.model, "_initial_epoch", None) or 0)  # set by the restore
        done = read_json(self.state_dir / "epochs.json")
        if len(done["epochs"]) != self.first_epoch:
            raise RuntimeError(f"{self.state_dir}: the backup is at epoch {self.first_epoch} but holds the logs "
                               f"of {len(done['epochs'])}; delete the folder to train from the start")
        self.epochs_hook.logs[:0] = done["epochs"]
        for variable, state in zip(_noise_states(self.model), done["noise"]):
            variable.assign(np.asarray(state, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        if not all(math.isfinite(float(value)) for value in (logs or {}).values()):
            return  # never back up a diverged state
        if time.monotonic() - self.saved_at < self.every_seconds:
            return  # a backup costs a write of the weights and optimizer state: not after every short epoch
        super().on_epoch_end(epoch, logs)  # sets the epoch and calls _save_model
        self.saved_at = time.monotonic()

    def _save_model(self):
        with atomic_dir(self.state_dir) as staging:
            self.model.save_weights(staging / "latest.weights.h5")
            write_json(staging / "training_metadata.json", {"epoch": self._current_epoch, "batch": 0})
            write_json(staging / "epochs.json", {  # the noise generators' state at the end of this epoch
                "epochs": self.epochs_hook.logs,
                "noise": [np.asarray(variable).tolist() for variable in _noise_states(self.model)]})


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
    validation_data = None  # the split goes to _Validation, or to Keras's evaluate where it does not apply
    if _Validation.applies(model):  # first: every other callback sees the epoch's validation values
        callbacks.insert(0, _Validation(x_val, y_val, batch_size))
    else:
        validation_data = validation_batches(x_val, y_val, batch_size)
    if learning_rate_schedule != "constant" or warmup_epochs:
        callbacks.append(_LearningRateSchedule(model, epochs, learning_rate_schedule, warmup_epochs))
    if backup_dir is not None and early_stopping_patience:
        print("note: no backup for a resume with early stopping (its patience and best weights are not "
              "kept); an interrupted run starts again")
        backup_dir = None
    resumable = None
    if backup_dir is not None:
        if hasattr(model, "build_optimizers"):  # a GAN's two optimizers: their state is restored too
            model.build_optimizers()
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
    model.fit(batches.dataset, validation_data=validation_data, epochs=epochs,
              steps_per_epoch=batches.steps, shuffle=False, callbacks=callbacks,
              verbose=2 if console.verbose() else 0)
    if hasattr(model, "finalize_weights"):  # a GAN's generator: its moving average, as fit does for one optimizer
        model.finalize_weights()
    seconds = time.perf_counter() - started
    resumed = resumable.first_epoch if resumable is not None else 0
    seconds += sum(entry["epoch_seconds"] for entry in epochs_hook.logs[:resumed])  # before the interruption
    keys = dict.fromkeys(key for entry in epochs_hook.logs for key in entry if key != "epoch_seconds")
    curves = {key: [entry[key] for entry in epochs_hook.logs if key in entry] for key in keys}
    if divergence.diverged_at is not None or _non_finite(curves):
        epoch, batch = divergence.diverged_at or (len(curves.get("loss", [])), -1)
        raise TrainingDiverged(f"the training loss became non-finite at epoch {epoch} (batch {batch}): "
                               f"lower the learning rate or check the data")
    stopped_early = early_stopping is not None and early_stopping.stopped_epoch > 0
    return FitResult(curves, seconds, stopped_early, tuple(entry["epoch_seconds"] for entry in epochs_hook.logs),
                     resumed_at_epoch=resumed)


def _non_finite(curves: dict[str, list[float]]) -> bool:
    return any(not math.isfinite(value) for values in curves.values() for value in values)
