"""Shared training helpers: the learning-rate schedule, gradient clipping, the validation pass."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from genlab.config.params import AutoencoderParams, GanParams, JudgeParams, VaeParams  # noqa: E402
from genlab.models import networks  # noqa: E402
from genlab.models.registry import build_model  # noqa: E402
from genlab.training import devices, fit, keras_patches, optimizers  # noqa: E402


def test_the_schedule_warms_up_then_follows_half_a_cosine():
    factors = [optimizers.schedule_factor(epoch, 10, "cosine", warmup_epochs=2) for epoch in range(10)]
    assert factors[:2] == pytest.approx([1 / 3, 2 / 3])
    assert factors[2] == 1.0 and factors[6] == pytest.approx(0.5) and factors[-1] < 0.05
    assert all(later < earlier for earlier, later in zip(factors[2:], factors[3:]))
    assert [optimizers.schedule_factor(epoch, 10, "constant", 1) for epoch in (0, 1, 9)] == [0.5, 1.0, 1.0]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:96] / 16.0).astype(np.float32)


def test_fit_sets_the_rate_of_every_optimizer_each_epoch_and_restores_it(images):
    seen = []
    gan = build_model(GanParams(family="gan", latent_dim=4, generator_units=(8,), discriminator_units=(8,),
                                learning_rate=0.01), (8, 8))
    record = lambda epoch, logs: seen.append([float(optimizer.learning_rate.numpy())  # noqa: E731
                                              for optimizer in gan.training_optimizers()])
    fit.fit(gan, images, images[:32], epochs=4, batch_size=32, on_epoch=record,
                 learning_rate_schedule="cosine", warmup_epochs=1)
    expected = [0.01 * optimizers.schedule_factor(epoch, 4, "cosine", 1) for epoch in range(4)]
    assert [rates[0] for rates in seen] == pytest.approx(expected)
    assert all(rates[0] == rates[1] for rates in seen)  # the discriminator's and the generator's
    assert float(gan.d_optimizer.learning_rate.numpy()) == pytest.approx(0.01)  # as configured, after training


def test_gradient_clipping_bounds_each_step():
    optimizer = optimizers.make_optimizer("sgd", 1.0, clip_norm=0.5)
    weight = keras.Variable(np.zeros(2, np.float32))
    optimizer.apply_gradients([(np.array([3.0, 4.0], np.float32), weight)])  # norm 5 -> 0.5
    np.testing.assert_allclose(weight.numpy(), [-0.3, -0.4], rtol=1e-5)
    assert math.isclose(float(np.linalg.norm(weight.numpy())), 0.5, rel_tol=1e-5)


def test_warmup_must_leave_epochs_to_train():
    with pytest.raises(ValueError, match=r"warmup_epochs \(5\) must be fewer than epochs \(5\)"):
        AutoencoderParams(family="autoencoder", epochs=5, warmup_epochs=5)


def test_a_run_with_a_schedule_resumed_after_a_kill_ends_with_the_same_weights(images, tmp_path):
    """The schedule is a function of the epoch alone: a resumed run follows it as if never stopped, and a
    backup's scheduled rate is not taken for the configured one."""
    config = AutoencoderParams(family="autoencoder", hidden_units=(16,), latent_dim=4, learning_rate=0.01,
                               batch_size=32, epochs=4, seed=0)
    options = dict(epochs=4, batch_size=32, seed=0, learning_rate_schedule="cosine", warmup_epochs=1)

    def fresh():
        devices.set_seed(0)
        return build_model(config, (8, 8))

    plain = fresh()
    fit.fit(plain, images, images[:32], **options)

    def killed(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        fit.fit(fresh(), images, images[:32], on_epoch=killed, backup_dir=tmp_path, **options)
    resumed = fresh()
    result = fit.fit(resumed, images, images[:32], backup_dir=tmp_path, **options)
    assert result.resumed_at_epoch == 2
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), resumed.get_weights()))
    assert float(resumed.optimizer.learning_rate.numpy()) == pytest.approx(0.01)


def _trained_history(config, images: np.ndarray, labels: np.ndarray | None, keras_validation: bool, monkeypatch):
    from genlab.evaluation import judge as judges

    with monkeypatch.context() as patched:
        if keras_validation:
            patched.setattr(keras_patches.Validation, "applies", staticmethod(lambda model: False))
        devices.set_seed(0)
        if labels is None:
            model = build_model(config, (8, 8))
            targets = None
        else:
            model = judges.build(config, (8, 8), 10).classifier
            targets = labels[:64], labels[64:]
        # 32 validation images in batches of 12: a short last batch, as the digits' split has
        return fit.fit(model, images[:64], images[64:], epochs=3, batch_size=12, targets=targets).history


