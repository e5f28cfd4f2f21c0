"""Image-to-image restoration: degradations, PULSE's latent search, guided diffusion, and the measures."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from genlab.config.params import ParamsError, RestoreParams, parse_params
from genlab.evaluation import restoration
from genlab.models import diffusion


def digits_like(count: int = 6, shape=(8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, *shape)).astype(np.float32)


# --- the degradations -------------------------------------------------------------------------------


def test_downscale_is_average_pooling_on_a_hand_computed_image():
    image = np.array([[0, 2, 4, 4],
                      [2, 0, 4, 4],
                      [1, 1, 0, 0],
                      [1, 1, 0, 8]], dtype=np.float32)[None]
    assert np.array_equal(restoration.downscale(image, 2), [[[1.0, 4.0], [1.0, 2.0]]])
    assert np.array_equal(restoration.downscale(image, 4), [[[2.0]]])  # 32 / 16
    assert np.array_equal(restoration.upscale(np.array([[[1.0, 2.0]]]), 2), [[[1, 1, 2, 2], [1, 1, 2, 2]]])


def test_each_task_observes_the_image_and_the_original_is_consistent_with_it():
    images = digits_like()
    for task in restoration.TASKS:
        degraded = restoration.degrade(images, task, factor=2, block_fraction=0.5, noise_sigma=0.0, seed=3)
        assert degraded.shown.shape == images.shape
        assert np.allclose(degraded.consistency(images), 0.0, atol=1e-12), task
        assert np.all(degraded.consistency(np.clip(images + 0.3, 0.0, 1.0)) > 0.01), task
    upsample = restoration.degrade(images, "upsample", 2, 0.5, 0.2, 0)
    assert upsample.observed.shape == (6, 4, 4)
    assert np.allclose(restoration.downscale(upsample.shown, 2), upsample.observed)  # shown at full size
    half = restoration.degrade(images, "inpaint_lower_half", 2, 0.5, 0.2, 0)
    assert half.mask[:, :4].all() and not half.mask[:, 4:].any()
    block = restoration.degrade(images, "inpaint_block", 2, 0.5, 0.2, 0)
    assert np.all((1 - block.mask).reshape(6, -1).sum(axis=1) == 16)  # a 4x4 square in each image
    assert len({(1 - mask).argmax() for mask in block.mask}) > 1  # placed at random
    noisy = restoration.degrade(images, "denoise", 2, 0.5, 0.2, 0)
    assert abs(float(np.std(noisy.observed - images)) - 0.2) < 0.03
    again = restoration.degrade(images, "denoise", 2, 0.5, 0.2, 0)
    assert np.array_equal(noisy.observed, again.observed)  # the same for the same seed


def test_inpainting_counts_only_the_seen_pixels_and_keeps_them_exactly():
    images = digits_like()
    half = restoration.degrade(images, "inpaint_lower_half", 2, 0.5, 0.0, 0)
    changed_below = images.copy()
    changed_below[:, 4:] = 0.5
    assert np.allclose(half.consistency(changed_below), 0.0)  # the hidden half does not count
    guess = digits_like(seed=9)
    kept = half.keep_seen(guess)
    assert np.array_equal(kept[:, :4], images[:, :4]) and np.array_equal(kept[:, 4:], guess[:, 4:])


def test_a_stratified_subset_keeps_each_class_in_proportion_and_its_first_images():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    np.random.default_rng(0).shuffle(labels)
    chosen = restoration.stratified_subset(labels, 20)
    assert np.array_equal(np.bincount(labels[chosen]), [12, 6, 2])
    assert np.all(np.diff(chosen) > 0)
    for label in range(3):  # the first of each class is always among them (the figures' grid)
        assert np.flatnonzero(labels == label)[0] in chosen
    assert np.array_equal(restoration.stratified_subset(labels, None), np.arange(100))


# --- PULSE's latent search --------------------------------------------------------------------------


def test_the_latent_search_recovers_a_known_code_of_a_linear_decoder():
    import keras

    rng = np.random.default_rng(0)
    dim, shape = 4, (4, 4)
    weights = rng.standard_normal((dim, 16)).astype(np.float32)
    true_codes = rng.standard_normal((5, dim)).astype(np.float32)
    true_codes *= np.sqrt(dim) / np.linalg.norm(true_codes, axis=1, keepdims=True)  # on the search's sphere

    def decode(codes):
        return keras.ops.reshape(keras.ops.matmul(codes, weights), (-1, *shape))

    images = np.asarray(decode(true_codes))
    observed = restoration.Degradation("denoise", images, shape)  # the identity operator, no noise
    _, codes = restoration.latent_search(restoration.LatentSpace(decode, dim), observed, steps=300, restarts=3,
                                         learning_rate=0.05, seed=1)
    assert np.allclose(codes, true_codes, atol=1e-2)
    assert np.allclose(np.linalg.norm(codes, axis=1), np.sqrt(dim), atol=1e-4)  # kept on the sphere


# --- DDPM's guidance: pure functions beside the schedule ---------------------------------------------


def test_ilvr_replacement_leaves_the_reference_low_pass_part_exact():
    rng = np.random.default_rng(0)

    def low_pass(x):
        return restoration.upscale(restoration.downscale(x.reshape(-1, 8, 8), 2), 2).reshape(len(x), 64)

    x, reference = rng.standard_normal((2, 3, 64))
    replaced = diffusion.ilvr_replace(x, reference, low_pass)
    assert np.allclose(low_pass(replaced), low_pass(reference))
    assert np.allclose(replaced - low_pass(replaced), x - low_pass(x))  # its own detail stays


def test_replace_seen_and_sdedit_start():
    rng = np.random.default_rng(0)
    x, reference = rng.standard_normal((2, 3, 64))
    mask = (rng.uniform(size=(3, 64)) > 0.5).astype(np.float64)
    replaced = diffusion.replace_seen(x, reference, mask)
    assert np.array_equal(replaced[mask == 1], reference[mask == 1])
    assert np.array_equal(replaced[mask == 0], x[mask == 0])
    schedule = diffusion.noise_schedule("cosine", 200)
    level = np.sqrt((1 - schedule.alphas_bar) / schedule.alphas_bar)
    t, start = diffusion.sdedit_start(np.zeros((3, 64)), 0.4, schedule, np.ones((3, 64)))
    assert level[t] >= 0.4 > level[t - 1]  # the first step noisier than the image
    alpha_bar = schedule.alphas_bar[t]  # x_t's noise: sqrt(alpha_bar) * 0.4 from the image, topped up to 1 - alpha_bar
    assert np.allclose(start ** 2 + alpha_bar * 0.4 ** 2, 1 - alpha_bar, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_ddpm():
    from genlab.config.params import DiffusionParams

    config = DiffusionParams(family="diffusion", num_timesteps=10, hidden_units=(16,), time_embedding_dim=8,
                             num_inference_steps=5)
    return diffusion.build(config, (8, 8))


def test_guided_diffusion_restores_every_task_and_inpainting_keeps_the_seen_pixels(tiny_ddpm):
    images = digits_like()
    for task in restoration.TASKS:
        degraded = restoration.degrade(images, task, 2, 0.5, 0.2, 0)
        for sampler in ("ddpm", "ddim"):
            restored = tiny_ddpm.guided_restore(degraded, seed=0, sampler=sampler)
            assert restored.shape == images.shape and restored.min() >= 0 and restored.max() <= 1, task
            if degraded.mask is not None:  # RePaint's last replacement is the seen pixels themselves
                assert np.allclose(restored[degraded.mask == 1], images[degraded.mask == 1], atol=1e-6), task
            again = tiny_ddpm.guided_restore(degraded, seed=0, sampler=sampler)
            assert np.array_equal(restored, again), task  # the same for the same seed


# --- the measures -----------------------------------------------------------------------------------


def test_psnr_and_ssim_are_scikit_images_on_a_known_pair():
    original = np.zeros((1, 8, 8))
    original[0, 2:6, 2:6] = 1.0
    restored = original + 0.1  # MSE 0.01: PSNR 20 dB exactly
    found = restoration.fidelity(original, restored)
    assert found["psnr"][0] == pytest.approx(20.0)
    assert found["psnr"][0] == pytest.approx(peak_signal_noise_ratio(original[0], restored[0], data_range=1.0))
    assert found["ssim"][0] == pytest.approx(structural_similarity(original[0], restored[0], data_range=1.0))
    assert restoration.fidelity(original, original)["ssim"][0] == pytest.approx(1.0)


def planted(erase_rare: bool, seed: int = 0):
    """1000 test images of 10 classes; class 8 is 1% of the training data, the others 11% each. Every class
    is restored with 95% of its identity kept and errors spread evenly, except, if planted, class 8, whose
    restorations come back as a 3 (a majority class) half of the time."""
    rng = np.random.default_rng(seed)
    shares = np.full(10, 0.11)
    shares[8] = 0.01
    labels = np.repeat(np.arange(10), 100)
    restored = labels.copy()
    for index in range(len(labels)):
        if labels[index] == 8 and erase_rare and rng.uniform() < 0.5:
            restored[index] = 3
        elif rng.uniform() < 0.05:
            restored[index] = rng.choice([label for label in range(10) if label != labels[index]])
    return labels, restored, shares


def test_the_erasure_statistic_finds_a_planted_rare_class_erasure_and_no_erasure_without_one():
    labels, restored, shares = planted(erase_rare=True)
    found = restoration.erasure(labels, restored, np.ones(len(labels), bool), shares, permutations=1000, seed=0)
    assert found["rarest_class"] == 8
    assert found["rarest_class_kept"] < 0.65 and found["other_classes_kept"] > 0.93  # 0.475 expected of 100
    assert found["rarest_class_gap"] > 0.3
    assert found["kept_share_correlation"] > 0.9
    # one rare class: a permutation matches it when it gives class 8 the small share, 1 in 10
    assert found["kept_share_correlation_chance"] < 0.15
    assert found["erased_to"]["8"]["to"] == 3 and found["erased_to"]["8"]["share_of_errors"] > 0.8
    # every wrong label of an 8 is a more common class, by chance as much as by erasure: the gap tells them apart
    assert found["toward_majority"] == pytest.approx(found["toward_majority_chance"])

    labels, restored, shares = planted(erase_rare=False)
    found = restoration.erasure(labels, restored, np.ones(len(labels), bool), shares, permutations=1000, seed=0)
    assert abs(found["rarest_class_gap"]) < 0.06
    assert abs(found["toward_majority"] - found["toward_majority_chance"]) < 0.15


def test_a_graded_erasure_is_far_beyond_its_permutation_chance():
    shares = np.linspace(0.02, 0.18, 10)
    labels = np.repeat(np.arange(10), 100)
    restored = labels.copy()
    for label in range(10):  # kept from 55% (the rarest) to 100% (the most common)
        lost = np.flatnonzero(labels == label)[:45 - 5 * label]
        restored[lost] = 9 if label != 9 else 8
    found = restoration.erasure(labels, restored, np.ones(1000, bool), shares, permutations=2000, seed=0)
    assert found["kept_share_correlation"] > 0.99 and found["kept_share_slope"] == pytest.approx(2.8125, rel=1e-3)
    assert found["kept_share_correlation_chance"] < 0.01
    assert found["toward_majority"] == 1.0 and found["toward_majority_chance"] < 0.75  # all to the most common


def test_identity_kept_does_not_count_the_judges_own_mistakes():
    labels = np.repeat(np.arange(3), 10)
    original_labels = labels.copy()
    original_labels[20:25] = 0  # the judge misses half of the 2s even undegraded
    restored_labels = original_labels.copy()
    restored_labels[0:2] = 1  # the model erases two 0s
    found = restoration.identity(labels, original_labels, restored_labels, 3)
    assert found["judge_accuracy"] == pytest.approx(25 / 30)
    assert found["per_class"]["2"]["kept"] == 1.0  # the five 2s the judge recognises all come back as 2s
    assert found["per_class"]["2"]["raw_kept"] == 0.5
    assert found["worst_class"] == 0 and found["worst_class_kept"] == pytest.approx(0.8)
    assert found["identity_kept"] == pytest.approx(23 / 25)


def test_restore_params_are_checked():
    assert RestoreParams().factor_for((8, 8)) == 2 and RestoreParams().factor_for((28, 28)) == 4
    assert RestoreParams(upsample_factor=3).image_problem((8, 8)).startswith("upsample_factor: 3 must divide")
    for bad, key in (({"tasks": ["upsample", "colourise"]}, "restore.tasks"), ({"tasks": []}, "restore.tasks"),
                     ({"tasks": ["denoise", "denoise"]}, "restore"), ({"upsample_factor": 3}, "restore"),
                     ({"noise_sigma": -1}, "restore.noise_sigma"), ({"search_step": 5}, "restore")):
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            parse_params({"data": {"source": "digits"}, "restore": bad,
                          "models": {"m": {"family": "autoencoder", "latent_dim": 2}}})


def test_only_the_evaluate_stages_read_the_restore_settings():
    """Changing `restore:` reruns the evaluations and compare, never a training (dvc.yaml's params lists)."""
    import yaml
    from pipeline_project import PROJECT

    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, stage in stages.items()
               if any(str(entry).split(".")[0] == "restore" for entry in (stage.get("do", stage).get("params") or []))}
    assert readers == {"evaluate", "evaluate_prior"}  # a model's and a prior's over codes
    for reader in readers:
        assert "--restore reports/restore/${key}.json" in stages[reader]["do"]["cmd"]
    assert "reports/restore" in stages["compare"]["deps"]


