"""Training under tf.distribute.MirroredStrategy: the code path that runs on several GPUs.

Every family trains under `train.distribute: mirrored` on the CPU (one replica), samples and
survives a save/load round trip. The multi-replica arithmetic is checked on two logical CPU
devices in a subprocess (TensorFlow fixes its devices at start): one SGD step of a custom
train_step on two replicas gives the same weights as on one device, which holds only if each
replica's loss is its share (genlab.training.fit.replica_share) of the batch's mean.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline_project import TINY_NETWORKS  # noqa: E402

from genlab.config.params import FAMILY_PARAMS  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:96] / 16.0).astype(np.float32)


def test_strategies_by_setting():
    import tensorflow as tf

    assert isinstance(devices.distribution_strategy("mirrored"), tf.distribute.MirroredStrategy)
    assert devices.distribution_strategy("mirrored").num_replicas_in_sync == 1  # the CPU, no GPU here
    if not tf.config.list_logical_devices("GPU"):
        assert not isinstance(devices.distribution_strategy("auto"), tf.distribute.MirroredStrategy)
    assert not isinstance(devices.distribution_strategy("none"), tf.distribute.MirroredStrategy)


@pytest.mark.parametrize("family", sorted(TINY_NETWORKS))
def test_every_family_trains_samples_and_saves_under_mirrored_strategy(family, digits, tmp_path):
    config = FAMILY_PARAMS[family](family=family, batch_size=32, epochs=2, seed=0, **TINY_NETWORKS[family])
    devices.set_seed(0)
    strategy = devices.distribution_strategy("mirrored")
    with strategy.scope():
        model = build_model(config, (8, 8))
    result = fit.fit(model, digits, digits[:32], epochs=2, batch_size=32)
    assert all(np.isfinite(value) for values in result.history.values() for value in values)
    samples = model.sample(4, seed=1)
    assert samples.shape == (4, 8, 8) and np.all(np.isfinite(samples))
    save_model(model, config, (8, 8), tmp_path)
    reloaded, _ = load_model(tmp_path)
    np.testing.assert_allclose(reloaded.sample(4, seed=1), samples, atol=1e-5)


TWO_REPLICAS = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from genlab.models.networks import PerImageObjective

    class Rebuild(PerImageObjective):  # a deterministic per-image loss through the shared train_step
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, images):
            return self.dense(images)

        def per_image_loss(self, images, condition, training):
            return keras.ops.mean((self.dense(images) - images[:, :4]) ** 2, axis=1)

    def one_step(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = Rebuild()
            model.compile(optimizer=keras.optimizers.SGD(0.5))
            model(np.zeros((1, 6), np.float32))
        images = np.random.default_rng(0).random((8, 6)).astype(np.float32)
        model.fit(images, epochs=1, batch_size=8, shuffle=False, verbose=0)
        return model.dense.kernel.numpy(), strategy.num_replicas_in_sync

    single, one = one_step(tf.distribute.get_strategy())
    mirrored, two = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert (one, two) == (1, 2), (one, two)
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)
    print("same weights on", two, "replicas")
""")


def test_two_replicas_take_the_same_step_as_one_device():
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same weights on 2 replicas" in done.stdout
