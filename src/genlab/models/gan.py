"""The generative adversarial network (Goodfellow et al. 2014, "Generative Adversarial Nets").

A generator G maps noise z ~ N(0, I) to an image; a discriminator D scores images as
real (logit > 0) or generated. They play the minimax game

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))].

Early in training D rejects G's samples easily and log(1 - D(G(z))) saturates: its
gradient vanishes. The lecture's fix, "to minimize generator saturation", is the
non-saturating loss: G maximises log D(G(z)) instead. `loss` picks either objective.
All losses are written on D's logits (softplus) for numerical stability.

Conditional (Mirza and Osindero 2014, "Conditional Generative Adversarial Nets"): G is given the class
beside z, and D judges an image with its class. D's class enters by projection (Miyato and Koyama 2018,
"cGANs with Projection Discriminator"): logit = w.h + embed(c).h over D's features h, so that D scores
whether the image fits the class (a one-hot joined to h before a linear logit could add a bias per class
and nothing else).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from genlab.models.contract import FamilyModel, LatentSpace, class_search_space
from genlab.models.networks import (
    batch_and_condition,
    build_decoder_head,
    build_encoder_trunk,
    condition_input,
    network_inputs,
    predict_in_batches,
    prior_noise,
    with_condition,
)
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

    def __init__(self, generator: keras.Model, discriminator: keras.Model, config: GanParams, num_classes: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator, self.config = generator, discriminator, config
        self.condition_on_classes(num_classes)
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

    def _generate(self, z, condition, training: bool):
        return self.generator(network_inputs(z, condition), training=training)

    def _judge(self, images, condition, training: bool):
        return self.discriminator(network_inputs(images, condition), training=training)

    def train_step(self, data):
        import tensorflow as tf

        images, condition = batch_and_condition(self, data)  # a conditional G draws the batch's classes
        fakes = self._generate(self._noise(images), condition, training=True)
        with tf.GradientTape() as tape:  # D: tell real from generated
            real_logits = self._judge(images, condition, training=True)
            fake_logits = self._judge(fakes, condition, training=True)
            d_loss = discriminator_loss(real_logits, fake_logits)
            replica_d_loss = replica_share(d_loss)
        gradients = tape.gradient(replica_d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))

        with tf.GradientTape() as tape:  # G: fool the updated D
            fake_logits = self._judge(self._generate(self._noise(images), condition, training=True), condition,
                                      training=True)
            g_loss = generator_loss(fake_logits, self.config.loss)
            replica_g_loss = replica_share(g_loss)
        gradients = tape.gradient(replica_g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return self._report(d_loss, g_loss, real_logits, fake_logits)

    def test_step(self, data):
        images, condition = batch_and_condition(self, data)
        real_logits = self._judge(images, condition, training=False)
        fake_logits = self._judge(self._generate(self._noise(images), condition, training=False), condition,
                                  training=False)
        return self._report(discriminator_loss(real_logits, fake_logits),
                            generator_loss(fake_logits, self.config.loss), real_logits, fake_logits)

    # --- what the stages use -----------------------------------------------------------------

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` images from z ~ N(0, T^2 I) at the config's temperature T, the same for the same seed (of the
        classes `labels`, for a conditional GAN)."""
        z = prior_noise(count, self.config.latent_dim, seed, self.config.temperature)
        return predict_in_batches(self.generator, network_inputs(z, self.conditions(count, seed, labels)))

    def latent_space(self):
        """The generator over its noise z: what PULSE searches (with the class, for a conditional GAN)."""
        if self.num_classes:
            return class_search_space(lambda z, condition: self.generator([z, condition], training=False),
                                      self.config.latent_dim, self.num_classes)
        return LatentSpace(lambda z: self.generator(z, training=False), self.config.latent_dim)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Samples from the same noise every time, so the MLflow run shows the generator improving."""
        return {"sample": self.sample(len(images), seed=0)}

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The discriminator's mean belief that test images and samples are real (a conditional one's, of
        the test images' classes)."""
        fakes = self.sample(len(images), seed=1, labels=labels if self.num_classes else None)
        condition = self.condition_or_blind(len(images), labels)
        real, fake = (ops.sigmoid(predict_in_batches(self.discriminator, network_inputs(shown, condition)))
                      for shown in (images, fakes))
        return {"test_d_real": float(ops.mean(real)), "test_d_fake": float(ops.mean(fake))}