@pytest.mark.parametrize("config", [
    AutoencoderParams(family="autoencoder", hidden_units=(8,), latent_dim=2),  # Keras's compiled loss
    VaeParams(family="vae", hidden_units=(8,), latent_dim=2),  # a test step that draws noise
    GanParams(family="gan", latent_dim=2, generator_units=(8,), discriminator_units=(8,)),  # four trackers
    JudgeParams(hidden_units=(8,), conv_filters=(), augment_shift=0, dropout=0.0),  # a compiled metric besides
], ids=["autoencoder", "vae", "gan", "judge"])
def test_the_validation_pass_gives_keras_s_evaluate_values_to_the_last_bit(config, images, monkeypatch):
    labels = np.arange(len(images)) % 10 if isinstance(config, JudgeParams) else None
    ours = _trained_history(config, images, labels, keras_validation=False, monkeypatch=monkeypatch)
    keras_own = _trained_history(config, images, labels, keras_validation=True, monkeypatch=monkeypatch)
    assert any(key.startswith("val_") for key in ours) and list(ours) == list(keras_own)
    assert ours == keras_own


def test_a_test_step_that_returns_other_values_than_its_metrics_is_refused(images):
    class Odd(networks.PerImageObjective):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def per_image_loss(self, batch, condition=None, training=False):
            return keras.ops.mean(keras.ops.square(self.dense(keras.ops.reshape(batch, (-1, 64)))), axis=-1)

        def test_step(self, data):
            super().test_step(data)
            return {"something_else": keras.ops.zeros(())}

    model = Odd()
    model.compile(optimizer="sgd")
    with pytest.raises(TypeError,
                       match=r"Odd.test_step returns \['something_else'\], not its metrics' results \['loss'\]"):
        fit.fit(model, images[:32], images[32:48], epochs=1, batch_size=16)


@pytest.mark.parametrize("settings", [{}, {"amsgrad": True}, {"beta_1": 0.5, "global_clipnorm": 1.0}],
                         ids=["default", "amsgrad", "gan-like"])
def test_genlab_s_adam_takes_keras_s_steps_to_the_last_bit(settings):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in ((5, 3), (3,), (2, 2))]
    gradients = [[rng.standard_normal(weight.shape).astype(np.float32) for weight in start] for _ in range(4)]

    def trained(optimizer_class, compiled: bool):
        weights = [keras.Variable(weight) for weight in start]
        optimizer = optimizer_class(learning_rate=0.01, **settings)
        optimizer.build(weights)

        def step(gradient):
            optimizer.apply(gradient, weights)

        step = tf.function(step) if compiled else step
        for index, gradient in enumerate(gradients):
            if index == 2:  # as the learning-rate schedule sets it between epochs
                optimizer.learning_rate.assign(0.005)
            step([tf.constant(value) for value in gradient])
        return [weight.numpy() for weight in weights]

    for compiled in (False, True):
        ours, keras_own = trained(keras_patches.Adam, compiled), trained(keras.optimizers.Adam, compiled)
        assert all(np.array_equal(a, b) for a, b in zip(ours, keras_own))
        assert not np.array_equal(ours[0], start[0])
    assert isinstance(optimizers.make_optimizer("adam", 0.01), keras_patches.Adam)
    assert isinstance(optimizers.make_optimizer("adam", 0.01, ema_decay=0.9), keras_patches.Adam)


@pytest.mark.parametrize("how", ["switched off", "another Keras"])
def test_stock_keras_where_the_patches_were_not_checked_or_are_switched_off(monkeypatch, capsys, how):
    if how == "switched off":
        monkeypatch.setenv(keras_patches.SWITCH_ENV, "0")
    else:
        monkeypatch.setattr(keras, "__version__", "3.99.0")
        monkeypatch.setattr(keras_patches, "_warned", [])
    assert not keras_patches.active()
    plain, averaged = optimizers.make_optimizer("adam", 0.01), optimizers.make_optimizer("adam", 0.01, ema_decay=0.9)
    assert type(plain) is keras.optimizers.Adam and type(averaged) is keras.optimizers.Adam
    assert averaged.use_ema and averaged.ema_momentum == pytest.approx(0.9)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    assert not keras_patches.Validation.applies(model)
    warning = capsys.readouterr().err
    assert ("Keras 3.99.0 is not one genlab's Keras patches were checked on" in warning) == (how == "another Keras")


def test_the_patches_apply_on_the_keras_they_were_checked_on():
    assert keras_patches.active() == (".".join(keras.__version__.split(".")[:2]) in keras_patches.VERIFIED)
    assert isinstance(optimizers.make_optimizer("adam", 0.01), keras_patches.Adam) == keras_patches.active()
