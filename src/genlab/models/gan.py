"""The generative adversarial network (Goodfellow et al. 2014, "Generative Adversarial Nets").

A generator G maps noise z ~ N(0, I) to an image; a discriminator D scores images as
real (logit > 0) or generated. They play the minimax game

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))].

Early in training D rejects G's samples easily and log(1 - D(G(z))) saturates: its
gradient vanishes. The lecture's fix, "to minimize generator saturation", is the
non-saturating loss: G maximises log D(G(z)) instead. `loss` picks either objective.
All losses are written on D's logits (softplus) for numerical stability.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from genlab.models.contract import FamilyModel, LatentSpace
from genlab.models.networks import build_decoder_head, build_encoder_trunk, predict_in_batches, prior_noise
from genlab.config.params import GanParams, GanPriorParams
from genlab.training.devices import replica_share
from genlab.training.optimizers import make_optimizer


def discriminator_loss(real_logits, fake_logits):
    """-log D(x) - log(1 - D(G(z))), averaged: D's side of the game."""
    return ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))


def generator_loss(fake_logits, objective: str):
    """minimax: log(1 - D(G(z))) (saturates); non_saturating: -log D(G(z)). Both minimised by G."""
    if objective == "minimax":
        return -ops.mean(ops.softplus(fake_logits))
    return ops.mean(ops.softplus(-fake_logits))


class Gan(FamilyModel, keras.Model):
    """Owns the game: one discriminator step and one generator step per batch, and their metrics."""

    monitored_loss = "g_loss"  # what the loss-curve diagnosis reads: a GAN has no single loss

    def __init__(self, generator: keras.Model, discriminator: keras.Model, config: GanParams, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator, self.config = generator, discriminator, config
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("d_loss", "g_loss", "d_real", "d_fake")}
        self.noise = keras.random.SeedGenerator(config.seed)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def training_optimizers(self) -> list:
        """The discriminator's and the generator's optimizers (a learning-rate schedule sets both)."""
        return [self.d_optimizer, self.g_optimizer]

    def finalize_weights(self) -> None:
        """After training: the generator takes its optimizer's moving average of its weights, if it keeps one
        (Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"). Keras's fit does this
        for a model's own optimizer only, and a GAN's are two of its own."""
        self.g_optimizer.finalize_variable_values(self.generator.trainable_variables)

    def build_optimizers(self) -> None:
        """Create both optimizers' variables, so that saved weights load into them."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def _noise(self, images):
        return keras.random.normal((ops.shape(images)[0], self.config.latent_dim), seed=self.noise)

    def _report(self, d_loss, g_loss, real_logits, fake_logits):
        values = {"d_loss": d_loss, "g_loss": g_loss, "d_real": ops.mean(ops.sigmoid(real_logits)),
                  "d_fake": ops.mean(ops.sigmoid(fake_logits))}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        import tensorflow as tf

        images = data[0] if isinstance(data, tuple) else data
        fakes = self.generator(self._noise(images), training=True)
        with tf.GradientTape() as tape:  # D: tell real from generated
            real_logits = self.discriminator(images, training=True)
            fake_logits = self.discriminator(fakes, training=True)
            d_loss = discriminator_loss(real_logits, fake_logits)
            replica_d_loss = replica_share(d_loss)
        gradients = tape.gradient(replica_d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))

        with tf.GradientTape() as tape:  # G: fool the updated D
            fake_logits = self.discriminator(self.generator(self._noise(images), training=True), training=True)
            g_loss = generator_loss(fake_logits, self.config.loss)
            replica_g_loss = replica_share(g_loss)
        gradients = tape.gradient(replica_g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return self._report(d_loss, g_loss, real_logits, fake_logits)

    def test_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        real_logits = self.discriminator(images, training=False)
        fake_logits = self.discriminator(self.generator(self._noise(images), training=False), training=False)
        return self._report(discriminator_loss(real_logits, fake_logits),
                            generator_loss(fake_logits, self.config.loss), real_logits, fake_logits)

    # --- what the stages use -----------------------------------------------------------------

    def sample(self, count: int, seed: int) -> np.ndarray:
        """`count` images from z ~ N(0, T^2 I) at the config's temperature T, the same for the same seed."""
        return predict_in_batches(self.generator, prior_noise(count, self.config.latent_dim, seed,
                                                              self.config.temperature))

    def latent_space(self):
        """The generator over its noise z: what PULSE searches."""
        return LatentSpace(lambda z: self.generator(z, training=False), self.config.latent_dim)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Samples from the same noise every time, so the MLflow run shows the generator improving."""
        return {"sample": self.sample(len(images), seed=0)}

    def family_metrics(self, images: np.ndarray) -> dict[str, float]:
        """The discriminator's mean belief that test images and samples are real."""
        real = ops.sigmoid(predict_in_batches(self.discriminator, images))
        fake = ops.sigmoid(predict_in_batches(self.discriminator, self.sample(len(images), seed=1)))
        return {"test_d_real": float(ops.mean(real)), "test_d_fake": float(ops.mean(fake))}


