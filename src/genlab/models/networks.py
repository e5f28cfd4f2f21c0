"""The network pieces the families share: the encoder trunk and decoder head (dense for small images,
strided convolutions from 16x16), the optimizer a model's params name, a base class for the models
trained on one per-image loss, and the helpers that run a network over NumPy arrays and draw the
prior's noise."""

from __future__ import annotations

import keras
import numpy as np

from genlab.models.contract import FamilyModel, Generator
from genlab.training.devices import replica_share
from genlab.training.optimizers import make_optimizer


def build_encoder_trunk(images, hidden_units: tuple[int, ...], activation: str, conv_filters: tuple[int, ...] = (),
                        condition=None):
    """(B, H, W) images -> (B, features): 3x3 stride-2 convolutions that each halve the image
    (one per `conv_filters` entry, none for a dense network), then the hidden Dense layers; a conditional
    network's one-hot class (B, K) joins the flattened features before them."""
    h = images
    if conv_filters:
        h = keras.layers.Reshape((*image_size(images), 1))(h)
        for index, filters in enumerate(conv_filters):
            h = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation=activation,
                                    name=f"encoder_conv_{index}")(h)
    h = keras.layers.Flatten()(h)
    if condition is not None:
        h = keras.layers.Concatenate(name="with_class")([h, condition])
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


def condition_input(num_classes: int):
    """The one-hot class (B, K) of a conditional network, or None (0 classes: unconditional)."""
    return keras.Input(shape=(num_classes,), name="condition") if num_classes else None


def with_condition(code, condition):
    """(B, D) -> (B, D + K): the class joins a generator's input (a conditional GAN's noise, a CVAE's z)."""
    return code if condition is None else keras.layers.Concatenate(name="code_with_class")([code, condition])


def network_inputs(*inputs):
    """A keras.Model's inputs without the absent condition: one input alone, else the list."""
    present = [tensor for tensor in inputs if tensor is not None]
    return present[0] if len(present) == 1 else present


def image_size(images) -> tuple[int, int]:
    """(H, W) of a symbolic (B, H, W) batch of images."""
    return tuple(images.shape[1:3])


def optimizer(config) -> keras.optimizers.Optimizer:
    """The optimizer named in a model's params, at its learning rate."""
    return make_optimizer(config.optimizer, config.learning_rate, clip_norm=config.gradient_clip_norm)


class PerImageObjective(FamilyModel, keras.Model):
    """A model trained by minimising the mean of one per-image loss.

    Subclasses define `per_image_loss(images, condition, training) -> (B,)`, the condition a conditional
    model's one-hot classes (None otherwise). The flow (bits per dimension), DDPM (noise MSE) and PPCA are
    this; the metric averages per image, so a short last batch weighs by its size.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        import tensorflow as tf

        images, condition = batch_and_condition(self, data)
        with tf.GradientTape() as tape:
            per_image = self.per_image_loss(images, condition, training=True)
            loss = replica_share(keras.ops.mean(per_image))
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        self.loss_tracker.update_state(per_image)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        images, condition = batch_and_condition(self, data)
        self.loss_tracker.update_state(self.per_image_loss(images, condition, training=False))
        return {"loss": self.loss_tracker.result()}


def gaussian_fit(codes: np.ndarray, extra_covariance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and the Cholesky factor (D, D) of the covariance of (N, D) codes (plus `extra_covariance`),
    with a little jitter so that it exists for any codes."""
    codes = codes.astype(np.float64)
    covariance = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(codes.shape[1])
    if extra_covariance is not None:
        covariance = covariance + extra_covariance
    return codes.mean(axis=0).astype(np.float32), np.linalg.cholesky(covariance).astype(np.float32)


class ClassGaussians(keras.layers.Layer):
    """One Gaussian over the codes per class, fitted after training (saved with the model): how a model with
    a deterministic code (the autoencoder, PPCA's posterior means) is told the class, its prior p(z|c)."""

    def __init__(self, num_classes: int, dims: int, **kwargs):
        super().__init__(**kwargs)
        self.means = self.add_weight(shape=(num_classes, dims), initializer="zeros", trainable=False, name="means")
        self.scales = self.add_weight(shape=(num_classes, dims, dims), trainable=False, name="scales",
                                      initializer=lambda shape, dtype=None: np.array(np.broadcast_to(np.eye(dims), shape),
                                                                                         dtype="float32"))
        self.built = True  # its weights are made here

    def fit(self, codes: np.ndarray, labels: np.ndarray, extra_covariance: np.ndarray | None = None) -> None:
        fitted = [gaussian_fit(codes[labels == label], extra_covariance) for label in range(self.means.shape[0])]
        self.means.assign(np.stack([mean for mean, _ in fitted]))
        self.scales.assign(np.stack([scale for _, scale in fitted]))

    def draw(self, noise, condition, temperature: float = 1.0):
        """Codes mu_c + T L_c noise for (B, D) standard normal noise and one-hot (or soft, mixing them) classes."""
        means = keras.ops.matmul(condition, self.means)
        return means + temperature * keras.ops.einsum("bk,kde,be->bd", condition, self.scales, noise)


def batch_and_condition(model, data):
    """A training batch's images, and a conditional model's one-hot classes (None otherwise): fit gives
    (images, classes) to a conditional model (its `training_data`), (images, images) to the others."""
    images = data[0] if isinstance(data, tuple) else data
    if not model.num_classes:
        return images, None
    return images, keras.ops.one_hot(keras.ops.cast(data[1], "int32"), model.num_classes)


def trainable_parameters(model: keras.Model) -> int:
    """The numbers training learns (the lecture's "this simple model has 200K parameters!"): weights and
    biases, not an autoencoder's fitted Gaussian, batch-normalisation statistics or an optimizer's state; a
    family's own count where it has one (a prior over codes adds its frozen encoder's, whose decoder draws
    every sample)."""
    if isinstance(model, Generator):
        return model.num_parameters()
    return int(sum(np.prod(variable.shape) for variable in model.trainable_variables))


def predict_in_batches(network: keras.Model, inputs, batch_size: int = 1024):
    """network(inputs) in inference mode, as NumPy, a batch at a time; `inputs` one array, or a list of arrays
    for a network of several inputs (a conditional network's images or codes and their classes).

    A direct (eager) call: `Model.predict` builds a data pipeline per call, which costs more than
    a small network's forward pass (13x slower for 1000 8x8 samples, benchmarks/families.py), and
    `predict_on_batch` first traces a graph (0.2-0.5 s), which only a loop of many calls repays
    (the DDPM sampler's, see genlab.models.diffusion).
    """
    several = isinstance(inputs, (list, tuple))

    def rows(start: int):
        return ([part[start:start + batch_size] for part in inputs] if several
                else inputs[start:start + batch_size])

    count = len(inputs[0]) if several else len(inputs)
    batches = [network(rows(start), training=False) for start in range(0, count, batch_size)]
    if isinstance(batches[0], (list, tuple)):  # several outputs, e.g. a VAE encoder's mean and log-variance
        return [np.concatenate([np.asarray(batch[index]) for batch in batches]) for index in range(len(batches[0]))]
    return np.concatenate([np.asarray(batch) for batch in batches])


def prior_noise(count: int, dims: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """`count` draws of z ~ N(0, T^2 I) in `dims` dimensions at temperature T, the same for the same seed:
    what the VAE, the GAN and the flow sample from."""
    return temperature * np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
