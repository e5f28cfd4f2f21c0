"""The variational autoencoder (Kingma and Welling 2014, "Auto-Encoding Variational Bayes").

An encoder q(z|x) = N(mu(x), diag(sigma(x)^2)) over `latent_dim` numbers, a decoder p(x|z)
(Bernoulli: binary cross-entropy; or Gaussian with a fixed standard deviation), and a
standard normal prior p(z). Training maximises the evidence lower bound

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),

with the reparameterisation z = mu + sigma * eps, eps ~ N(0, I), and a `beta` weight on
the KL term. The importance-weighted bound with k samples (Burda et al. 2016) estimates
the negative log-likelihood for evaluation. Samples decode z ~ p(z): blurry, as the
lecture says, because the decoder returns the mean of p(x|z).

Conditional (Sohn, Lee and Yan 2015, "Learning Structured Output Representation using Deep Conditional
Generative Models"): the encoder q(z|x, c) and the decoder p(x|z, c) are both told the class c, as a
one-hot beside the features and beside z; the code is then free to hold the style alone, and sampling
decodes z ~ p(z) with the class asked for.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from genlab.config.params import VaeParams
from genlab.models.contract import FamilyModel, LatentSpace, class_search_space
from genlab.models.networks import (
    batch_and_condition,
    build_decoder_head,
    build_encoder_trunk,
    condition_input,
    network_inputs,
    optimizer,
    predict_in_batches,
    prior_noise,
    with_condition,
)
from genlab.training.devices import replica_share

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(z_mean, z_log_var):
    """KL(N(mu, sigma^2) || N(0, 1)) in closed form, summed over latent dimensions: (B,)."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def log_likelihood(images, decoded, decoder: str, decoder_std: float):
    """log p(x|z) summed over pixels: (B,). `decoded` is the Bernoulli mean or the Gaussian mean."""
    flat_x = ops.reshape(images, (ops.shape(images)[0], -1))
    flat_mean = ops.reshape(decoded, (ops.shape(decoded)[0], -1))
    if decoder == "bernoulli":
        p = ops.clip(flat_mean, 1e-7, 1 - 1e-7)
        return ops.sum(flat_x * ops.log(p) + (1 - flat_x) * ops.log(1 - p), axis=-1)
    variance = decoder_std**2
    return ops.sum(-0.5 * ops.square(flat_x - flat_mean) / variance - 0.5 * (LOG_2PI + math.log(variance)), axis=-1)


def log_normal(z, mean, log_var):
    """log N(z; mean, exp(log_var)) summed over the last axis."""
    return ops.sum(-0.5 * (LOG_2PI + log_var + ops.square(z - mean) / ops.exp(log_var)), axis=-1)


