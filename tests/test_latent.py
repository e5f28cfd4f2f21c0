"""Learned priors over an encoder's codes (genlab.models.latent): known answers on tiny shapes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pipeline_project import PROJECT

from genlab.config.params import PRIOR_PARAMS, ParamsError, parse_params
from genlab.data.splits import Split
from genlab.models.contract import Encoder, Generator, Searchable
from genlab.models.registry import build_model, load_model, save_model
from genlab.training import fit
from genlab.training.devices import set_seed

IMAGE_SHAPE = (8, 8)
ENCODER = dict(family="autoencoder", hidden_units=[16], latent_dim=2, learning_rate=0.01, epochs=2)
PRIORS = {
    "flow": dict(family="flow", num_couplings=6, hidden_units=[64, 64], temperature=1.0, learning_rate=0.003,
                 batch_size=128, epochs=60),
    "diffusion": dict(family="diffusion", hidden_units=[128, 128], num_timesteps=100, schedule="cosine",
                      sampler="ddim", num_inference_steps=50, time_embedding_dim=16, ema_decay=0.0,
                      learning_rate=0.002, learning_rate_schedule="cosine", batch_size=128, epochs=300),
    # slower, with the generator's weight average: at 1e-3 without it the game collapsed onto one mode
    "gan": dict(family="gan", latent_dim=2, generator_units=[64, 64], discriminator_units=[64, 64],
                temperature=1.0, learning_rate=0.0002, ema_decay=0.99, batch_size=64, epochs=300),
}


def prior_config(family: str, **changes):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["models"] = {"ae": ENCODER}
    params["priors"] = {"prior": PRIORS[family] | {"encoder": "ae"} | changes}
    params["search"] = None  # it searches a model of the project's
    return parse_params(params).priors["prior"]


def mixture(count: int, seed: int, labelled: bool = False):
    """A two-component Gaussian mixture in 2-D: 30% at (-2, 0), 70% at (2, 0), each with std 0.3 (and with
    `labelled`, each point's component: 1 on the right)."""
    rng = np.random.default_rng(seed)
    right = rng.random(count) < 0.7
    centres = np.where(right[:, None], [2.0, 0.0], [-2.0, 0.0])
    points = (centres + 0.3 * rng.standard_normal((count, 2))).astype(np.float32)
    return (points, right.astype(np.int64)) if labelled else points


@pytest.fixture(scope="module", params=sorted(PRIORS))
def fitted(request):
    """A latent model whose prior learned the mixture's codes (the standardisation left at 0 and 1)."""
    set_seed(0)
    model = build_model(prior_config(request.param), IMAGE_SHAPE)
    config = model.config
    fit.fit(model, mixture(2000, 0), mixture(400, 1), epochs=config.epochs, batch_size=config.batch_size, seed=0)
    return request.param, model


def test_a_prior_fitted_to_a_known_mixture_recovers_it(fitted):
    family, model = fitted
    codes = model.sample_codes(2000, seed=3)
    right = codes[:, 0] > 0
    assert right.mean() == pytest.approx(0.7, abs=0.06), family  # the mixture's weights
    for share_of, centre in ((right, 2.0), (~right, -2.0)):
        assert codes[share_of, 0].mean() == pytest.approx(centre, abs=0.25), family
        assert codes[share_of, 1].mean() == pytest.approx(0.0, abs=0.25), family
        assert 0.15 < codes[share_of].std(axis=0).max() < 0.6, family  # not collapsed, not the Gaussian's spread
    # a single Gaussian would put half of its mass between the modes; the prior puts almost none there
    assert np.mean(np.abs(codes[:, 0]) < 1.0) < 0.08, family


def test_decoding_a_code_from_the_prior_gives_the_decoders_output_for_it(fitted):
    _, model = fitted
    codes = model.sample_codes(7, seed=5)
    decoded = np.clip(model.encoder_model.decode(codes), 0, 1)
    np.testing.assert_array_equal(model.sample(7, seed=5), decoded)
    assert isinstance(model, Generator) and isinstance(model, Encoder) and isinstance(model, Searchable)


def test_the_search_space_is_the_priors_noise(fitted):
    """PULSE searches the prior's input: decoding a noise draw through the differentiable path gives the same
    images as the sampler for a flow, and codes from the learned distribution for either prior."""
    family, model = fitted
    space = model.latent_space()
    assert space.dim == 2
    noise = np.random.default_rng(0).standard_normal((256, 2)).astype(np.float32)
    codes = np.asarray(model.prior.from_noise(noise)) * np.asarray(model.code_scale) + np.asarray(model.code_mean)
    assert np.mean(np.abs(codes[:, 0]) < 1.0) < 0.1, family  # the search stays on the learned modes
    images = np.asarray(space.decode(noise))
    np.testing.assert_allclose(images, model.encoder_model.decode(codes), atol=1e-5)


def test_a_save_and_load_round_trip_reproduces_the_samples(fitted, tmp_path):
    _, model = fitted
    save_model(model, model.config, IMAGE_SHAPE, tmp_path)
    loaded, config = load_model(tmp_path)
    assert config == model.config and config.encoder_model == model.config.encoder_model
    np.testing.assert_array_equal(loaded.sample(9, seed=2), model.sample(9, seed=2))
    np.testing.assert_array_equal(loaded.code_mean, model.code_mean)


def test_training_data_are_the_standardised_codes_of_the_training_images():
    set_seed(0)
    model = build_model(prior_config("flow", epochs=2), IMAGE_SHAPE)
    images = np.random.default_rng(0).random((50, *IMAGE_SHAPE)).astype(np.float32)
    labels = np.arange(50) % 3
    (train, targets), (validation, _) = model.training_data(Split(images, labels), Split(images[:10], labels[:10]))
    np.testing.assert_array_equal(targets, train)  # unconditional: the codes are their own targets
    assert train.shape == (50, 2) and validation.shape == (10, 2)
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(validation, train[:10], atol=1e-6)


def test_only_the_prior_learns():
    set_seed(0)
    model = build_model(prior_config("diffusion", epochs=2), IMAGE_SHAPE)
    before = [weight.copy() for weight in model.encoder_model.get_weights()]
    fit.fit(model, mixture(200, 0), mixture(50, 1), epochs=2, batch_size=64, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.encoder_model.get_weights()))
    assert model.prior.count_params() == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert not model.encoder_model.trainable_weights


