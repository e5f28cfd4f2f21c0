"""The normalizing flow RealNVP (Dinh, Sohl-Dickstein and Bengio 2017, "Density estimation using Real NVP").

An invertible map f from images to Gaussian noise z = f(x) gives the exact likelihood by
the change of variables

    log p(x) = log N(f(x); 0, I) + log |det df/dx|.

f is a stack of affine couplings: each keeps the values under a mask m and scales and
shifts the others by functions of the kept ones,

    y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),   log |det| = sum((1 - m) * s),

with the mask flipped from one coupling to the next. Small images get dense couplings with
checkerboard masks. Larger ones get the paper's multi-scale architecture, with convolutional
couplings: at each scale a group of checkerboard couplings, a squeeze of every 2x2 block
of pixels into 4 channels, a group of couplings with channel masks (half of the channels
conditions the other half), and a split that factors out half of the channels as a part
of z. A last group of checkerboard couplings acts on what is left.

Before the flow, the discrete grey levels are dequantised with uniform noise and squeezed
through a logit, whose own log-determinant is counted. Samples invert the flow from
z ~ N(0, T^2 I) at temperature T and are mapped back to the grey level whose bin they fall in.

Conditional: the base distribution is the class's, z ~ N(mu_c, diag(sigma_c^2)) with a learned mean and
scale per class, and the couplings are shared (Glow's class-conditional prior: Kingma and Dhariwal 2018,
"Glow: Generative Flow with Invertible 1x1 Convolutions"); the likelihood is then log p(x|c), and sampling
inverts the flow from the class asked for.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from genlab.config.params import FlowParams, FlowPriorParams
from genlab.models.contract import LatentSpace, class_search_space
from genlab.models.networks import PerImageObjective, optimizer, prior_noise

LOG_2PI = math.log(2 * math.pi)


# --- masks and the squeeze ------------------------------------------------------------------------


def checkerboard(image_shape: tuple[int, ...], parity: int) -> np.ndarray:
    """1s on the squares where (row + column) % 2 == parity: (H*W,) for a flat image (H, W), or the
    pattern repeated over the channels of (H, W, C)."""
    rows, columns = np.indices(image_shape[:2])
    board = (((rows + columns) % 2) == parity).astype(np.float32)
    if len(image_shape) == 2:
        return board.reshape(-1)
    return np.repeat(board[:, :, None], image_shape[2], axis=2)


def channel_mask(shape: tuple[int, int, int], parity: int) -> np.ndarray:
    """(H, W, C): 1s on the first half of the channels (parity 0) or on the second half (parity 1)."""
    kept = np.arange(shape[2]) < shape[2] // 2
    return np.broadcast_to(kept != bool(parity), shape).astype(np.float32)


def squeeze(x):
    """(B, H, W, C) -> (B, H/2, W/2, 4C): every 2x2 block of pixels becomes 4 channels."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height // 2, 2, width // 2, 2, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height // 2, width // 2, 4 * channels))


