"""The autoencoder family, the model registry and the fit loop, on tiny 8x8 data."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from genlab.config.params import FAMILY_PARAMS, AutoencoderParams  # noqa: E402
from genlab.models import networks  # noqa: E402
from genlab.models.registry import build_model, family_module, load_model, save_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402

SHAPE = (8, 8)


def config(**overrides) -> AutoencoderParams:
    settings = dict(family="autoencoder", hidden_units=(16,), latent_dim=4, hidden_activation="relu",
                    output_activation="sigmoid", loss="binary_crossentropy", optimizer="adam",
                    learning_rate=0.01, batch_size=16, epochs=3, seed=0)
    return AutoencoderParams(**(settings | overrides))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    strokes = (rng.random((64, *SHAPE)) > 0.6).astype(np.float32)
    return strokes * rng.uniform(0.5, 1.0, size=(64, 1, 1)).astype(np.float32)


def test_build_shapes_and_bottleneck():
    model = build_model(config(latent_dim=3, hidden_units=(20, 10)), SHAPE)
    batch = np.zeros((5, *SHAPE), dtype=np.float32)
    assert model.encode(batch).shape == (5, 3)
    out = model.reconstruct(batch)
    assert out.shape == (5, *SHAPE)
    assert np.all((out >= 0) & (out <= 1))  # sigmoid output
    dense_sizes = [layer.units for layer in model.encoder.layers + model.decoder.layers if hasattr(layer, "units")]
    assert dense_sizes == [20, 10, 3, 10, 20, 64]


def test_registry_rejects_unknown_family():
    class Fake:
        family = "vea"

    with pytest.raises(ValueError, match="valid families: .*autoencoder"):
        build_model(Fake(), SHAPE)
    assert all(family_module(family).build for family in FAMILY_PARAMS)  # every schema has its family file


def test_latent_not_smaller_than_image_is_rejected():
    with pytest.raises(ValueError, match="no bottleneck"):
        build_model(config(latent_dim=64), SHAPE)


@pytest.mark.parametrize("loss, activation",
                         [("mse", "linear"), ("mse", "sigmoid"), ("binary_crossentropy", "sigmoid")])
def test_training_step_is_finite_and_loss_falls(images, loss, activation):
    devices.set_seed(0)
    model = build_model(config(loss=loss, output_activation=activation), SHAPE)
    first = model.train_on_batch(images, images)
    assert np.isfinite(first)
    for _ in range(30):
        last = model.train_on_batch(images, images)
    assert last < 0.9 * first


def test_fit_records_history_and_calls_the_epoch_hook(images):
    devices.set_seed(0)
    model = build_model(config(epochs=4), SHAPE)
    seen = []
    result = fit.fit(model, images, images[:16], epochs=4, batch_size=16, on_epoch=lambda e, logs: seen.append(e))
    assert seen == [0, 1, 2, 3]
    assert set(result.history) == {"loss", "val_loss"} and len(result.history["loss"]) == 4
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_same_seed_gives_identical_weights(images):
    def trained():
        devices.set_seed(7)
        model = build_model(config(), SHAPE)
        fit.fit(model, images, images[:16], epochs=2, batch_size=16)
        return [w.copy() for w in model.get_weights()]

    for a, b in zip(trained(), trained()):
        np.testing.assert_array_equal(a, b)


def test_diverging_loss_raises(images):
    devices.set_seed(0)
    model = build_model(config(loss="mse", output_activation="linear", optimizer="sgd", learning_rate=1e12), SHAPE)
    with pytest.raises(fit.TrainingDiverged, match="non-finite at epoch 1"):
        fit.fit(model, images, images[:16], epochs=5, batch_size=16)


def test_early_stopping_stops(images):
    devices.set_seed(0)
    model = build_model(config(learning_rate=1e-9), SHAPE)  # nothing to learn: val loss never improves
    result = fit.fit(model, images, images[:16], epochs=50, batch_size=16, early_stopping_patience=2)
    assert result.stopped_early and len(result.history["loss"]) < 10


def test_save_load_round_trip_reproduces_outputs(images, tmp_path):
    devices.set_seed(0)
    cfg = config(hidden_units=(12,), latent_dim=5)
    model = build_model(cfg, SHAPE)
    fit.fit(model, images, images[:16], epochs=2, batch_size=16)
    save_model(model, cfg, SHAPE, tmp_path)
    loaded, loaded_config = load_model(tmp_path)
    assert loaded_config == cfg
    np.testing.assert_array_equal(loaded.reconstruct(images), model.reconstruct(images))


def test_losses_are_taken_over_whole_images():
    from genlab.models.autoencoder import pixel_loss

    rng = np.random.default_rng(1)
    target = rng.random((3, *SHAPE)).astype(np.float32)
    target /= target.reshape(3, -1).sum(axis=1)[:, None, None]  # each image a distribution over 64 pixels
    logits = rng.normal(size=(3, 64))
    predicted = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).reshape(3, *SHAPE).astype(np.float32)
    expected = -np.mean(np.sum(target.reshape(3, -1) * np.log(predicted.reshape(3, -1)), axis=1))
    got = float(keras.ops.mean(pixel_loss("categorical_crossentropy")(target, predicted)))
    assert got == pytest.approx(expected, rel=1e-5)
    mse = float(keras.ops.mean(pixel_loss("mse")(target, predicted)))
    assert mse == pytest.approx(np.mean((target - predicted) ** 2), rel=1e-5)


def test_the_lecture_study_at_784_pixels_has_about_200k_parameters():
    """784 -> 128 -> bottleneck -> 128 -> 784, as configs/mnist_sample.yaml builds it: "this simple model
    has 200K parameters!" (weights and biases; the fitted Gaussian of the codes is not trained)."""
    from pathlib import Path

    from genlab.config.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "configs" / "mnist_sample.yaml")
    counted = {name: networks.trainable_parameters(build_model(config, (28, 28)))
               for name, config in params.models.items() if config.family == "autoencoder"}
    assert counted["ae_sigmoid_bce"] == (784 * 128 + 128) + (128 * 64 + 64) + (64 * 128 + 128) + (128 * 784 + 784)
    assert counted == {"ae_first_choice": 218_192, "ae_linear_mse": 218_192, "ae_sigmoid_mse": 218_192,
                       "ae_sigmoid_bce": 218_192, "ae_sigmoid_bce_16": 205_856}
