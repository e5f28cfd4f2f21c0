"""The normalizing flow RealNVP (Dinh, Sohl-Dickstein and Bengio 2017, "Density estimation using Real NVP").

An invertible map f from images to Gaussian noise z = f(x) gives the exact likelihood by
the change of variables

    log p(x) = log N(f(x); 0, I) + log |det df/dx|.

f is a stack of affine couplings: each keeps the pixels under a checkerboard mask and
scales and shifts the others by functions of the kept ones,

    y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),   log |det| = sum((1 - m) * s),

with the mask flipped from one coupling to the next. Before the flow, the discrete grey
levels are dequantised with uniform noise and squeezed through a logit, whose own
log-determinant is counted. Samples invert the flow from z ~ N(0, T^2 I) at temperature T
and are mapped back to the grey level whose bin they fall in.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from genlab.models.autoencoder import optimizer
from genlab.params import FlowParams
from genlab.training import PerImageObjective

LOG_2PI = math.log(2 * math.pi)


def checkerboard(image_shape: tuple[int, int], parity: int) -> np.ndarray:
    """(H*W,) mask of 1s on the squares where (row + column) % 2 == parity."""
    rows, columns = np.indices(image_shape)
    return (((rows + columns) % 2) == parity).astype(np.float32).reshape(-1)


def scale_shift_network(config: FlowParams, image_shape: tuple[int, int]) -> keras.Sequential:
    """The kept pixels (B, H*W) -> raw log-scales and shifts (B, 2*H*W): dense layers, or, as in
    RealNVP, 3x3 convolutions over the image. The last layer starts at zero: the coupling starts as
    the identity."""
    dims = int(np.prod(image_shape))
    if config.network_for(image_shape) == "dense":
        return keras.Sequential([*(keras.layers.Dense(units, activation="relu") for units in config.hidden_units),
                                 keras.layers.Dense(2 * dims, kernel_initializer="zeros")])
    return keras.Sequential([
        keras.layers.Reshape((*image_shape, 1)),
        *(keras.layers.Conv2D(filters, 3, padding="same", activation="relu") for filters in config.conv_filters),
        keras.layers.Conv2D(2, 3, padding="same", kernel_initializer="zeros"),  # (B, H, W, [scale, shift])
        keras.layers.Permute((3, 1, 2)),  # (B, 2, H, W): all scales, then all shifts
        keras.layers.Reshape((2 * dims,)),
    ])


class AffineCoupling(keras.layers.Layer):
    """One RealNVP coupling: the masked half conditions a scale and shift of the other half."""

    def __init__(self, mask: np.ndarray, network: keras.Sequential, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype=np.float32)
        self.network = network
        self.scale_factor = self.add_weight(shape=(len(self.mask),), initializer="zeros", name="scale_factor")

    def _scale_and_shift(self, kept):
        scale, shift = ops.split(self.network(kept), 2, axis=-1)
        scale = self.scale_factor * ops.tanh(scale)  # bounded log-scales keep exp(s) well-conditioned
        return scale * (1 - self.mask), shift * (1 - self.mask)

    def call(self, x):
        """x -> y and log |det dy/dx|, (B, D) and (B,)."""
        scale, shift = self._scale_and_shift(x * self.mask)
        y = x * self.mask + (1 - self.mask) * (x * ops.exp(scale) + shift)
        return y, ops.sum(scale, axis=-1)

    def inverse(self, y):
        scale, shift = self._scale_and_shift(y * self.mask)  # the kept half is unchanged: same s and t
        return y * self.mask + (1 - self.mask) * ((y - shift) * ops.exp(-scale))


class RealNvp(PerImageObjective):
    """Owns the objective: the exact negative log-likelihood in bits per dimension."""

    def __init__(self, couplings: list[AffineCoupling], config: FlowParams, image_shape: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.couplings, self.config, self.image_shape = couplings, config, tuple(image_shape)
        self.dims = int(np.prod(image_shape))
        self.noise = keras.random.SeedGenerator(config.seed)

    def forward(self, x):
        """Flattened logit-space x (B, D) -> z and the couplings' summed log-determinant."""
        log_det = ops.zeros(ops.shape(x)[:1])
        for coupling in self.couplings:
            x, step_log_det = coupling(x)
            log_det = log_det + step_log_det
        return x, log_det

    def inverse(self, z):
        for coupling in reversed(self.couplings):
            z = coupling.inverse(z)
        return z

    def to_logit(self, y):
        """Dequantised pixels y in (0, 1) -> logit space, with the log-determinant of that map: (B, D), (B,)."""
        alpha = self.config.logit_alpha
        p = alpha + (1 - 2 * alpha) * y
        log_det = ops.sum(math.log(1 - 2 * alpha) - ops.log(p) - ops.log(1 - p), axis=-1)
        return ops.log(p) - ops.log(1 - p), log_det

    def from_logit(self, x):
        alpha = self.config.logit_alpha
        return (ops.sigmoid(x) - alpha) / (1 - 2 * alpha)

    def dequantise(self, images):
        """Grey levels k/(L-1) -> (k + u) / L with u ~ U[0, 1): a density on [0, 1]^D."""
        levels = self.config.num_levels
        flat = ops.reshape(images, (ops.shape(images)[0], self.dims))
        noise = keras.random.uniform(ops.shape(flat), seed=self.noise)
        return (ops.round(flat * (levels - 1)) + noise) / levels

    def bits_per_dim(self, images):
        """-log2 p(x) / D of the discrete images, per image: (B,)."""
        y = self.dequantise(images)
        x, logit_log_det = self.to_logit(y)
        z, flow_log_det = self.forward(x)
        log_pz = ops.sum(-0.5 * ops.square(z) - 0.5 * LOG_2PI, axis=-1)
        log_py = log_pz + flow_log_det + logit_log_det
        nll = -log_py + self.dims * math.log(self.config.num_levels)  # a bin of width 1/L per dimension
        return nll / (self.dims * math.log(2))

    def call(self, images, training=False):
        return self.bits_per_dim(images)

    def per_image_loss(self, images, training: bool):
        return self.bits_per_dim(images)

    # --- what the stages use -----------------------------------------------------------------

    def sample(self, count: int, seed: int, temperature: float | None = None) -> np.ndarray:
        """`count` images from z ~ N(0, T^2 I) through the inverse flow, the same for the same seed."""
        temperature = self.config.temperature if temperature is None else temperature
        z = temperature * np.random.default_rng(seed).standard_normal((count, self.dims)).astype(np.float32)
        dequantised = np.concatenate([np.asarray(self.from_logit(self.inverse(z[start:start + 1024])))
                                      for start in range(0, count, 1024)])
        return self.quantise(dequantised).reshape(count, *self.image_shape)

    def quantise(self, y: np.ndarray) -> np.ndarray:
        """The dequantisation's inverse: the grey level k/(L-1) whose bin [k/L, (k+1)/L) holds y."""
        levels = self.config.num_levels
        return (np.clip(np.floor(y * levels), 0, levels - 1) / (levels - 1)).astype(np.float32)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"sample": self.sample(len(images), seed=0)}

    def family_metrics(self, images: np.ndarray) -> dict[str, float]:
        """The exact test NLL (one dequantisation draw per image), in bits per dimension and nats."""
        bits = float(self.evaluate(images, images, batch_size=512, verbose=0, return_dict=True)["loss"])
        return {"test_nll_bits_per_dim": bits, "test_nll_nats": bits * self.dims * math.log(2)}


def build(config: FlowParams, image_shape: tuple[int, int], steps_per_execution: int = 32) -> RealNvp:
    """The compiled RealNVP described by `config`, for images of `image_shape`."""
    couplings = [AffineCoupling(checkerboard(image_shape, index % 2), scale_shift_network(config, image_shape),
                                name=f"coupling_{index}")
                 for index in range(config.num_couplings)]
    model = RealNvp(couplings, config, image_shape, name="flow")
    model(np.zeros((1, *image_shape), dtype=np.float32))  # create every coupling's weights
    model.compile(optimizer=optimizer(config), steps_per_execution=steps_per_execution)
    return model
