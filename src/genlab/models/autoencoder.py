"""The autoencoder: squeeze an image through a bottleneck of `latent_dim` numbers and rebuild it.

The lecture's study: a dense encoder (image -> hidden_units -> latent_dim) and a
mirrored decoder (latent_dim -> reversed hidden_units -> image). The output
activation and the loss decide how well it learns: adadelta with relu and MSE
had not finished learning; linear+MSE, sigmoid+MSE and sigmoid+binary
cross-entropy did better, the last best.

Its samples decode codes drawn from a Gaussian fitted to the training images' codes; a conditional
autoencoder fits one Gaussian per class (p(z|c), genlab.models.networks.ClassGaussians) and draws the
class's: the networks stay those of the study, only the prior is told the class.
"""

from __future__ import annotations

import keras
import numpy as np

from genlab.config.params import AutoencoderParams
from genlab.models.contract import FamilyModel, LatentSpace, class_search_space
from genlab.models.networks import (
    ClassGaussians,
    build_decoder_head,
    build_encoder_trunk,
    gaussian_fit,
    optimizer,
    predict_in_batches,
)


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

    def __init__(self, encoder: keras.Model, decoder: keras.Model, num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.condition_on_classes(num_classes)
        # A Gaussian fitted to the training codes (after_training), saved with the weights, so that
        # an autoencoder generates by decoding codes drawn from it and sits in the same table.
        latent_dim = encoder.output.shape[-1]
        self.latent_mean = self.add_weight(shape=(latent_dim,), initializer="zeros", trainable=False,
                                           name="latent_mean")
        self.latent_scale = self.add_weight(shape=(latent_dim, latent_dim), initializer="identity",
                                            trainable=False, name="latent_scale")  # a Cholesky factor
        self.class_gaussians = ClassGaussians(num_classes, latent_dim, name="class_gaussians") if num_classes else None

    def call(self, images, training=False):
        return self.decoder(self.encoder(images, training=training), training=training)

    def encode(self, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        return predict_in_batches(self.encoder, images, batch_size)

    def reconstruct(self, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        return predict_in_batches(self, images, batch_size)

    def decode(self, codes: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        return predict_in_batches(self.decoder, codes, batch_size)

    def code_decoder(self):
        return lambda codes: self.decoder(codes, training=False)

    def training_data(self, train, validation) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The networks learn to rebuild the images, conditional or not (a class enters through the prior)."""
        return (train.x, train.x), (validation.x, validation.x)

    def after_training(self, train) -> None:
        """Fit N(mean, L L^T) to the codes of the training images (and one per class, if conditional)."""
        super().after_training(train)
        codes = self.encode(train.x)
        mean, scale = gaussian_fit(codes)
        self.latent_mean.assign(mean)
        self.latent_scale.assign(scale)
        if self.class_gaussians is not None:
            self.class_gaussians.fit(codes, train.y)

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` images decoded from codes drawn from the fitted Gaussian (a conditional autoencoder's: the
        classes' Gaussians), the same for the same seed."""
        noise = np.random.default_rng(seed).standard_normal((count, self.latent_mean.shape[0])).astype(np.float32)
        condition = self.conditions(count, seed, labels)
        if condition is None:
            codes = np.asarray(self.latent_mean) + noise @ np.asarray(self.latent_scale).T
        else:
            codes = np.asarray(self.class_gaussians.draw(noise, condition))
        return np.clip(self.decode(codes.astype(np.float32)), 0.0, 1.0)  # as images

    def latent_space(self):
        """The decoder after the fitted Gaussian, as a function of standard normal noise (PULSE's search); a
        conditional autoencoder's after its classes' Gaussians, the class searched with the noise."""
        if self.class_gaussians is not None:
            return class_search_space(
                lambda noise, condition: self.decoder(self.class_gaussians.draw(noise, condition), training=False),
                int(self.latent_mean.shape[0]), self.num_classes)

        def decode(noise):
            codes = self.latent_mean + keras.ops.matmul(noise, keras.ops.transpose(self.latent_scale))
            return self.decoder(codes, training=False)
        return LatentSpace(decode, int(self.latent_mean.shape[0]))

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """What the MLflow run shows every few epochs: the same test images and their reconstructions."""
        return {"original": images, "reconstruction": self.reconstruct(images)}

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
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


def build(config: AutoencoderParams, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> Autoencoder:
    """The compiled autoencoder described by `config`, for images of `image_shape` (with a Gaussian over its codes
    per class of `num_classes`, for a conditional autoencoder).

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
    model = Autoencoder(encoder, decoder, num_classes, name="autoencoder")
    model.build((None, *image_shape))
    model.compile(optimizer=optimizer(config), loss=pixel_loss(config.loss), steps_per_execution=steps_per_execution)
    return model
