"""A NN in the middle: a learned prior over an encoder's codes.

The lecture explains the VAE's blur: "The latent space is assumed to be Gaussian distributed - this causes
inaccuracy (blurry) generation", and then what fixes it: "similar to a VAE but with a NN in the middle that
approximates the true distribution of the latent space". The codes an encoder gives the training images
are not one Gaussian; a second generative model learns their distribution, and sampling draws codes from
it and decodes them with the encoder's own decoder, which stays as trained:

- a flow prior: a RealNVP over the codes (genlab.models.flow.CodeFlow); a second model over the first
  one's codes is Dai and Wipf's two-stage VAE (2019, "Diagnosing and Enhancing VAE Models");
- latent diffusion: a DDPM over the codes (genlab.models.diffusion.CodeDiffusion; Rombach et al. 2022,
  "High-Resolution Image Synthesis with Latent Diffusion Models");
- a latent GAN: the adversarial game over the codes (genlab.models.gan.CodeGan; Achlioptas et al. 2018).

The prior trains on the training images' codes (a VAE's posterior means), standardised dimension by
dimension. No sample can be better than the decoder's reconstructions: evaluate reports their FID as the
ceiling, and the encoder's own row shows what its Gaussian prior gives with the same decoder.

A conditional prior (`conditional: true`) is told the class, the way its family is (a flow's Gaussian per class,
a DDPM's class embedding with classifier-free guidance, a GAN's conditional generator and projection
discriminator), over an unconditional encoder's codes: p(z|c), decoded by the same decoder.
"""

from __future__ import annotations

import keras
import numpy as np

from genlab.config.params import PriorOverCodes
from genlab.models.contract import Encoder, FamilyModel, LatentSpace, class_search_space