def _optimizer(config: GanParams, ema_decay: float = 0.0) -> keras.optimizers.Optimizer:
    settings = {"beta_1": config.adam_beta_1} if config.optimizer == "adam" else {}
    return make_optimizer(config.optimizer, config.learning_rate, ema_decay, clip_norm=config.gradient_clip_norm,
                          **settings)


def build(config: GanParams, image_shape: tuple[int, int], steps_per_execution: int = 32) -> Gan:
    """The compiled GAN described by `config`, for images of `image_shape`."""
    conv = config.network_for(image_shape) == "conv"  # DCGAN-style: strided convolutions both ways
    conv_filters = config.conv_filters if conv else ()
    z = keras.Input(shape=(config.latent_dim,), name="noise")
    generator_units = () if conv else tuple(reversed(config.generator_units))  # the head mirrors its units back
    fakes = build_decoder_head(z, image_shape, generator_units, "relu", "sigmoid", conv_filters, batch_norm=conv)
    generator = keras.Model(z, fakes, name="generator")

    images = keras.Input(shape=image_shape, name="image")
    discriminator_filters = (config.discriminator_filters or conv_filters) if conv else ()
    features = build_encoder_trunk(images, () if conv else config.discriminator_units, "leaky_relu",
                                   discriminator_filters)
    discriminator = keras.Model(images, keras.layers.Dense(1, name="logit")(features), name="discriminator")

    model = Gan(generator, discriminator, config, name="gan")
    model.build((None, config.latent_dim))
    model.compile(d_optimizer=_optimizer(config), g_optimizer=_optimizer(config, config.ema_decay),
                  steps_per_execution=steps_per_execution)
    return model


# --- a prior over an encoder's codes (genlab.models.latent) ------------------------------------------


class CodeGan(Gan):
    """The same game over a vector of standardised codes: a latent GAN (Achlioptas et al. 2018, "Learning
    Representations and Generative Models for 3D Point Clouds": a GAN in an autoencoder's latent space), with
    dense networks and a linear generator output (codes are not pixels in [0, 1])."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, config: GanPriorParams, dims: int,
                 **kwargs):
        super().__init__(generator, discriminator, config, **kwargs)
        self.dims, self.noise_dim = dims, config.latent_dim

    def preview(self, count: int, seed: int) -> np.ndarray:
        """What the progress grid decodes while training: samples (one pass of the generator)."""
        return self.sample(count, seed)

    def from_noise(self, noise):
        """(B, latent_dim) standard normal noise -> codes at the sampling temperature (differentiable)."""
        return self.generator(self.config.temperature * ops.convert_to_tensor(noise), training=False)


def build_prior(config: GanPriorParams, dims: int) -> CodeGan:
    """The compiled GAN over `dims` codes described by `config`."""
    z = keras.Input(shape=(config.latent_dim,), name="noise")
    generator = keras.Model(z, build_decoder_head(z, (dims,), tuple(reversed(config.generator_units)), "relu",
                                                  "linear"), name="generator")
    codes = keras.Input(shape=(dims,), name="codes")
    features = build_encoder_trunk(codes, config.discriminator_units, "leaky_relu")
    discriminator = keras.Model(codes, keras.layers.Dense(1, name="logit")(features), name="discriminator")
    prior = CodeGan(generator, discriminator, config, dims, name="gan_prior")
    prior.build((None, config.latent_dim))
    prior.compile(d_optimizer=_optimizer(config), g_optimizer=_optimizer(config, config.ema_decay))
    return prior