def _optimizer(config: GanParams, ema_decay: float = 0.0) -> keras.optimizers.Optimizer:
    settings = {"beta_1": config.adam_beta_1} if config.optimizer == "adam" else {}
    return make_optimizer(config.optimizer, config.learning_rate, ema_decay, clip_norm=config.gradient_clip_norm,
                          **settings)


def discriminator_logit(features, condition):
    """D's logit from its features (B, F): w.h + b, plus embed(c).h for a conditional D (the projection)."""
    logit = keras.layers.Dense(1, name="logit")(features)
    if condition is None:
        return logit
    embedded = keras.layers.Dense(features.shape[-1], use_bias=False, name="class_embedding")(condition)
    projection = keras.layers.Dot(axes=-1, name="class_projection")([embedded, features])
    return keras.layers.Add(name="logit_with_class")([logit, projection])


def build(config: GanParams, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> Gan:
    """The compiled GAN described by `config`, for images of `image_shape` (G given, and D judging with, one of
    `num_classes` classes, for a conditional GAN)."""
    conv = config.network_for(image_shape) == "conv"  # DCGAN-style: strided convolutions both ways
    conv_filters = config.conv_filters if conv else ()
    z = keras.Input(shape=(config.latent_dim,), name="noise")
    generator_condition = condition_input(num_classes)
    generator_units = () if conv else tuple(reversed(config.generator_units))  # the head mirrors its units back
    fakes = build_decoder_head(with_condition(z, generator_condition), image_shape, generator_units, "relu",
                               "sigmoid", conv_filters, batch_norm=conv)
    generator = keras.Model(network_inputs(z, generator_condition), fakes, name="generator")

    images = keras.Input(shape=image_shape, name="image")
    condition = condition_input(num_classes)
    discriminator_filters = (config.discriminator_filters or conv_filters) if conv else ()
    features = build_encoder_trunk(images, () if conv else config.discriminator_units, "leaky_relu",
                                   discriminator_filters)
    discriminator = keras.Model(network_inputs(images, condition), discriminator_logit(features, condition),
                                name="discriminator")

    model = Gan(generator, discriminator, config, num_classes, name="gan")
    if num_classes:
        model.built = True  # its parts are: the generator and the discriminator, each with its class input
    else:
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
                 num_classes: int = 0, **kwargs):
        super().__init__(generator, discriminator, config, num_classes, **kwargs)
        self.dims, self.noise_dim = dims, config.latent_dim

    def preview(self, count: int, seed: int) -> np.ndarray:
        """What the progress grid decodes while training: samples (one pass of the generator)."""
        return self.sample(count, seed)

    def from_noise(self, noise, condition=None):
        """(B, latent_dim) standard normal noise (and a conditional prior's one-hot or soft classes) -> codes at
        the sampling temperature (differentiable)."""
        z = self.config.temperature * ops.convert_to_tensor(noise)
        return self.generator(network_inputs(z, condition), training=False)


def build_prior(config: GanPriorParams, dims: int, num_classes: int = 0) -> CodeGan:
    """The compiled GAN over `dims` codes described by `config` (a conditional one: G given, D judging with,
    one of `num_classes` classes)."""
    z = keras.Input(shape=(config.latent_dim,), name="noise")
    generator_condition = condition_input(num_classes)
    generator = keras.Model(network_inputs(z, generator_condition),
                            build_decoder_head(with_condition(z, generator_condition), (dims,),
                                               tuple(reversed(config.generator_units)), "relu", "linear"),
                            name="generator")
    codes = keras.Input(shape=(dims,), name="codes")
    condition = condition_input(num_classes)
    features = build_encoder_trunk(codes, config.discriminator_units, "leaky_relu")
    discriminator = keras.Model(network_inputs(codes, condition), discriminator_logit(features, condition),
                                name="discriminator")
    prior = CodeGan(generator, discriminator, config, dims, num_classes, name="gan_prior")
    if num_classes:
        prior.built = True
    else:
        prior.build((None, config.latent_dim))
    prior.compile(d_optimizer=_optimizer(config), g_optimizer=_optimizer(config, config.ema_decay))
    return prior
