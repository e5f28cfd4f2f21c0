"""The autoencoder: squeeze an image through a bottleneck of `latent_dim` numbers and rebuild it.

The lecture's study: a dense encoder (image -> hidden_units -> latent_dim) and a
mirrored decoder (latent_dim -> reversed hidden_units -> image). The output
activation and the loss decide how well it learns: adadelta with relu and MSE
had not finished learning; linear+MSE, sigmoid+MSE and sigmoid+binary
cross-entropy did better, the last best.
"""

from __future__ import annotations

import keras
import numpy as np

from genlab.config.params import AutoencoderParams
from genlab.models.contract import FamilyModel, LatentSpace
from genlab.models.networks import build_decoder_head, build_encoder_trunk, optimizer, predict_in_batches


def build_encoder(image_shape: tuple[int, int], hidden_units: tuple[int, ...], latent_dim: int,
                  activation: str) -> keras.Model:
    images = keras.Input(shape=image_shape, name="image")  # (B, H, W)
    h = build_encoder_trunk(images, hidden_units, activation)
    latent = keras.layers.Dense(latent_dim, activation=activation, name="bottleneck")(h)  # (B, latent_dim)
    return keras.Model(images, latent, name="encoder")


def build_decoder(image_shape: tuple[int, int], hidden_units: tuple[int, ...], latent_dim: int,
                  hidden_activation: str, output_activation: str) -> keras.Model:
    latent = keras.Input(shape=(latent_dim,), name="latent")
    images = build_decoder_head(latent, image_shape, hidden_units, hidden_activation, output_activation)
    return keras.Model(latent, images, name="decoder")


class Autoencoder(FamilyModel, keras.Model):
    """decoder(encoder(x)); the compiled loss compares the reconstruction with x."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        # A Gaussian fitted to the training codes (after_training), saved with the weights, so that
        # an autoencoder generates by decoding codes drawn from it and sits in the same table.
        latent_dim = encoder.output.shape[-1]
        self.latent_mean = self.add_weight(shape=(latent_dim,), initializer="zeros", trainable=False,
                                           name="latent_mean")
        self.latent_scale = self.add_weight(shape=(latent_dim, latent_dim), initializer="identity",
                                            trainable=False, name="latent_scale")  # a Cholesky factor

    def call(self, images, training=False):
        return self.decoder(self.encoder(images, training=training), training=training)

    def encode(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return predict_in_batches(self.encoder, images, batch_size)

    def reconstruct(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return predict_in_batches(self, images, batch_size)

    def decode(self, codes: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return predict_in_batches(self.decoder, codes, batch_size)

    def code_decoder(self):
        return lambda codes: self.decoder(codes, training=False)

    def after_training(self, train_images: np.ndarray) -> None:
        """Fit N(mean, L L^T) to the codes of the training images."""
        codes = self.encode(train_images).astype(np.float64)
        covariance = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(codes.shape[1])
        self.latent_mean.assign(codes.mean(axis=0).astype(np.float32))
        self.latent_scale.assign(np.linalg.cholesky(covariance).astype(np.float32))

    def sample(self, count: int, seed: int) -> np.ndarray:
        """`count` images decoded from codes drawn from the fitted Gaussian, the same for the same seed."""
        noise = np.random.default_rng(seed).standard_normal((count, self.latent_mean.shape[0])).astype(np.float32)
        codes = np.asarray(self.latent_mean) + noise @ np.asarray(self.latent_scale).T
        return np.clip(self.decode(codes.astype(np.float32)), 0.0, 1.0)  # as images

    def latent_space(self):
        """The decoder after the fitted Gaussian, as a function of standard normal noise (PULSE's search)."""
        def decode(noise):
            codes = self.latent_mean + keras.ops.matmul(noise, keras.ops.transpose(self.latent_scale))
            return self.decoder(codes, training=False)
        return LatentSpace(decode, int(self.latent_mean.shape[0]))

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """What the MLflow run shows every few epochs: the same test images and their reconstructions."""
        return {"original": images, "reconstruction": self.reconstruct(images)}

    def family_metrics(self, images: np.ndarray) -> dict[str, float]:
        return {}  # reconstruction errors are measured for every encoder by the evaluate stage


def pixel_loss(name: str):
    """A Keras loss taken over all H*W pixels of each image, not row by row.

    Keras reduces a loss over the last axis; for (B, H, W) images that would make
    categorical cross-entropy a distribution over each row instead of the image.
    """
    base = keras.losses.get(name)

    def loss(images, reconstructions):
        flat_shape = (keras.ops.shape(images)[0], -1)  # (B, H*W)
        return base(keras.ops.reshape(images, flat_shape), keras.ops.reshape(reconstructions, flat_shape))

    loss.__name__ = name
    return loss


def build(config: AutoencoderParams, image_shape: tuple[int, int], steps_per_execution: int = 32) -> Autoencoder:
    """The compiled autoencoder described by `config`, for images of `image_shape`.

    `steps_per_execution` batches run per call into TensorFlow: small dense models are
    otherwise dominated by per-step overhead (100 epochs on the digits: 11 s -> 8 s, same weights).
    genlab.training.fit.fit runs a whole epoch per call instead (3.3 s).
    """
    pixels = int(np.prod(image_shape))
    if config.latent_dim >= pixels:
        raise ValueError(f"latent_dim {config.latent_dim} is no bottleneck for {pixels} pixels; use 1..{pixels - 1}")
    encoder = build_encoder(image_shape, config.hidden_units, config.latent_dim, config.hidden_activation)
    decoder = build_decoder(image_shape, config.hidden_units, config.latent_dim, config.hidden_activation,
                            config.output_activation)
    model = Autoencoder(encoder, decoder, name="autoencoder")
    model.build((None, *image_shape))
    model.compile(optimizer=optimizer(config), loss=pixel_loss(config.loss), steps_per_execution=steps_per_execution)
    return model
