"""Where and how a network computes: the distribution strategy, each replica's share of a loss, the
arithmetic's precision (float32 or bfloat16 products) and the seeds that make a CPU run reproducible."""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras


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


def resolved_settings(config) -> dict[str, str]:
    """A model's settings as this machine resolves them: `precision: auto` as float32 or mixed_bfloat16."""
    if "precision" not in type(config).model_fields:
        return {}
    return {"precision_used": compute_precision(config.precision)}


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow once per stage, and make TF's CPU kernels deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