def unsqueeze(x):
    """The inverse of `squeeze`: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height, width, 2, 2, channels // 4))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, 2 * height, 2 * width, channels // 4))


# --- the base distribution ------------------------------------------------------------------------------


class BaseDistribution(keras.layers.Layer):
    """p(z): standard normal, or for a conditional flow the class's Gaussian N(mu_c, diag(sigma_c^2)) with a
    learned mean and log-scale per class (zero at the start: standard normal for every class)."""

    def __init__(self, dims: int, num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dims, self.num_classes = dims, num_classes
        if num_classes:
            self.class_means = self.add_weight(shape=(num_classes, dims), initializer="zeros", name="class_means")
            self.class_log_scales = self.add_weight(shape=(num_classes, dims), initializer="zeros",
                                                    name="class_log_scales")
        self.built = True  # its weights, if any, are made here

    def _moments(self, condition):
        """The mean and log-scale (B, D) of the classes `condition` (one-hot or soft) picks."""
        return ops.matmul(condition, self.class_means), ops.matmul(condition, self.class_log_scales)

    def log_prob(self, z, condition=None):
        """log p(z) (or log p(z|c)) of (B, D) values: (B,)."""
        if condition is None:
            return ops.sum(-0.5 * ops.square(z) - 0.5 * LOG_2PI, axis=-1)
        mean, log_scale = self._moments(condition)
        standardised = (z - mean) * ops.exp(-log_scale)
        return ops.sum(-0.5 * ops.square(standardised) - log_scale - 0.5 * LOG_2PI, axis=-1)

    def draw(self, noise, condition=None, temperature: float = 1.0):
        """z from standard normal `noise` at temperature T: T noise, or mu_c + sigma_c T noise (differentiable)."""
        if condition is None:
            return temperature * noise
        mean, log_scale = self._moments(condition)
        return mean + ops.exp(log_scale) * temperature * noise


# --- the couplings -----------------------------------------------------------------------------------


def scale_shift_network(config: FlowParams, shape: tuple[int, ...], scale: int = 0) -> keras.Sequential:
    """The kept values -> raw log-scales and shifts of the same shape, side by side on the last axis:
    dense layers for a flat image (B, D) -> (B, 2D), or, as in RealNVP, 3x3 convolutions
    (B, H, W, C) -> (B, H, W, 2C) with conv_filters channels doubled at every coarser `scale` (a quarter of
    the pixels: each scale costs about the same, and the coarse ones, which draw the digit's shape, get
    the width). The last layer starts at zero: the coupling starts as the identity."""
    if len(shape) == 1:
        return keras.Sequential([*(keras.layers.Dense(units, activation="relu") for units in config.hidden_units),
                                 keras.layers.Dense(2 * shape[0], kernel_initializer="zeros")])
    return keras.Sequential([
        *(keras.layers.Conv2D(filters * 2**scale, 3, padding="same", activation="relu")
          for filters in config.conv_filters),
        keras.layers.Conv2D(2 * shape[-1], 3, padding="same", kernel_initializer="zeros"),
    ])


class AffineCoupling(keras.layers.Layer):
    """One RealNVP coupling: the masked values condition a scale and shift of the others."""

    def __init__(self, mask: np.ndarray, network: keras.Sequential, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype=np.float32)
        self.network = network
        # s = scale_factor * tanh(raw): bounded log-scales keep exp(s) well-conditioned. It starts at 1, so
        # that the zero-initialised raw scales get a gradient (at 0 neither factor would ever move).
        self.scale_factor = self.add_weight(shape=self.mask.shape, initializer="ones", name="scale_factor")

    def _scale_and_shift(self, kept):
        scale, shift = ops.split(self.network(kept), 2, axis=-1)
        scale = self.scale_factor * ops.tanh(scale)
        return scale * (1 - self.mask), shift * (1 - self.mask)

    def call(self, x):
        """x -> y and log |det dy/dx|: the same shape as x, and (B,)."""
        scale, shift = self._scale_and_shift(x * self.mask)
        y = x * self.mask + (1 - self.mask) * (x * ops.exp(scale) + shift)
        return y, ops.sum(ops.reshape(scale, (ops.shape(scale)[0], -1)), axis=-1)

    def inverse(self, y):
        scale, shift = self._scale_and_shift(y * self.mask)  # the kept half is unchanged: same s and t
        return y * self.mask + (1 - self.mask) * ((y - shift) * ops.exp(-scale))


SQUEEZE = "squeeze"  # the multi-scale step that trades pixels for channels


class Split(keras.layers.Layer):
    """RealNVP's factoring out: the first half of the channels leaves the flow as a part of z, the rest
    goes on to the next scale. RealNVP models the part that leaves as standard normal; with a learned
    prior (Glow, Kingma and Dhariwal 2018) it is Gaussian with a mean and log-scale predicted from the
    half that stays (a zero-initialised 3x3 convolution: standard normal at the start)."""

    def __init__(self, channels: int, learned_prior: bool, **kwargs):
        super().__init__(**kwargs)
        self.half = channels // 2
        self.prior = (keras.layers.Conv2D(2 * self.half, 3, padding="same", kernel_initializer="zeros")
                      if learned_prior else None)

    def call(self, x):
        """x -> (the half that stays, the standardised half that leaves, log |det| (B,))."""
        leaving, kept = x[..., :self.half], x[..., self.half:]
        if self.prior is None:
            return kept, leaving, ops.zeros(ops.shape(x)[:1])
        mean, log_scale = ops.split(self.prior(kept), 2, axis=-1)
        log_det = -ops.sum(ops.reshape(log_scale, (ops.shape(x)[0], -1)), axis=-1)
        return kept, (leaving - mean) * ops.exp(-log_scale), log_det

    def inverse(self, kept, leaving):
        if self.prior is not None:
            mean, log_scale = ops.split(self.prior(kept), 2, axis=-1)
            leaving = leaving * ops.exp(log_scale) + mean
        return ops.concatenate([leaving, kept], axis=-1)


def multi_scale_steps(config: FlowParams, image_shape: tuple[int, int]) -> list:
    """RealNVP's architecture for (H, W, 1) images: per scale, `num_couplings` checkerboard couplings,
    a squeeze, `num_couplings` channel-mask couplings and a split of half the channels; then a last
    group of `num_couplings` checkerboard couplings."""
    shape, steps = (*image_shape, 1), []

    def group(mask, scale: int):
        for index in range(config.num_couplings):
            name = f"coupling_{sum(isinstance(step, AffineCoupling) for step in steps)}"
            steps.append(AffineCoupling(mask(shape, index % 2), scale_shift_network(config, shape, scale), name=name))

    for scale in range(config.num_scales):
        group(checkerboard, scale)
        shape = (shape[0] // 2, shape[1] // 2, 4 * shape[2])
        steps.append(SQUEEZE)
        group(channel_mask, scale + 1)
        steps.append(Split(shape[2], config.learned_split_prior, name=f"split_{scale}"))
        shape = (*shape[:2], shape[2] // 2)
    group(checkerboard, config.num_scales)
    return steps


class RealNvp(PerImageObjective):
    """Owns the objective: the exact negative log-likelihood in bits per dimension."""

    likelihood = "exact"  # the change of variables gives log p(x) itself

    def __init__(self, steps: list, config: FlowParams, image_shape: tuple[int, int], shape: tuple[int, ...],
                 num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.config, self.image_shape = steps, config, tuple(image_shape)
        self.couplings = [step for step in steps if isinstance(step, AffineCoupling)]
        self.shape = tuple(shape)  # what the couplings act on: (D,) dense, (H, W, 1) multi-scale
        self.dims = int(np.prod(image_shape))
        self.noise = keras.random.SeedGenerator(config.seed)
        self.condition_on_classes(num_classes)
        self.base = BaseDistribution(self.dims, num_classes, name="base_distribution")

    def forward(self, x):
        """Logit-space x, flat (B, D) -> z (B, D) and the steps' summed log-determinant (B,). Each split
        factors out half of the channels into z; the rest goes on to the next scale."""
        x = ops.reshape(x, (-1, *self.shape))
        log_det = ops.zeros(ops.shape(x)[:1])
        factored = []
        for step in self.steps:
            if step == SQUEEZE:
                x = squeeze(x)
                continue
            if isinstance(step, Split):
                x, leaving, step_log_det = step(x)
                factored.append(ops.reshape(leaving, (ops.shape(x)[0], -1)))
            else:
                x, step_log_det = step(x)
            log_det = log_det + step_log_det
        return ops.concatenate([*factored, ops.reshape(x, (ops.shape(x)[0], -1))], axis=-1), log_det

    def inverse(self, z):
        """z (B, D) -> flat logit-space x (B, D): the steps backwards, each split taking its part of z back."""
        shapes, shape = [], self.shape  # the shape after every step, and what each split factored out
        for step in self.steps:
            if step == SQUEEZE:
                shape = (shape[0] // 2, shape[1] // 2, 4 * shape[2])
            elif isinstance(step, Split):
                shapes.append((*shape[:2], shape[2] // 2))
                shape = shapes[-1]
        sizes = [int(np.prod(part)) for part in shapes]
        offset = int(sum(sizes))
        x = ops.reshape(z[:, offset:], (-1, *shape))
        for step in reversed(self.steps):
            if step == SQUEEZE:
                x = unsqueeze(x)
            elif isinstance(step, Split):
                size, part = sizes.pop(), shapes.pop()
                offset -= size
                x = step.inverse(x, ops.reshape(z[:, offset:offset + size], (-1, *part)))
            else:
                x = step.inverse(x)
        return ops.reshape(x, (ops.shape(z)[0], self.dims))

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

    def bits_per_dim(self, images, condition=None):
        """-log2 p(x) / D (a conditional flow's -log2 p(x|c) / D) of the discrete images, per image: (B,)."""
        y = self.dequantise(images)
        x, logit_log_det = self.to_logit(y)
        z, flow_log_det = self.forward(x)
        log_py = self.base.log_prob(z, condition) + flow_log_det + logit_log_det
        nll = -log_py + self.dims * math.log(self.config.num_levels)  # a bin of width 1/L per dimension
        return nll / (self.dims * math.log(2))

    def call(self, images, training=False):
        return self.bits_per_dim(images)

    def per_image_loss(self, images, condition, training: bool):
        return self.bits_per_dim(images, condition)

    # --- what the stages use -----------------------------------------------------------------

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None,
               temperature: float | None = None) -> np.ndarray:
        """`count` images from z ~ N(0, T^2 I) (a conditional flow's class Gaussians) through the inverse flow,
        the same for the same seed."""
        temperature = self.config.temperature if temperature is None else temperature
        z = prior_noise(count, self.dims, seed)
        condition = self.conditions(count, seed, labels)
        dequantised = np.concatenate([
            np.asarray(self.from_logit(self.inverse(self.base.draw(
                z[start:start + 1024], None if condition is None else condition[start:start + 1024], temperature))))
            for start in range(0, count, 1024)])
        return self.quantise(dequantised).reshape(count, *self.image_shape)

    def quantise(self, y: np.ndarray) -> np.ndarray:
        """The dequantisation's inverse: the grey level k/(L-1) whose bin [k/L, (k+1)/L) holds y."""
        levels = self.config.num_levels
        return (np.clip(np.floor(y * levels), 0, levels - 1) / (levels - 1)).astype(np.float32)

    def latent_space(self):
        """The inverse flow from z = T w at the sampling temperature T, to dequantised pixels (PULSE's search);
        a conditional flow's from its classes' Gaussians, the class searched with w."""
        def decode(noise, condition=None):
            pixels = self.from_logit(self.inverse(self.base.draw(noise, condition, self.config.temperature)))
            return ops.reshape(pixels, (-1, *self.image_shape))
        if self.num_classes:
            return class_search_space(decode, self.dims, self.num_classes)
        return LatentSpace(decode, self.dims)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"sample": self.sample(len(images), seed=0)}

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The exact test NLL (one dequantisation draw per image), in bits per dimension and nats (a conditional
        flow's given the images' classes)."""
        bits = float(self.evaluate(images, labels if self.num_classes else images, batch_size=512, verbose=0,
                                   return_dict=True)["loss"])
        return {"test_nll_bits_per_dim": bits, "test_nll_nats": bits * self.dims * math.log(2)}


def build(config: FlowParams, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> RealNvp:
    """The compiled RealNVP described by `config`, for images of `image_shape` (from one of `num_classes` classes'
    Gaussians, for a conditional flow)."""
    if config.network_for(image_shape) == "dense":
        shape = (int(np.prod(image_shape)),)
        steps = [AffineCoupling(checkerboard(image_shape, index % 2), scale_shift_network(config, shape),
                                name=f"coupling_{index}")
                 for index in range(config.num_couplings)]
    else:
        shape = (*image_shape, 1)
        steps = multi_scale_steps(config, image_shape)
    model = RealNvp(steps, config, image_shape, shape, num_classes, name="flow")
    model(np.zeros((1, *image_shape), dtype=np.float32))  # create every coupling's weights
    model.compile(optimizer=optimizer(config), steps_per_execution=steps_per_execution)
    return model


# --- a prior over an encoder's codes (genlab.models.latent) ------------------------------------------


def code_masks(dims: int, count: int) -> list[np.ndarray]:
    """(dims,) masks for `count` couplings over a vector: the even and the odd entries, then the first and
    the second half, and so on, so that every entry conditions every other within four couplings."""
    halves = (np.arange(dims) < dims // 2).astype(np.float32)
    evens = (np.arange(dims) % 2 == 0).astype(np.float32)
    patterns = [evens, 1 - evens, halves, 1 - halves]
    return [patterns[index % 4] for index in range(count)]


class CodeFlow(PerImageObjective):
    """RealNVP over a vector of codes with a standard normal base: dense affine couplings (hidden_units),
    trained by the codes' exact negative log-likelihood. Sampling inverts it from N(0, T^2 I)."""

    def __init__(self, couplings: list[AffineCoupling], config: FlowPriorParams, dims: int, num_classes: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.couplings, self.config, self.dims = couplings, config, dims
        self.noise_dim = dims  # what sampling draws: as many numbers as the codes
        self.condition_on_classes(num_classes)
        self.base = BaseDistribution(dims, num_classes, name="base_distribution")

    def call(self, codes):
        z, log_det = codes, ops.zeros(ops.shape(codes)[:1])
        for coupling in self.couplings:
            z, step_log_det = coupling(z)
            log_det = log_det + step_log_det
        return z, log_det

    def per_image_loss(self, codes, condition=None, training: bool = False):
        """-log p(codes) / dims (a conditional prior's -log p(codes|c) / dims) in nats, per row of codes: (B,)."""
        z, log_det = self(codes)
        return -(self.base.log_prob(z, condition) + log_det) / self.dims

    def family_metrics(self, codes: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        condition = self.condition_or_blind(len(codes), labels)
        return {"test_prior_nll_nats_per_dim": float(np.mean(np.asarray(self.per_image_loss(codes, condition))))}

    def from_noise(self, noise, condition=None):
        """(B, dims) standard normal noise w (and a conditional prior's one-hot or soft classes) -> codes,
        through the inverse flow from z = T w or mu_c + sigma_c T w (differentiable)."""
        z = self.base.draw(ops.convert_to_tensor(noise), condition, self.config.temperature)
        for coupling in reversed(self.couplings):
            z = coupling.inverse(z)
        return z

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.from_noise(prior_noise(count, self.dims, seed), self.conditions(count, seed, labels)))

    def preview(self, count: int, seed: int) -> np.ndarray:
        """What the progress grid decodes while training: samples (one pass of the inverse)."""
        return self.sample(count, seed)


def build_prior(config: FlowPriorParams, dims: int, num_classes: int = 0) -> CodeFlow:
    """The compiled RealNVP over `dims` codes described by `config` (from one of `num_classes` classes' Gaussians,
    for a conditional prior)."""
    couplings = [AffineCoupling(mask, scale_shift_network(config, (dims,)), name=f"prior_coupling_{index}")
                 for index, mask in enumerate(code_masks(dims, config.num_couplings))]
    prior = CodeFlow(couplings, config, dims, num_classes, name="flow_prior")
    prior(np.zeros((1, dims), dtype=np.float32))  # create the couplings' weights
    prior.compile(optimizer=optimizer(config))
    return prior
