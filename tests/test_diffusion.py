"""DDPM (Ho, Jain and Abbeel 2020) on tiny 8x8 data: the schedule against closed forms, two-step runs."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from genlab.config.params import DiffusionParams, ParamsError, parse_params  # noqa: E402
from genlab.models.diffusion import ddim_step, ddpm_step, noise_schedule, predict_x0, q_sample  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.training import devices, fit, optimizers  # noqa: E402

SHAPE = (8, 8)


def config(**overrides) -> DiffusionParams:
    settings = dict(family="diffusion", num_timesteps=20, hidden_units=(32,), time_embedding_dim=8,
                    num_inference_steps=5, learning_rate=0.003, batch_size=32, epochs=3, seed=0, ema_decay=0.0)
    return DiffusionParams(**(settings | overrides))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:128] / 16.0).astype(np.float32)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_are_valid(kind):
    schedule = noise_schedule(kind, 100)
    assert schedule.betas.shape == (100,) and np.all((schedule.betas > 0) & (schedule.betas < 1))
    assert np.all(np.diff(schedule.alphas_bar) < 0)  # ever noisier
    np.testing.assert_allclose(schedule.alphas_bar, np.cumprod(1 - schedule.betas.astype(np.float64)), rtol=1e-5,
                               atol=1e-9)
    assert schedule.alphas_bar[-1] < 0.05  # x_T is nearly pure noise


def test_linear_schedule_matches_ho_et_al_at_1000_steps():
    schedule = noise_schedule("linear", 1000)
    assert schedule.betas[0] == pytest.approx(1e-4) and schedule.betas[-1] == pytest.approx(0.02)


def test_q_sample_has_the_closed_form_mean_and_variance():
    schedule = noise_schedule("linear", 50)
    rng = np.random.default_rng(0)
    x0 = np.array([[0.8, -0.3, 0.0]], dtype=np.float32).repeat(100_000, axis=0)
    t = np.full(len(x0), 30)
    x_t = np.asarray(q_sample(x0, t, rng.standard_normal(x0.shape).astype(np.float32), schedule))
    alpha_bar = schedule.alphas_bar[30]
    np.testing.assert_allclose(x_t.mean(axis=0), np.sqrt(alpha_bar) * x0[0], atol=0.01)
    np.testing.assert_allclose(x_t.var(axis=0), np.full(3, 1 - alpha_bar), rtol=0.02)


def test_steps_recover_the_image_when_the_noise_prediction_is_exact():
    schedule = noise_schedule("linear", 50)
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = 40
    x_t = np.asarray(q_sample(x0, np.full(4, t), noise, schedule))
    np.testing.assert_allclose(predict_x0(x_t, noise, t, schedule), x0, atol=1e-4)
    np.testing.assert_allclose(ddim_step(x_t, noise, t, -1, schedule), x0, atol=1e-4)
    # the ancestral step's mean is the posterior mean of q(x_{t-1} | x_t, x_0)
    alpha_bar, alpha_bar_prev, beta = schedule.alphas_bar[t], schedule.alphas_bar[t - 1], schedule.betas[t]
    posterior_mean = (np.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar) * x0
                      + np.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t)
    np.testing.assert_allclose(ddpm_step(x_t, noise, t, schedule, np.zeros_like(x0)), posterior_mean, atol=1e-4)


def test_training_gives_a_finite_loss_that_falls(images):
    devices.set_seed(0)
    model = build_model(config(), SHAPE)
    result = fit.fit(model, images, images[:32], epochs=8, batch_size=32)
    assert np.all(np.isfinite(result.history["loss"]))
    assert result.history["loss"][-1] < 0.8 * result.history["loss"][0]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_two_step_sampling_is_deterministic_and_in_range(images, sampler):
    devices.set_seed(0)
    model = build_model(config(num_timesteps=2, num_inference_steps=2), SHAPE)
    samples = model.sample(6, seed=3, sampler=sampler)
    assert samples.shape == (6, *SHAPE) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(6, seed=3, sampler=sampler))


def test_trajectory_and_save_load_round_trip(images, tmp_path):
    devices.set_seed(0)
    model = build_model(config(ema_decay=0.9), SHAPE)
    fit.fit(model, images, images[:32], epochs=2, batch_size=32)
    shown = model.family_images(images, np.zeros(len(images)))
    assert len(shown["trajectory.png"]) == 4 and shown["trajectory.png"]["sample 1"].shape[1:] == SHAPE
    save_model(model, model.config, SHAPE, tmp_path)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.sample(5, seed=2), model.sample(5, seed=2))
    found = model.family_metrics(images[:32], np.zeros(32, int))
    assert set(found) == {"test_noise_mse", "ddim_sampling_seconds_per_1000"}


def test_more_inference_steps_than_timesteps_is_refused():
    with pytest.raises(ParamsError, match="num_inference_steps \\(60\\) cannot exceed num_timesteps \\(50\\)"):
        parse_params({"data": {}, "models": {"d": {"family": "diffusion", "num_timesteps": 50,
                                                   "num_inference_steps": 60}}})


def test_the_weight_average_is_warmed_up():
    """Keras's EMA with decay 0.999 would keep 0.999^n of the initial weights after n steps; warmed up,
    step t averages with min(0.999, (1 + t) / (10 + t)), as TensorFlow's ExponentialMovingAverage does."""
    optimizer = optimizers.make_optimizer("sgd", 0.1, ema_decay=0.999)
    weight = keras.Variable(np.zeros(1, np.float32))
    optimizer.build([weight])
    expected = 0.0
    for step in range(30):
        optimizer.apply_gradients([(np.full(1, -1.0, np.float32), weight)])  # the weight grows by 0.1 per step
        momentum = 0.0 if step == 0 else min(0.999, (1 + step) / (10 + step))  # Keras: iterations before the step
        expected = momentum * expected + (1 - momentum) * 0.1 * (step + 1)
    average = float(optimizer._model_variables_moving_average[0].numpy()[0])
    assert average == pytest.approx(expected, rel=1e-5)
    assert 2.0 < average < 3.0 - 0.1  # far from the unwarmed 0.3 (Keras's plain EMA) and behind the weight (3.0)