class LatentModel(FamilyModel, keras.Model):
    """A trained encoder (frozen) and a compiled prior over its standardised codes. Training is the prior's:
    its objective, optimizers, metrics and weight average (a flow's likelihood, a DDPM's noise error, a
    GAN's game)."""

    def __init__(self, encoder_model: Encoder, prior: keras.Model, config: PriorOverCodes, **kwargs):
        super().__init__(**kwargs)
        self.encoder_model, self.prior, self.config = encoder_model, prior, config
        self.encoder_parameters = encoder_model.num_parameters()  # counted before they are frozen
        self.encoder_model.trainable = False  # the decoder stays as trained: only the prior learns
        dims = config.encoder_model.latent_dim
        self.code_mean = self.add_weight(shape=(dims,), initializer="zeros", trainable=False, name="code_mean")
        self.code_scale = self.add_weight(shape=(dims,), initializer="ones", trainable=False, name="code_scale")

    @property
    def monitored_loss(self) -> str:
        return self.prior.monitored_loss

    @property
    def num_classes(self) -> int:
        return self.prior.num_classes

    def conditions(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray | None:
        return self.prior.conditions(count, seed, labels)

    def after_training(self, train) -> None:
        """The prior keeps the class shares, if it is conditional."""
        self.prior.after_training(train)

    @property
    def metrics(self):
        return self.prior.metrics

    def call(self, codes, training=False):
        return self.prior(codes, training=training)

    def train_step(self, data):
        return self.prior.train_step(data)

    def test_step(self, data):
        return self.prior.test_step(data)

    def training_optimizers(self) -> list:
        return self.prior.training_optimizers()

    def build_optimizers(self) -> None:
        self.prior.build_optimizers()

    def finalize_weights(self) -> None:
        self.prior.finalize_weights()

    def num_parameters(self) -> int:
        """The prior's and the encoder's (frozen here, but its decoder draws every sample)."""
        return super().num_parameters() + self.encoder_parameters

    def take_encoder(self, trained: Encoder) -> None:
        """The trained encoder's weights (its folder, loaded through the registry) into this model's encoder."""
        self.encoder_model.set_weights(trained.get_weights())

    def training_data(self, train, validation) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The prior trains on codes: the training images' codes set the standardisation, which both splits get;
        a conditional prior's targets are the classes, an unconditional one's the codes themselves."""
        train_codes = self.encoder_model.encode(train.x)
        self.code_mean.assign(train_codes.mean(axis=0))
        self.code_scale.assign(np.maximum(train_codes.std(axis=0), 1e-6))
        codes = self.standardise(train_codes), self.standardise(self.encoder_model.encode(validation.x))
        targets = (train.y, validation.y) if self.num_classes else codes
        return (codes[0], targets[0]), (codes[1], targets[1])

    def standardise(self, codes: np.ndarray) -> np.ndarray:
        return ((codes - np.asarray(self.code_mean)) / np.asarray(self.code_scale)).astype(np.float32)

    def unstandardise(self, codes: np.ndarray) -> np.ndarray:
        """The prior's standardised codes in the encoder's units."""
        return (codes * np.asarray(self.code_scale) + np.asarray(self.code_mean)).astype(np.float32)

    def sample_codes(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` codes drawn from the prior (of the classes `labels`, a conditional one), in the encoder's units."""
        return self.unstandardise(self.prior.sample(count, seed, labels))

    # --- the contract ----------------------------------------------------------------------------------

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` images decoded from codes the prior draws, the same for the same seed."""
        return np.clip(self.encoder_model.decode(self.sample_codes(count, seed, labels)), 0.0, 1.0)

    def encode(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return self.encoder_model.encode(images)

    def decode(self, codes: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return self.encoder_model.decode(codes)

    def reconstruct(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return self.encoder_model.reconstruct(images)

    def code_decoder(self):
        return self.encoder_model.code_decoder()

    def latent_space(self) -> LatentSpace:
        """The decoder after the prior, as a function of the prior's standard normal noise (PULSE's search):
        the flow's inverse, or DDIM's deterministic steps from x_T."""
        decode = self.encoder_model.code_decoder()

        def generate(noise, condition=None):
            return decode(self.prior.from_noise(noise, condition) * self.code_scale + self.code_mean)
        if self.num_classes:  # a conditional prior's class is searched with its noise
            return class_search_space(generate, self.prior.noise_dim, self.num_classes)
        return LatentSpace(generate, self.prior.noise_dim)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Samples every few epochs, by the prior's quick look (a DDPM's DDIM in fewer steps)."""
        codes = self.unstandardise(self.prior.preview(len(images), seed=0))
        return {"sample": np.clip(self.encoder_model.decode(codes), 0.0, 1.0)}

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The prior's own on the test images' codes (a flow's NLL per code, a DDPM's noise error, a GAN's
        discriminator's beliefs), each named test_prior_..."""
        found = self.prior.family_metrics(self.standardise(self.encoder_model.encode(images)), labels)
        return {(key if key.startswith("test_prior_") else key.replace("test_", "test_prior_", 1)): value
                for key, value in found.items()}

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """The same decoder under both priors: the encoder's Gaussian beside the learned one, same seeds."""
        gaussian = np.clip(self.encoder_model.sample(20, seed=0), 0.0, 1.0)
        learned = self.sample(20, seed=0)
        return {"priors.png": {f"Gaussian prior ({self.config.encoder})": gaussian[:10], "Gaussian prior ": gaussian[10:],
                               f"{self.config.family} prior": learned[:10], f"{self.config.family} prior ": learned[10:]}}


def build(config: PriorOverCodes, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> LatentModel:
    """The compiled latent model described by `config`: its encoder rebuilt from the encoder's own entry (the
    weights come from the trained encoder, `take_encoder`, or a saved latent model), and the prior (told one of
    `num_classes` classes, a conditional prior)."""
    from genlab.models.registry import build_model, family_module

    encoder_model = build_model(config.encoder_model, image_shape)
    prior = family_module(config.family).build_prior(config, config.encoder_model.latent_dim, num_classes)
    model = LatentModel(encoder_model, prior, config, name=f"latent_{config.family}")
    model.built = True  # its parts are: the encoder, the prior, the codes' statistics
    # the prior's optimizer is the model's: Keras's fit ends by giving the model its weight average, if any
    model.compile(optimizer=prior.optimizer, steps_per_execution=steps_per_execution)
    return model