class Vae(FamilyModel, keras.Model):
    """Owns the objective: -ELBO with a beta-weighted KL, and its per-term metrics."""

    likelihood = "bound"  # the ELBO, and the importance-weighted estimate of log p(x) it bounds

    def __init__(self, encoder: keras.Model, decoder: keras.Model, config: VaeParams, num_classes: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.config = encoder, decoder, config
        self.condition_on_classes(num_classes)
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "reconstruction_loss", "kl_loss", "elbo")}
        self.noise = keras.random.SeedGenerator(config.seed)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        z_mean, _ = self.encoder(images, training=training)
        return self.decoder(z_mean, training=training)

    def _terms(self, images, condition, training):
        """Per-image -log p(x|z) for one z ~ q(z|x), and KL(q(z|x) || p(z)): two (B,) tensors (given the
        class, for a conditional VAE)."""
        z_mean, z_log_var = self.encoder(network_inputs(images, condition), training=training)
        eps = keras.random.normal(ops.shape(z_mean), seed=self.noise)
        z = z_mean + ops.exp(0.5 * z_log_var) * eps  # the reparameterisation trick
        decoded = self.decoder(network_inputs(z, condition), training=training)
        reconstruction = -log_likelihood(images, decoded, self.config.decoder, self.config.decoder_std)
        return reconstruction, gaussian_kl(z_mean, z_log_var)

    def _update(self, reconstruction, kl):
        # per-image values, so that a short last batch weighs by its size
        values = {"loss": reconstruction + self.config.beta * kl, "reconstruction_loss": reconstruction,
                  "kl_loss": kl, "elbo": -(reconstruction + kl)}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        import tensorflow as tf

        images, condition = batch_and_condition(self, data)
        with tf.GradientTape() as tape:
            reconstruction, kl = self._terms(images, condition, training=True)
            loss = replica_share(ops.mean(reconstruction + self.config.beta * kl))  # -ELBO, beta-weighted KL
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._update(reconstruction, kl)

    def test_step(self, data):
        images, condition = batch_and_condition(self, data)
        return self._update(*self._terms(images, condition, training=False))

    # --- what the stages use -----------------------------------------------------------------

    def encode(self, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        condition = self.condition_or_blind(len(images), labels)
        return predict_in_batches(self.encoder, network_inputs(images, condition), batch_size)[0]

    def decode(self, codes: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        condition = self.condition_or_blind(len(codes), labels)
        return predict_in_batches(self.decoder, network_inputs(codes, condition), batch_size)

    def reconstruct(self, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        return self.decode(self.encode(images, labels, batch_size), labels, batch_size)

    def code_decoder(self):
        if not self.num_classes:
            return lambda z: self.decoder(z, training=False)
        return lambda z: self.decoder([z, ops.tile(self.class_shares[None], (ops.shape(z)[0], 1))], training=False)

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` images decoded from z ~ N(0, T^2 I) at the config's temperature T, the same for the same seed
        (of the classes `labels`, for a conditional VAE)."""
        z = prior_noise(count, self.config.latent_dim, seed, self.config.temperature)
        return predict_in_batches(self.decoder, network_inputs(z, self.conditions(count, seed, labels)))

    def latent_space(self):
        """The decoder over the prior's z (PULSE's search); a conditional VAE's over z and the class."""
        if not self.num_classes:
            return LatentSpace(self.code_decoder(), self.config.latent_dim)
        return class_search_space(lambda z, condition: self.decoder([z, condition], training=False),
                                  self.config.latent_dim, self.num_classes)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"original": images, "reconstruction": self.reconstruct(images),
                "sample": self.sample(len(images), seed=0)}

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Rows of images to show: an interpolation between two test images of different classes,
        and, for a 2-D latent, the decoded grid over the prior's quantiles."""
        first, second = int(np.flatnonzero(labels == labels[0])[0]), int(np.flatnonzero(labels != labels[0])[0])
        codes = self.encode(images[[first, second]])
        weights = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
        shown = {"interpolation.png": {"interpolation": self.decode((1 - weights) * codes[0] + weights * codes[1])}}
        if self.config.latent_dim == 2:
            from scipy.stats import norm

            quantiles = norm.ppf(np.linspace(0.05, 0.95, 10)).astype(np.float32)
            shown["latent_grid.png"] = {f"z2={q:+.1f}": self.decode(np.stack([quantiles, np.full(10, q)], axis=1))
                                        for q in quantiles[::-1]}
        return shown

    def importance_weighted_nll(self, images: np.ndarray, num_samples: int, seed: int = 0, batch_size: int = 256,
                                labels: np.ndarray | None = None) -> np.ndarray:
        """-log p(x) (a conditional VAE's -log p(x|c)) estimated with k importance samples from q(z|x), in nats
        per image: (N,)."""
        rng = np.random.default_rng(seed)
        condition = self.condition_or_blind(len(images), labels)
        nll = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            given = None if condition is None else condition[start:start + batch_size]
            z_mean, z_log_var = (np.asarray(v) for v in self.encoder(network_inputs(x, given), training=False))
            eps = rng.standard_normal((num_samples, *z_mean.shape)).astype(np.float32)  # (k, B, D)
            z = z_mean + np.exp(0.5 * z_log_var) * eps
            repeated_condition = None if given is None else np.tile(given, (num_samples, 1))
            decoded = self.decoder(network_inputs(z.reshape(-1, z.shape[-1]), repeated_condition), training=False)
            repeated = np.broadcast_to(x, (num_samples, *x.shape)).reshape(-1, *x.shape[1:])
            log_px_z = np.asarray(log_likelihood(repeated, decoded, self.config.decoder, self.config.decoder_std))
            log_weights = (log_px_z.reshape(num_samples, -1) + np.asarray(log_normal(z, 0.0, 0.0 * z))
                           - np.asarray(log_normal(z, z_mean, z_log_var)))
            peak = log_weights.max(axis=0)
            nll.append(-(peak + np.log(np.mean(np.exp(log_weights - peak), axis=0))))
        return np.concatenate(nll)

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Test ELBO and the importance-weighted NLL, in nats and in bits per dimension (a conditional VAE's
        of the images given their classes)."""
        dims = int(np.prod(images.shape[1:]))
        results = self.evaluate(images, labels if self.num_classes else images, batch_size=256, verbose=0,
                                return_dict=True)
        nll = float(self.importance_weighted_nll(images, self.config.num_importance_samples,
                                                 labels=labels if self.num_classes else None).mean())
        return {"test_elbo_nats": float(results["elbo"]), "test_kl_nats": float(results["kl_loss"]),
                "test_nll_nats": nll, "test_nll_bits_per_dim": nll / (dims * math.log(2)),
                "test_negative_elbo_bits_per_dim": -float(results["elbo"]) / (dims * math.log(2))}


def build(config: VaeParams, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> Vae:
    """The compiled VAE described by `config`, for images of `image_shape` (told one of `num_classes`
    classes, for a conditional VAE)."""
    conv_filters = config.conv_filters if config.network_for(image_shape) == "conv" else ()
    images = keras.Input(shape=image_shape, name="image")
    condition = condition_input(num_classes)
    h = build_encoder_trunk(images, config.hidden_units, config.hidden_activation, conv_filters, condition)
    z_mean = keras.layers.Dense(config.latent_dim, name="z_mean")(h)
    z_log_var = keras.layers.Dense(config.latent_dim, name="z_log_var")(h)
    encoder = keras.Model(network_inputs(images, condition), [z_mean, z_log_var], name="encoder")

    latent = keras.Input(shape=(config.latent_dim,), name="latent")
    decoder_condition = condition_input(num_classes)
    output_activation = "sigmoid" if config.decoder == "bernoulli" else "linear"
    decoded = build_decoder_head(with_condition(latent, decoder_condition), image_shape, config.hidden_units,
                                 config.hidden_activation, output_activation, conv_filters)
    decoder = keras.Model(network_inputs(latent, decoder_condition), decoded, name="decoder")

    model = Vae(encoder, decoder, config, num_classes, name="vae")
    if num_classes:
        model.built = True  # its parts are: the encoder and the decoder, each built with its class input
    else:
        model.build((None, *image_shape))
    model.compile(optimizer=optimizer(config), steps_per_execution=steps_per_execution)
    return model
