"""Probabilistic PCA (Tipping and Bishop 1999, "Probabilistic Principal Component Analysis").

The lecture's autoencoder made linear and given a density: a code z ~ N(0, I) of `latent_dim` numbers
and an image x = W z + mu + eps with isotropic noise eps ~ N(0, sigma^2 I). Marginally x ~ N(mu, C),

    C = W W^T + sigma^2 I,

whose exact log-likelihood training maximises by gradient descent (its maximum spans PCA's principal
subspace, with sigma^2 the mean variance of the directions left out). Every step stays in the
latent_dim x latent_dim space, by the matrix determinant lemma and Woodbury's identity:

    log det C = (D - q) log sigma^2 + log det M,    x^T C^-1 x = (|x|^2 - x^T W M^-1 W^T x) / sigma^2,

with M = W^T W + sigma^2 I. As for the flow, the grey levels are dequantised with uniform noise, so that
the density's negative log-likelihood plus log(levels) per pixel bounds the discrete images' (bits per
dimension, comparable with the flow's). The posterior mean E[z|x] = M^-1 W^T (x - mu) encodes, W z + mu
decodes, and samples decode z ~ N(0, T^2 I), shown without the pixel noise (the mean of p(x|z)).

Conditional: the model is fitted as it is, and then each class's codes get a Gaussian p(z|c) with the
moments of that class's posteriors (the covariance of its posterior means plus the posterior covariance
sigma^2 M^-1; genlab.models.networks.ClassGaussians); a class's samples decode its codes.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from genlab.config.params import PpcaParams
from genlab.models.contract import LatentSpace, class_search_space
from genlab.models.networks import ClassGaussians, PerImageObjective, optimizer, prior_noise

LOG_2PI = math.log(2 * math.pi)


class Ppca(PerImageObjective):
    """Owns the objective: the exact negative log-likelihood of the dequantised images, in bits per dimension."""

    likelihood = "exact"

    def __init__(self, config: PpcaParams, image_shape: tuple[int, int], num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.config, self.image_shape = config, tuple(image_shape)
        self.dims, latent = int(np.prod(image_shape)), config.latent_dim
        self.mean = self.add_weight(shape=(self.dims,), initializer="zeros", name="mean")  # mu
        self.factors = self.add_weight(shape=(self.dims, latent), name="factors",  # W: (D, q)
                                       initializer=keras.initializers.RandomNormal(stddev=0.1, seed=config.seed))
        self.log_noise_variance = self.add_weight(shape=(), initializer=keras.initializers.Constant(math.log(0.1)),
                                                  name="log_noise_variance")  # log sigma^2
        self.noise = keras.random.SeedGenerator(config.seed)
        self.condition_on_classes(num_classes)
        self.class_gaussians = ClassGaussians(num_classes, latent, name="class_gaussians") if num_classes else None

    def _posterior_system(self):
        """M = W^T W + sigma^2 I (q, q) and sigma^2."""
        variance = ops.exp(self.log_noise_variance)
        latent = self.config.latent_dim
        return ops.matmul(ops.transpose(self.factors), self.factors) + variance * ops.eye(latent), variance

    def negative_log_density(self, y):
        """-log N(y; mu, W W^T + sigma^2 I) of flat (B, D) values, per row: (B,)."""
        matrix, variance = self._posterior_system()
        centred = y - self.mean
        projected = ops.matmul(centred, self.factors)  # W^T (y - mu): (B, q)
        solved = ops.transpose(ops.solve(matrix, ops.transpose(projected)))  # M^-1 W^T (y - mu)
        quadratic = (ops.sum(ops.square(centred), axis=-1) - ops.sum(projected * solved, axis=-1)) / variance
        _, log_det_matrix = ops.slogdet(matrix)
        log_det = (self.dims - self.config.latent_dim) * self.log_noise_variance + log_det_matrix
        return 0.5 * (self.dims * LOG_2PI + log_det + quadratic)

    def dequantise(self, images):
        """Grey levels k/(L-1) -> (k + u) / L with u ~ U[0, 1): a density on [0, 1]^D."""
        levels = self.config.num_levels
        flat = ops.reshape(images, (ops.shape(images)[0], self.dims))
        return (ops.round(flat * (levels - 1)) + keras.random.uniform(ops.shape(flat), seed=self.noise)) / levels

    def bits_per_dim(self, images):
        """-log2 p(x) / D of the discrete images, per image, bounded through the dequantisation: (B,)."""
        nll = self.negative_log_density(self.dequantise(images)) + self.dims * math.log(self.config.num_levels)
        return nll / (self.dims * math.log(2))

    def call(self, images, training=False):
        return self.bits_per_dim(images)

    def per_image_loss(self, images, condition, training: bool):
        return self.bits_per_dim(images)

    def training_data(self, train, validation) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The images alone, conditional or not (a class enters through p(z|c), after training)."""
        return (train.x, train.x), (validation.x, validation.x)

    def after_training(self, train) -> None:
        """A conditional model's Gaussian per class over the codes: its posteriors' moments."""
        super().after_training(train)
        if self.class_gaussians is not None:
            matrix, variance = self._posterior_system()
            posterior_covariance = float(variance) * np.linalg.inv(np.asarray(matrix, dtype=np.float64))
            self.class_gaussians.fit(self.encode(train.x), train.y, posterior_covariance)

    # --- what the stages use -----------------------------------------------------------------

    def encode(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """The posterior means E[z|x] = M^-1 W^T (x - mu): (N, latent_dim)."""
        matrix, _ = self._posterior_system()
        projected = ops.matmul(np.reshape(images, (len(images), self.dims)).astype(np.float32) - self.mean,
                               self.factors)
        return np.asarray(ops.transpose(ops.solve(matrix, ops.transpose(projected))), dtype=np.float32)

    def decode(self, codes, labels: np.ndarray | None = None) -> np.ndarray:
        """W z + mu as (N, H, W) images in [0, 1]."""
        pixels = ops.matmul(codes, ops.transpose(self.factors)) + self.mean
        return np.clip(np.asarray(pixels), 0.0, 1.0).reshape(len(codes), *self.image_shape).astype(np.float32)

    def reconstruct(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return self.decode(self.encode(images))

    def code_decoder(self):
        """W z + mu as (B, H, W) tensors."""
        def decode(codes):
            return ops.reshape(ops.matmul(codes, ops.transpose(self.factors)) + self.mean, (-1, *self.image_shape))
        return decode

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` images decoded from z ~ N(0, T^2 I) at the config's temperature T (a conditional model's from
        its classes' Gaussians), the same for the same seed."""
        condition = self.conditions(count, seed, labels)
        if condition is None:
            return self.decode(prior_noise(count, self.config.latent_dim, seed, self.config.temperature))
        noise = prior_noise(count, self.config.latent_dim, seed)
        return self.decode(np.asarray(self.class_gaussians.draw(noise, condition, self.config.temperature)))

    def latent_space(self):
        """W (T w) + mu over the prior's standard normal w (PULSE's search); a conditional model's over its
        classes' Gaussians, the class searched with w."""
        decode = self.code_decoder()
        if self.class_gaussians is not None:
            return class_search_space(
                lambda noise, condition: decode(self.class_gaussians.draw(noise, condition, self.config.temperature)),
                self.config.latent_dim, self.num_classes)
        return LatentSpace(lambda noise: decode(self.config.temperature * noise), self.config.latent_dim)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"original": images, "reconstruction": self.reconstruct(images), "sample": self.sample(len(images), 0)}

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The exact test NLL of the dequantised images in bits per dimension and nats, and the noise's std."""
        bits = float(self.evaluate(images, images, batch_size=512, verbose=0, return_dict=True)["loss"])
        return {"test_nll_bits_per_dim": bits, "test_nll_nats": bits * self.dims * math.log(2),
                "noise_std": float(np.exp(0.5 * np.asarray(self.log_noise_variance)))}


def build(config: PpcaParams, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> Ppca:
    """The compiled probabilistic PCA described by `config`, for images of `image_shape` (with a Gaussian over its
    codes per class of `num_classes`, for a conditional model)."""
    model = Ppca(config, image_shape, num_classes, name="ppca")
    model(np.zeros((1, *image_shape), dtype=np.float32))  # create its weights
    model.compile(optimizer=optimizer(config), steps_per_execution=steps_per_execution)
    return model