def test_the_patched_unet_sees_patches_and_predicts_per_pixel_noise():
    model = build_model(config(network="conv", conv_filters=(8, 16), patch_size=2, num_timesteps=10,
                               num_inference_steps=2), (16, 16))
    convolutions = [layer for layer in model.network.layers if isinstance(layer, keras.layers.Conv2D)]
    assert min(layer.output.shape[1] for layer in convolutions) == 4  # 16 -> patches 8 -> middle 4
    assert max(layer.output.shape[1] for layer in convolutions) == 8  # no convolution at full resolution
    # a pixel's predicted noise comes from its own patch's channel: perturbing one pixel moves its patch first
    x = np.zeros((1, 256), np.float32)
    bumped = x.copy()
    bumped[0, 0] = 1.0
    change = np.abs(np.asarray(model.network([bumped, np.zeros(1, np.int32)]))
                    - np.asarray(model.network([x, np.zeros(1, np.int32)]))).reshape(16, 16)
    assert change[:2, :2].sum() > 0 and change.shape == (16, 16)


def test_patch_and_levels_must_divide_the_image():
    with pytest.raises(ParamsError, match=r"patches of 2 and 3 U-Net levels need image sides that are multiples "
                                          r"of 8, and 28x28 is not"):
        parse_params({"data": {"source": "mnist_sample"}, "models": {"d": {
            "family": "diffusion", "network": "conv", "conv_filters": [8, 16, 32], "patch_size": 2}}})
    parse_params({"data": {"source": "mnist_sample"}, "models": {"d": {
        "family": "diffusion", "network": "conv", "conv_filters": [8, 16], "patch_size": 2}}})  # 28 -> 14 -> 7


@pytest.mark.parametrize("network", [dict(), dict(network="conv", conv_filters=(8, 16), patch_size=2)])
def test_bfloat16_products_with_float32_weights_train_sample_and_reload(images, tmp_path, network):
    devices.set_seed(0)
    model = build_model(config(precision="bfloat16", **network), SHAPE)
    assert keras.config.dtype_policy().name == "float32"  # only the noise predictor was built in bfloat16
    hidden = [layer for layer in model.network.layers if layer.trainable_weights and layer.name != "eps"]
    assert {layer.dtype_policy.name for layer in hidden} == {"mixed_bfloat16"}
    assert model.network.get_layer("eps").dtype_policy.name == "float32"  # the output, as mixed precision advises
    assert {variable.dtype for variable in model.trainable_variables} == {"float32"}
    result = fit.fit(model, images, images[:32], epochs=6, batch_size=32)
    assert np.all(np.isfinite(result.history["loss"])) and result.history["loss"][-1] < result.history["loss"][0]
    samples = model.sample(4, seed=1)
    assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
    save_model(model, model.config, SHAPE, tmp_path)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.sample(4, seed=1), samples)


def test_auto_precision_takes_bfloat16_only_where_the_cpu_multiplies_it(tmp_path, monkeypatch):
    assert devices.compute_precision("float32") == "float32"
    assert devices.compute_precision("bfloat16") == "mixed_bfloat16"
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "CPUINFO", cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert devices.compute_precision("auto") == "float32"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert devices.compute_precision("auto") == "mixed_bfloat16"
    cpuinfo.unlink()  # not Linux
    assert devices.compute_precision("auto") == "float32"
    with pytest.raises(ParamsError, match="precision"):
        parse_params({"models": {"d": {"family": "diffusion", "precision": "float16"}}})