@pytest.mark.parametrize("change, message", [
    ({"encoder": "nope"}, "priors.prior.encoder: no model 'nope'"),
    ({"family": "vae"}, "'vae' cannot be a prior over codes; allowed: ['diffusion', 'flow', 'gan']"),
    ({"conv_filters": [8]}, "conv_filters: a setting of networks over images"),
    ({"network": "conv"}, "network: conv is for images"),
    ({"epochs": 0}, "priors.prior.epochs"),
])
def test_bad_prior_settings_name_the_key(change, message):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["priors"] = {"prior": PRIORS["flow"] | {"encoder": "ae_sigmoid_bce"} | change}
    with pytest.raises(ParamsError) as raised:
        parse_params(params)
    assert message in str(raised.value)


def test_a_prior_needs_an_encoder_with_codes():
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["priors"] = {"prior": PRIORS["flow"] | {"encoder": "gan"}}
    with pytest.raises(ParamsError, match=r"gan \(gan\) has no codes to model; models with an encoder: \["):
        parse_params(params)
    params["priors"] = {"vae": PRIORS["flow"] | {"encoder": "ae_sigmoid_bce"}}
    with pytest.raises(ParamsError, match="priors.vae: the name is taken by models.vae"):
        parse_params(params)


def test_the_prior_schemas_are_the_families_own():
    assert set(PRIOR_PARAMS) == {"flow", "diffusion", "gan"}
    assert prior_config("diffusion").num_timesteps == 100 and prior_config("flow").num_couplings == 6


@pytest.fixture(scope="module", params=["diffusion", "flow"])
def conditional(request):
    """A conditional prior told each point's component of the mixture (the latent GAN's conditioning is the image
    GAN's, tested in test_conditional.py, and its game takes three times as long to learn the mixture)."""
    set_seed(0)
    # DDPM: a third of the points shown with the null class, so that it also learns the unconditional mixture
    dropout = {"condition_dropout": 0.3} if request.param == "diffusion" else {}
    model = build_model(prior_config(request.param, conditional=True, **dropout), IMAGE_SHAPE, num_classes=2)
    (train, train_labels), (validation, validation_labels) = mixture(2000, 0, True), mixture(400, 1, True)
    fit.fit(model, train, validation, targets=(train_labels, validation_labels), epochs=model.config.epochs,
            batch_size=model.config.batch_size, seed=0)
    model.after_training(Split(train, train_labels))
    return request.param, model


def test_a_conditional_prior_draws_the_component_it_is_asked_for(conditional, tmp_path):
    family, model = conditional
    assert model.num_classes == 2
    np.testing.assert_allclose(np.asarray(model.prior.class_shares), [0.3, 0.7], atol=0.03)
    left = model.sample_codes(500, seed=3, labels=np.zeros(500, int))
    right = model.sample_codes(500, seed=3, labels=np.ones(500, int))
    assert np.mean(left[:, 0] < 0) >= 0.97 and np.mean(right[:, 0] > 0) >= 0.97, family
    assert left[:, 0].mean() == pytest.approx(-2.0, abs=0.3) and right[:, 0].mean() == pytest.approx(2.0, abs=0.3)
    assert np.mean(model.sample_codes(1000, seed=4)[:, 0] > 0) == pytest.approx(0.7, abs=0.05)  # not asked
    space = model.latent_space()  # PULSE searches the class with the prior's noise
    assert space.dim == model.prior.noise_dim + 2
    assert np.asarray(space.decode(np.zeros((3, space.dim), np.float32))).shape == (3, *IMAGE_SHAPE)
    save_model(model, model.config, IMAGE_SHAPE, tmp_path)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.sample(6, seed=2, labels=np.array([0, 1, 0, 1, 1, 0])),
                                  model.sample(6, seed=2, labels=np.array([0, 1, 0, 1, 1, 0])))


def test_latent_diffusion_at_guidance_zero_is_the_unconditional_prior(conditional):
    family, model = conditional
    if family != "diffusion":
        pytest.skip("classifier-free guidance is diffusion's")
    guided = model.prior.config
    try:
        model.prior.config = guided.model_copy(update={"guidance_scale": 0.0})
        codes = model.sample_codes(1000, seed=3, labels=np.zeros(1000, int))  # asked for the left one only
        np.testing.assert_array_equal(codes, model.sample_codes(1000, seed=3, labels=np.ones(1000, int)))
        assert np.mean(codes[:, 0] > 0) == pytest.approx(0.7, abs=0.05)  # the mixture's own weights
        model.prior.config = guided.model_copy(update={"guidance_scale": 3.0})
        assert np.mean(model.sample_codes(1000, seed=3, labels=np.zeros(1000, int))[:, 0] < 0) >= 0.97
    finally:
        model.prior.config = guided


def test_a_prior_over_a_conditional_encoder_is_refused():
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["models"] = {"ae": ENCODER | {"conditional": True}}
    params["priors"] = {"prior": PRIORS["flow"] | {"encoder": "ae"}}
    params["search"] = None
    with pytest.raises(ParamsError, match="priors.prior.encoder: ae is conditional"):
        parse_params(params)