def test_the_uninformative_observation_is_each_images_mean_and_a_few_pixels_on_request():
    images = digits_like()
    one = restoration.degrade(images, "uninformative", 2, 0.5, 0.2, 0)
    assert one.observed.shape == (6, 1, 1) and np.allclose(one.observed[:, 0, 0], images.mean(axis=(1, 2)))
    assert np.allclose(one.shown, images.mean(axis=(1, 2))[:, None, None])  # a flat image of its mean
    assert np.allclose(one.consistency(images), 0.0, atol=1e-12) and np.all(one.consistency(images * 0.5) > 0.01)
    two = restoration.degrade(images, "uninformative", 2, 0.5, 0.2, 0, uninformative_pixels=2)
    assert two.observed.shape == (6, 2, 2) and np.allclose(two.observed, restoration.downscale(images, 4))
    assert RestoreParams(uninformative_pixels=3).image_problem((8, 8)).startswith("uninformative_pixels: 3")
    assert RestoreParams(uninformative_pixels=3, tasks=["denoise"]).image_problem((8, 8)) is None


def test_a_searchable_model_restores_by_search_and_by_posterior_sampling_and_the_probe_is_no_restoration():
    from genlab.config.params import GanParams
    from genlab.models import gan

    model = gan.build(GanParams(family="gan", latent_dim=4, generator_units=(8,), discriminator_units=(8,)), (8, 8))
    settings = RestoreParams(search_steps=3, search_restarts=1, posterior_steps=4)
    found = restoration.methods(model, settings)
    assert set(found) == {"search", "posterior"}
    degradations = [restoration.degrade(digits_like(), task, 2, 0.5, 0.2, 0) for task in ("upsample", "uninformative")]
    for (images, seconds) in found["posterior"](degradations):
        assert images.shape == (6, 8, 8) and 0 <= images.min() and images.max() <= 1 and seconds > 0
    assert set(restoration.methods(model, settings.model_copy(update={"posterior_steps": 0}))) == {"search"}
    scores = {"psnr": 20.0, "ssim": 0.5, "consistency": 0.0, "identity_kept": 0.9, "worst_class_kept": 0.8,
              "rarest_class_gap": 0.0, "rarest_class_gap_noise": 0.1, "toward_majority": 0.5, "seconds_per_1000": 1.0}
    summary = restoration.summary({"upsample": {"search": scores},
                                   "uninformative": {"search": scores | {"psnr": 5.0, "identity_kept": 0.1}}})
    assert summary["psnr"] == 20.0 and summary["identity_kept"] == 0.9  # the probe is not averaged in


def test_posterior_sampling_that_diverges_says_so():
    import keras

    def decode(codes):  # a steep decoder: the step size is far too large for it
        return keras.ops.reshape(1e4 * keras.ops.sum(codes, axis=-1, keepdims=True) ** 3, (-1, 1, 1))

    observed = restoration.Degradation("denoise", np.ones((3, 1, 1), np.float32), (1, 1))
    with pytest.raises(FloatingPointError, match="posterior_step_size"):
        restoration.latent_posterior(restoration.LatentSpace(decode, 2), observed, steps=50, step_size=100.0,
                                     observation_sigma=0.05, temperature=1.0, seed=0)
