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

from genlab.params import AutoencoderParams
from genlab.training import make_optimizer, predict_in_batches


def build_encoder_trunk(images, hidden_units: tuple[int, ...], activation: str, conv_filters: tuple[int, ...] = ()):
    """(B, H, W) images -> (B, features): 3x3 stride-2 convolutions that each halve the image
    (one per `conv_filters` entry, none for a dense network), then the hidden Dense layers."""
    h = images
    if conv_filters:
        h = keras.layers.Reshape((*image_size(images), 1))(h)
        for index, filters in enumerate(conv_filters):
            h = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation=activation,
                                    name=f"encoder_conv_{index}")(h)
    h = keras.layers.Flatten()(h)
    for index, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation=activation, name=f"encoder_hidden_{index}")(h)
    return h


def build_decoder_head(code, image_shape: tuple[int, int], hidden_units: tuple[int, ...], activation: str,
                       output_activation: str, conv_filters: tuple[int, ...] = (), batch_norm: bool = False):
    """(B, latent) -> (B, H, W), the encoder trunk's mirror: the hidden Dense layers reversed, then
    either one Dense layer of H*W pixels or a Dense map onto the smallest grid followed by a 4x4
    stride-2 transposed convolution per level, the last of them to one channel (a kernel divisible by
    the stride leaves no checkerboard pattern). `batch_norm` normalises every hidden layer of the
    convolutional path, as DCGAN's generator does."""
    h = code
    for index, units in enumerate(reversed(hidden_units)):
        h = keras.layers.Dense(units, activation=activation, name=f"decoder_hidden_{index}")(h)
    if not conv_filters:
        pixels = keras.layers.Dense(int(np.prod(image_shape)), activation=output_activation, name="pixels")(h)
        return keras.layers.Reshape(image_shape, name="image")(pixels)

    def hidden(layer, h, name):  # a layer, then (batch normalisation and) the activation
        if not batch_norm:
            return layer(activation=activation, name=name)(h)
        h = keras.layers.BatchNormalization(name=f"{name}_norm")(layer(use_bias=False, name=name)(h))
        return keras.layers.Activation(activation)(h)

    factor = 2 ** len(conv_filters)
    grid = (image_shape[0] // factor, image_shape[1] // factor, conv_filters[-1])
    h = hidden(lambda **options: keras.layers.Dense(int(np.prod(grid)), **options), h, "decoder_grid")
    h = keras.layers.Reshape(grid)(h)
    for index, filters in enumerate(reversed(conv_filters[:-1])):
        h = hidden(lambda **options: keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", **options),
                   h, f"decoder_conv_{index}")
    h = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation=output_activation,
                                     name=f"decoder_conv_{len(conv_filters) - 1}")(h)
    return keras.layers.Reshape(image_shape, name="image")(h)


def image_size(images) -> tuple[int, int]:
    """(H, W) of a symbolic (B, H, W) batch of images."""
    return tuple(images.shape[1:3])


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


class Autoencoder(keras.Model):
    """decoder(encoder(x)); the compiled loss compares the reconstruction with x."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        # A Gaussian fitted to the training codes (fit_latent_prior), saved with the weights, so that
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

    def fit_latent_prior(self, images: np.ndarray) -> None:
        """Fit N(mean, L L^T) to the codes of `images` (the training split)."""
        codes = self.encode(images).astype(np.float64)
        covariance = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(codes.shape[1])
        self.latent_mean.assign(codes.mean(axis=0).astype(np.float32))
        self.latent_scale.assign(np.linalg.cholesky(covariance).astype(np.float32))

    def sample(self, count: int, seed: int) -> np.ndarray:
        """`count` images decoded from codes drawn from the fitted Gaussian, the same for the same seed."""
        noise = np.random.default_rng(seed).standard_normal((count, self.latent_mean.shape[0])).astype(np.float32)
        codes = np.asarray(self.latent_mean) + noise @ np.asarray(self.latent_scale).T
        return np.clip(predict_in_batches(self.decoder, codes.astype(np.float32)), 0.0, 1.0)  # as images

    def latent_space(self):
        """The decoder after the fitted Gaussian, as a function of standard normal noise (PULSE's search)."""
        from genlab.restoration import LatentSpace

        def decode(noise):
            codes = self.latent_mean + keras.ops.matmul(noise, keras.ops.transpose(self.latent_scale))
            return self.decoder(codes, training=False)
        return LatentSpace(decode, int(self.latent_mean.shape[0]))

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """What the MLflow run shows every few epochs: the same test images and their reconstructions."""
        return {"original": images, "reconstruction": self.reconstruct(images)}

    def family_metrics(self, images: np.ndarray) -> dict[str, float]:
        return {}  # reconstruction errors are measured for every encoder by the evaluate stage


def optimizer(config) -> keras.optimizers.Optimizer:
    """The optimizer named in a model's params, at its learning rate."""
    return make_optimizer(config.optimizer, config.learning_rate, clip_norm=config.gradient_clip_norm)


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
    genlab.training.fit runs a whole epoch per call instead (3.3 s).
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
