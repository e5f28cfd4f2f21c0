"""The RealNVP flow (Dinh et al. 2017) on tiny images: invertibility and the exact log-determinant."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from genlab.config.params import FlowParams  # noqa: E402
from genlab.models.flow import checkerboard  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402


def config(**overrides) -> FlowParams:
    settings = dict(family="flow", num_couplings=4, hidden_units=(16,), learning_rate=0.005, batch_size=32,
                    epochs=3, seed=0, num_levels=17)
    return FlowParams(**(settings | overrides))


def randomised(model, scale: float = 0.3) -> keras.Model:
    """Give every coupling non-zero scales and shifts, so that the checks are not of the identity."""
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:128] / 16.0).astype(np.float32)


def test_checkerboards_alternate():
    even, odd = checkerboard((2, 3), 0), checkerboard((2, 3), 1)
    np.testing.assert_array_equal(even, [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(even + odd, np.ones(6))


def test_flow_inverts(images):
    model = randomised(build_model(config(), (8, 8)))
    x = np.random.default_rng(1).normal(size=(16, 64)).astype(np.float32)
    z, _ = model.forward(x)
    assert np.abs(np.asarray(z) - x).max() > 0.1  # the flow moves the points
    np.testing.assert_allclose(np.asarray(model.inverse(z)), x, atol=1e-4)


def log_det_and_jacobian(model, dims: int):
    """The flow's log-determinant at a random point and the log |det| of its Jacobian there (autodiff)."""
    x = tf.constant(np.random.default_rng(2).normal(size=(1, dims)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z, log_det = model.forward(x)
    jacobian = tape.batch_jacobian(z, x)[0].numpy().astype(np.float64)  # (dims, dims)
    return x, float(log_det[0]), np.linalg.slogdet(jacobian)[1]


def test_log_determinant_matches_a_numerical_jacobian():
    model = randomised(build_model(config(num_couplings=3, hidden_units=(8,)), (2, 2)))
    x, log_det, exact = log_det_and_jacobian(model, 4)
    assert log_det == pytest.approx(exact, abs=1e-4)
    step = 1e-3  # and by finite differences
    numeric = np.stack([(np.asarray(model.forward(x + step * np.eye(4)[i])[0]) -
                         np.asarray(model.forward(x - step * np.eye(4)[i])[0]))[0] / (2 * step) for i in range(4)], 1)
    assert log_det == pytest.approx(np.linalg.slogdet(numeric)[1], abs=1e-2)


def test_bits_per_dim_of_an_untrained_flow_is_the_uniform_baseline_or_worse(images):
    model = build_model(config(), (8, 8))  # zero-initialised couplings: the identity flow
    bits = float(np.mean(model.bits_per_dim(images)))
    assert bits > math.log2(17) - 0.5


def test_training_is_finite_and_nll_falls(images):
    devices.set_seed(0)
    model = build_model(config(), (8, 8))
    result = fit.fit(model, images, images[:32], epochs=6, batch_size=32)
    assert all(np.isfinite(result.history["loss"]))
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_samples_are_images_deterministic_and_survive_save_load(images, tmp_path):
    devices.set_seed(0)
    model = build_model(config(), (8, 8))
    fit.fit(model, images, images[:32], epochs=2, batch_size=32)
    samples = model.sample(12, seed=4)
    assert samples.shape == (12, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(12, seed=4))
    assert not np.array_equal(model.sample(12, seed=4, temperature=0.3), samples)
    save_model(model, model.config, (8, 8), tmp_path)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.sample(12, seed=4), samples)
    results = model.family_metrics(images[:32], np.zeros(32, int))
    assert results["test_nll_nats"] == pytest.approx(results["test_nll_bits_per_dim"] * 64 * math.log(2))


# --- RealNVP's multi-scale architecture (conv): squeeze, channel masks, split -------------------------

from genlab.models.flow import SQUEEZE, Split, channel_mask, squeeze, unsqueeze  # noqa: E402


def conv_config(**overrides) -> FlowParams:
    return config(network="conv", conv_filters=(4,), num_couplings=2, num_scales=1, num_levels=256) \
        .model_copy(update=overrides)


def test_squeeze_stacks_each_two_by_two_block_as_channels():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    squeezed = np.asarray(squeeze(x))
    assert squeezed.shape == (1, 2, 2, 4)
    np.testing.assert_array_equal(squeezed[0, 0, 0], [0, 1, 4, 5])  # the top-left block, row by row
    np.testing.assert_array_equal(squeezed[0, 1, 1], [10, 11, 14, 15])
    np.testing.assert_array_equal(np.asarray(unsqueeze(squeezed)), x)


def test_channel_masks_keep_one_half_of_the_channels():
    first, second = channel_mask((2, 2, 4), 0), channel_mask((2, 2, 4), 1)
    np.testing.assert_array_equal(first[0, 0], [1, 1, 0, 0])
    np.testing.assert_array_equal(first + second, np.ones((2, 2, 4)))
    assert checkerboard((2, 2, 3), 0)[:, :, 2].tolist() == [[1, 0], [0, 1]]  # the board on every channel


def test_multi_scale_flow_has_the_papers_steps():
    model = build_model(conv_config(num_scales=2), (8, 8))
    kinds = ["split" if isinstance(step, Split) else step if step == SQUEEZE else "coupling" for step in model.steps]
    group = ["coupling"] * 2
    assert kinds == [*group, SQUEEZE, *group, "split", *group, SQUEEZE, *group, "split", *group]
    # 8x8x1 -> (squeeze) 4x4x4, split to 4x4x2 -> (squeeze) 2x2x8, split to 2x2x4: masks follow the shapes
    assert [coupling.mask.shape for coupling in model.couplings] == [(8, 8, 1)] * 2 + [(4, 4, 4)] * 2 + \
        [(4, 4, 2)] * 2 + [(2, 2, 8)] * 2 + [(2, 2, 4)] * 2
    # the coupling networks widen by 2 at every coarser scale
    widths = [coupling.network.layers[0].filters for coupling in model.couplings]
    assert widths == [4, 4, 8, 8, 8, 8, 16, 16, 16, 16]


def test_multi_scale_flow_inverts():
    # weights of 0.1: through ten couplings and two learned split priors, weights of 0.3 push z past 1e19
    model = randomised(build_model(conv_config(num_scales=2), (8, 8)), scale=0.1)
    x = np.random.default_rng(1).normal(size=(8, 64)).astype(np.float32)
    z, _ = model.forward(x)
    assert z.shape == (8, 64) and np.abs(np.asarray(z) - x).max() > 0.1
    np.testing.assert_allclose(np.asarray(model.inverse(z)), x, atol=1e-4)


@pytest.mark.parametrize("learned_split_prior", [True, False])
def test_multi_scale_log_determinant_matches_the_jacobian(learned_split_prior):
    model = randomised(build_model(conv_config(learned_split_prior=learned_split_prior), (4, 4)))
    _, log_det, exact = log_det_and_jacobian(model, 16)
    assert log_det == pytest.approx(exact, abs=1e-3)


def test_the_scales_learn_from_the_first_step(images):
    """s = scale_factor * tanh(raw) with raw starting at 0: a scale factor starting at 0 as well gave both
    a zero gradient, and the couplings stayed volume-preserving for ever."""
    devices.set_seed(0)
    model = build_model(config(), (8, 8))
    fit.fit(model, images, images[:32], epochs=1, batch_size=32)
    last = model.couplings[0].network.layers[-1].kernel.numpy()  # (units, 2D): scales, then shifts
    assert np.abs(last[:, :64]).max() > 1e-4
