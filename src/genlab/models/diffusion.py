"""Denoising diffusion (DDPM: Ho, Jain and Abbeel 2020, "Denoising Diffusion Probabilistic Models").

The forward process adds Gaussian noise over `num_timesteps` steps with variances beta_t,
in closed form

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),   alpha_bar_t = prod_{s<=t} (1 - beta_s).

A network eps(x_t, t) learns to predict the noise (the "simple" loss: mean squared error).
Sampling runs the reverse process from x_T ~ N(0, I): the ancestral DDPM step over every
timestep, or DDIM's deterministic step (Song, Meng and Ermon 2021) over fewer. The noise
schedule is kept apart from the network as pure functions, so the sampling loop reads
like the paper:  for t in timesteps: eps = net(x, t); x = step(x, eps, t).
The network is dense with a sinusoidal time embedding for small images, a small U-Net for larger.
Images are scaled from [0, 1] to [-1, 1] for the process and back for the caller.

Conditional, with classifier-free guidance (Ho and Salimans 2022, "Classifier-Free Diffusion Guidance"): the
network is also given the class, embedded and added to the time embedding; in training the class is dropped
(the null class, a zero one-hot) for a share of the images, so that the same network learns the unconditional
noise eps_u as well as the class's eps_c. Sampling steps with eps_u + s (eps_c - eps_u): s = 0 is the
unconditional model, s = 1 the conditional one, s > 1 pushes further toward what sets the class apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from genlab.config.params import DiffusionParams, DiffusionPriorParams
from genlab.models.networks import PerImageObjective, condition_input, network_inputs
from genlab.runtime import progress
from genlab.training.devices import compute_precision, dtype_policy
from genlab.training.optimizers import make_optimizer

PROGRESS_STEPS = 10  # DDIM steps of the progress grid logged during training (50 steps cost 7% of training)

# --- the noise schedule: pure functions -----------------------------------------------------------


@dataclass(frozen=True)
class NoiseSchedule:
    betas: np.ndarray  # (T,) beta_t for t = 0..T-1
    alphas_bar: np.ndarray  # (T,) prod_{s<=t} (1 - beta_s)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)


def noise_schedule(kind: str, num_timesteps: int) -> NoiseSchedule:
    """linear: Ho et al.'s 1e-4..0.02 over 1000 steps, rescaled to `num_timesteps`;
    cosine: Nichol and Dhariwal 2021, alpha_bar following cos^2. Betas are capped at 0.999."""
    if kind == "linear":
        scale = 1000 / num_timesteps
        betas = np.clip(np.linspace(1e-4 * scale, 0.02 * scale, num_timesteps, dtype=np.float64), 0.0, 0.999)
    else:
        offset = 0.008
        steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
        alpha_bar = np.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
        betas = np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
    return NoiseSchedule(betas.astype(np.float32), np.cumprod(1 - betas).astype(np.float32))


def q_sample(x0, t, noise, schedule: NoiseSchedule):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, for a (B,) batch of timesteps t."""
    alpha_bar = ops.take(ops.convert_to_tensor(schedule.alphas_bar), t)[:, None]  # (B, 1)
    return ops.sqrt(alpha_bar) * x0 + ops.sqrt(1 - alpha_bar) * noise


def predict_x0(x_t, eps, t: int, schedule: NoiseSchedule, data_range: float = 1.0):
    """The clean data implied by the predicted noise, clipped to the data range [-r, r] (as Ho et al. do for
    images in [-1, 1]); NumPy arrays or tensors (the latent search differentiates through it)."""
    alpha_bar = schedule.alphas_bar[t]
    x0 = (x_t - np.sqrt(1 - alpha_bar) * eps) / np.sqrt(alpha_bar)
    clip = np.clip if isinstance(x0, np.ndarray) else ops.clip
    return clip(x0, -data_range, data_range)


def ddpm_step(x_t: np.ndarray, eps: np.ndarray, t: int, schedule: NoiseSchedule, noise: np.ndarray,
              data_range: float = 1.0) -> np.ndarray:
    """One ancestral step x_t -> x_{t-1} ~ q(x_{t-1} | x_t, x_0): the posterior mean at the predicted x_0,
    plus sqrt(beta~_t) noise (none at t = 0)."""
    beta, alpha_bar = schedule.betas[t], schedule.alphas_bar[t]
    alpha_bar_prev = schedule.alphas_bar[t - 1] if t > 0 else 1.0
    x0 = predict_x0(x_t, eps, t, schedule, data_range)
    mean = (beta * np.sqrt(alpha_bar_prev) * x0 + (1 - alpha_bar_prev) * np.sqrt(1 - beta) * x_t) / (1 - alpha_bar)
    if t == 0:
        return mean
    posterior_variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return mean + np.sqrt(posterior_variance) * noise


def ddim_step(x_t, eps, t: int, t_prev: int, schedule: NoiseSchedule, data_range: float = 1.0):
    """One deterministic DDIM step x_t -> x_{t_prev} (eta = 0); t_prev = -1 means the clean data."""
    alpha_bar_prev = schedule.alphas_bar[t_prev] if t_prev >= 0 else 1.0
    x0 = predict_x0(x_t, eps, t, schedule, data_range)
    eps = (x_t - np.sqrt(schedule.alphas_bar[t]) * x0) / np.sqrt(1 - schedule.alphas_bar[t])  # consistent with x0
    return np.sqrt(alpha_bar_prev) * x0 + np.sqrt(1 - alpha_bar_prev) * eps


def ddim_timesteps(start: int, count: int) -> list[int]:
    """`count` timesteps from `start` down to 0, evenly spaced (fewer when they round to the same step)."""
    return list(dict.fromkeys(int(t) for t in np.linspace(start, 0, max(1, count)).round()))


def noised(x0: np.ndarray, t: int, noise: np.ndarray, schedule: NoiseSchedule) -> np.ndarray:
    """q(x_t | x_0) for one timestep t; t = -1 is the clean image itself."""
    if t < 0:
        return x0
    alpha_bar = schedule.alphas_bar[t]
    return np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * noise


# --- restoration: the reverse process conditioned on a degraded image (genlab.evaluation.restoration) -----------


def ilvr_replace(x: np.ndarray, reference_t: np.ndarray, low_pass) -> np.ndarray:
    """ILVR (Choi et al. 2021, "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models"):
    x_{t-1} keeps its own high frequencies and takes the low-pass part of the reference noised to the same
    step, x - phi(x) + phi(y_{t-1}); phi down- and upscales."""
    return x - low_pass(x) + low_pass(reference_t)


def replace_seen(x: np.ndarray, reference_t: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models"),
    without its resampling: the seen pixels come from the reference noised to the same step, the hidden
    ones from the model's step."""
    return mask * reference_t + (1 - mask) * x


def sdedit_start(noisy: np.ndarray, sigma: float, schedule: NoiseSchedule, noise: np.ndarray) -> tuple[int, np.ndarray]:
    """SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
    Equations") for a noisy image y = x_0 + sigma eps (in the process's units): the first timestep t whose
    noise level sqrt((1 - alpha_bar_t) / alpha_bar_t) reaches sigma, and x_t = sqrt(alpha_bar_t) y topped up
    with just the noise that the step has beyond sigma. Denoising from there removes the noise."""
    level = np.sqrt((1 - schedule.alphas_bar) / schedule.alphas_bar)
    t = int(min(np.searchsorted(level, sigma), schedule.num_timesteps - 1))
    alpha_bar = schedule.alphas_bar[t]
    extra = max(0.0, 1 - alpha_bar - alpha_bar * sigma**2)
    return t, np.sqrt(alpha_bar) * noisy + np.sqrt(extra) * noise


# --- the network ---------------------------------------------------------------------------------


class SinusoidalEmbedding(keras.layers.Layer):
    """Timestep t -> [sin(t w_k), cos(t w_k)] with frequencies w_k spaced geometrically (as in transformers)."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.frequencies = np.exp(-math.log(10_000) * np.arange(dim // 2) / (dim // 2)).astype(np.float32)

    def call(self, t):
        angles = ops.cast(ops.reshape(t, (-1, 1)), "float32") * self.frequencies  # (B, dim/2)
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


def step_embedding(t, condition, time_embedding_dim: int):
    """What every layer of the noise predictor is told of the step: the time embedding, plus a conditional
    network's class embedding (a linear map without bias of the one-hot: the null class adds nothing)."""
    embedding = keras.layers.Dense(time_embedding_dim, activation="swish")(SinusoidalEmbedding(time_embedding_dim)(t))
    if condition is None:
        return embedding
    class_embedding = keras.layers.Dense(time_embedding_dim, use_bias=False, name="class_embedding")(condition)
    return keras.layers.Add(name="time_and_class")([embedding, class_embedding])


def build_dense_network(dims: int, hidden_units: tuple[int, ...], time_embedding_dim: int,
                        num_classes: int = 0) -> keras.Model:
    """eps(x_t, t) (or eps(x_t, t, c)) for flattened small images: each hidden layer sees the step's embedding."""
    x_t = keras.Input(shape=(dims,), name="x_t")
    t = keras.Input(shape=(), dtype="int32", name="t")
    condition = condition_input(num_classes)
    embedding = step_embedding(t, condition, time_embedding_dim)
    h = x_t
    for index, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation="swish", name=f"hidden_{index}")(
            keras.layers.Concatenate()([h, embedding]))
    # the output in float32, as Keras's mixed precision advises (the same arithmetic under float32)
    eps = keras.layers.Dense(dims, name="eps", dtype="float32")(h)
    return keras.Model(network_inputs(x_t, t, condition), eps, name="noise_predictor")


def residual_block(h, embedding, filters: int, name: str):
    """Two 3x3 convolutions with the time embedding added between them, and a skip connection."""
    shortcut = h if h.shape[-1] == filters else keras.layers.Conv2D(filters, 1, name=f"{name}_shortcut")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="swish", name=f"{name}_conv_0")(h)
    time = keras.layers.Reshape((1, 1, filters))(keras.layers.Dense(filters, name=f"{name}_time")(embedding))
    h = keras.layers.GroupNormalization(groups=math.gcd(8, filters), name=f"{name}_norm")(keras.layers.Add()([h, time]))
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="swish", name=f"{name}_conv_1")(h)
    return keras.layers.Add()([shortcut, h])


def build_unet(image_shape: tuple[int, int], conv_filters: tuple[int, ...], time_embedding_dim: int,
               patch_size: int = 1, num_classes: int = 0) -> keras.Model:
    """eps(x_t, t) for larger images: a lean U-Net. The image is first cut into patch_size x patch_size
    patches stacked as channels (28x28 -> 14x14x4 for 2), so that no convolution runs at full resolution
    on a CPU; level i then works at 1/2^i of that size with conv_filters[i] channels: a residual block
    and a stride-2 convolution down on each level but the last, which is the middle; the way up doubles
    the size, joins the level's skip and runs a residual block; the noise is put back from patches. Every
    residual block is told the step's embedding (time, and a conditional network's class)."""
    height, width = image_shape
    dims, rows, columns = height * width, height // patch_size, width // patch_size
    x_t = keras.Input(shape=(dims,), name="x_t")
    t = keras.Input(shape=(), dtype="int32", name="t")
    condition = condition_input(num_classes)
    embedding = step_embedding(t, condition, time_embedding_dim)
    h = keras.layers.Reshape((rows, patch_size, columns, patch_size))(x_t)  # (B, H/p, p, W/p, p)
    h = keras.layers.Reshape((rows, columns, patch_size**2))(keras.layers.Permute((1, 3, 2, 4))(h))
    h = keras.layers.Conv2D(conv_filters[0], 3, padding="same", name="stem")(h)
    skips = []
    for level, filters in enumerate(conv_filters[:-1]):
        h = residual_block(h, embedding, filters, name=f"down_{level}")
        skips.append(h)
        h = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"downsample_{level}")(h)
    h = residual_block(h, embedding, conv_filters[-1], name="middle")
    for level in reversed(range(len(conv_filters) - 1)):
        h = keras.layers.UpSampling2D(2, name=f"upsample_{level}")(h)
        h = residual_block(keras.layers.Concatenate()([h, skips[level]]), embedding, conv_filters[level],
                           name=f"up_{level}")
    # (B, H/p, W/p, p*p), in float32 as Keras's mixed precision advises (the same arithmetic under float32)
    eps = keras.layers.Conv2D(patch_size**2, 3, padding="same", name="eps", dtype="float32")(h)
    eps = keras.layers.Permute((1, 3, 2, 4))(keras.layers.Reshape((rows, columns, patch_size, patch_size))(eps))
    return keras.Model(network_inputs(x_t, t, condition), keras.layers.Reshape((dims,))(eps), name="noise_predictor")


# --- the objective ---------------------------------------------------------------------------------


def noise_error(network: keras.Model, x0, schedule: NoiseSchedule, seed, training: bool, condition=None,
                condition_dropout: float = 0.0):
    """The simple loss of Ho et al.: |eps - eps(x_t, t)|^2 at a random t per row of x0 (B, D), and that t:
    (B,), (B,). A conditional network is given the one-hot classes, each dropped to the null class (zeros)
    with probability `condition_dropout` (classifier-free guidance's training)."""
    t = keras.random.randint(ops.shape(x0)[:1], 0, schedule.num_timesteps, seed=seed)
    noise = keras.random.normal(ops.shape(x0), seed=seed)
    if condition is not None:
        condition = ops.convert_to_tensor(condition)
    if condition is not None and condition_dropout > 0:
        kept = keras.random.uniform(ops.shape(x0)[:1], seed=seed) >= condition_dropout
        condition = condition * ops.cast(kept, condition.dtype)[:, None]
    eps = network(network_inputs(q_sample(x0, t, noise, schedule), t, condition), training=training)
    return ops.mean(ops.square(noise - ops.cast(eps, noise.dtype)), axis=-1), t


def guided_noise(predict, x, t, condition, guidance_scale: float):
    """The noise a sampler steps with, from `predict([x_t, t(, condition)])` (NumPy arrays or tensors):
    unconditional eps(x_t, t); conditional, classifier-free guidance eps_u + s (eps_c - eps_u), the two from
    one call over the batch twice (the classes, then the null class), or one of them alone at s = 0 or 1."""
    if condition is None:
        return predict([x, t])
    if guidance_scale == 1:
        return predict([x, t, condition])
    null = condition * 0.0
    if guidance_scale == 0:
        return predict([x, t, null])
    join = np.concatenate if isinstance(x, np.ndarray) else ops.concatenate
    both = predict([join([x, x]), join([t, t]), join([condition, null])])
    count = len(x) if isinstance(x, np.ndarray) else ops.shape(x)[0]
    conditional, unconditional = both[:count], both[count:]
    return unconditional + guidance_scale * (conditional - unconditional)


def min_snr_weighted(error, t, schedule: NoiseSchedule, gamma: float | None):
    """The noise error, or with gamma weighted by min(SNR_t, gamma) / SNR_t (Hang et al. 2023, "Efficient
    Diffusion Training via Min-SNR Weighting"): the nearly clean timesteps, whose noise is hard to see and
    matters little to a sample, count less, and the samples improve in fewer steps."""
    if gamma is None:
        return error
    snr = ops.take(ops.convert_to_tensor(schedule.alphas_bar / (1 - schedule.alphas_bar)), t)
    return error * ops.minimum(snr, gamma) / snr


# --- the model -----------------------------------------------------------------------------------


class Ddpm(PerImageObjective):
    """Owns the objective: MSE between the added noise and the predicted noise at a random timestep."""

    def __init__(self, network: keras.Model, config: DiffusionParams, image_shape: tuple[int, int],
                 num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.network, self.config, self.image_shape = network, config, tuple(image_shape)
        self.schedule = noise_schedule(config.schedule, config.num_timesteps)
        self.dims = int(np.prod(image_shape))
        self.noise = keras.random.SeedGenerator(config.seed)
        self.condition_on_classes(num_classes)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def noise_error(self, images, training: bool, condition=None):
        """The simple loss of Ho et al. per image, and its timesteps: (B,), (B,) (a conditional model's given the
        one-hot classes, some dropped to the null class while training)."""
        x0 = ops.reshape(images, (ops.shape(images)[0], self.dims)) * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        dropout = self.config.condition_dropout if training else 0.0
        return noise_error(self.network, x0, self.schedule, self.noise, training, condition, dropout)

    def per_image_loss(self, images, condition, training: bool):
        return min_snr_weighted(*self.noise_error(images, training, condition), self.schedule,
                                self.config.min_snr_gamma)

    def blind_condition(self, count: int) -> np.ndarray:
        """Not told the class, a conditional DDPM is its own unconditional model: the null class."""
        return np.zeros((count, self.num_classes), np.float32)

    # --- sampling: the reverse process, as in the paper ------------------------------------------

    def _eps(self, x: np.ndarray, t: int, condition: np.ndarray | None = None) -> np.ndarray:
        # Keras's compiled predict function: 7x faster than an eager call on 10 images, which repays its
        # one-off tracing over the sampler's tens to thousands of calls
        return guided_noise(self.network.predict_on_batch, x, np.full(len(x), t, dtype=np.int32), condition,
                            self.config.guidance_scale)

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None, sampler: str | None = None,
               keep_every: int = 0, num_steps: int | None = None) -> np.ndarray:
        """`count` images from x_T ~ N(0, I), the same for the same seed (and the trajectory if asked); a
        conditional model's of the classes `labels`, guided by the config's guidance_scale. DDIM takes
        `num_steps` steps, by default the config's num_inference_steps."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((count, self.dims)).astype(np.float32)
        condition = self.conditions(count, seed, labels)
        trajectory = [x]
        if (sampler or self.config.sampler) == "ddpm":
            for t in progress.bar(reversed(range(self.config.num_timesteps)), desc=f"DDPM sampling {count} images",
                                  total=self.config.num_timesteps, unit="step"):
                x = ddpm_step(x, self._eps(x, t, condition), t, self.schedule,
                              rng.standard_normal(x.shape).astype(np.float32))
                if keep_every and t % keep_every == 0:
                    trajectory.append(x)
        else:
            timesteps = ddim_timesteps(self.config.num_timesteps - 1, num_steps or self.config.num_inference_steps)
            for t, t_prev in progress.bar(zip(timesteps, timesteps[1:] + [-1]), desc=f"DDIM sampling {count} images",
                                          total=len(timesteps), unit="step"):
                x = ddim_step(x, self._eps(x, t, condition), t, t_prev, self.schedule)
        images = self._to_images(x)
        return (images, [self._to_images(step) for step in trajectory]) if keep_every else images

    def guided_restore(self, degradation, seed: int, sampler: str = "ddpm") -> np.ndarray:
        """Restore a genlab.evaluation.restoration.Degradation with the reverse process conditioned on it: ILVR for
        upsampling, RePaint's replacement for inpainting, SDEdit for denoising. `sampler` ddpm: ancestral
        steps over every timestep, as the papers do; ddim: the config's num_inference_steps, deterministic
        between the replacements (on the digits: 0.73 against 0.77 of pixelated digits kept, 0.54 against 0.66
        of half-hidden ones, at a quarter of the time). A conditional model is not told the class: it restores
        with its unconditional noise (the null class). Returns (N, H, W) images in [0, 1]."""
        rng = np.random.default_rng(seed)
        count, shape = len(degradation.observed), self.image_shape
        condition = self.condition_or_blind(count, None)
        reference = (2.0 * degradation.shown.reshape(count, self.dims) - 1.0).astype(np.float32)  # [0, 1] -> [-1, 1]
        x = rng.standard_normal((count, self.dims)).astype(np.float32)
        start = self.config.num_timesteps - 1

        def noised_reference(t_prev):  # the reference noised to the step just taken, with fresh noise
            return noised(reference, t_prev, rng.standard_normal(reference.shape).astype(np.float32), self.schedule)

        def low_pass(x):  # the upscaled low-resolution image is its own low pass
            return degradation.project(x.reshape(-1, *shape)).reshape(len(x), self.dims)

        if degradation.pooled:  # upsample, uninformative
            def guide(x, t_prev):
                return ilvr_replace(x, noised_reference(t_prev), low_pass)
        elif degradation.mask is not None:
            mask = degradation.mask.reshape(count, self.dims)

            def guide(x, t_prev):
                return replace_seen(x, noised_reference(t_prev), mask)
        else:  # denoise: the noise is 2 sigma in the process's units; the sampler alone removes it
            start, x = sdedit_start(reference, 2.0 * degradation.sigma, self.schedule, x)

            def guide(x, t_prev):
                return x
        if sampler == "ddpm":
            for t in range(start, -1, -1):
                noise = rng.standard_normal(x.shape).astype(np.float32)
                x = guide(ddpm_step(x, self._eps(x, t, condition), t, self.schedule, noise), t - 1).astype(np.float32)
            return self._to_images(x)
        steps = max(1, round(self.config.num_inference_steps * (start + 1) / self.config.num_timesteps))
        timesteps = ddim_timesteps(start, steps)
        for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
            x = guide(ddim_step(x, self._eps(x, t, condition), t, t_prev, self.schedule), t_prev).astype(np.float32)
        return self._to_images(x)

    def _to_images(self, x: np.ndarray) -> np.ndarray:
        return ((np.clip(x, -1.0, 1.0) + 1.0) / 2.0).reshape(len(x), *self.image_shape).astype(np.float32)

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """A quick look while training: DDIM in at most PROGRESS_STEPS steps (evaluate shows the real sampler)."""
        steps = min(PROGRESS_STEPS, self.config.num_inference_steps)
        return {f"sample (DDIM, {steps} steps)": self.sample(len(images), seed=0, sampler="ddim", num_steps=steps)}

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """The denoising trajectory x_T -> x_0 of four samples, and DDIM samples from the same seed."""
        keep_every = max(1, self.config.num_timesteps // 9)
        _, trajectory = self.sample(4, seed=0, sampler="ddpm", keep_every=keep_every)
        rows = {f"sample {index + 1}": np.stack([step[index] for step in trajectory]) for index in range(4)}
        return {"trajectory.png": rows,
                "ddim_samples.png": {f"DDIM, {self.config.num_inference_steps} steps":
                                     self.sample(10, seed=0, sampler="ddim")}}

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The test noise-prediction loss (a conditional model's given the classes), and DDIM's sampling time
        beside the ancestral sampler's."""
        import time

        condition = self.condition_or_blind(len(images), labels)
        loss = float(np.mean(np.concatenate([
            np.asarray(self.noise_error(images[start:start + 512], False,
                                        None if condition is None else condition[start:start + 512])[0])
            for start in range(0, len(images), 512)])))
        started = time.perf_counter()
        self.sample(1000, seed=1, sampler="ddim")
        return {"test_noise_mse": loss, "ddim_sampling_seconds_per_1000": time.perf_counter() - started}


# --- a prior over an encoder's codes: latent diffusion (genlab.models.latent) ----------------------

CODE_RANGE = 5.0  # the clean codes are standardised: x_0 is clipped to 5 standard deviations, as images to [-1, 1]
# DDIM steps of the differentiable path that PULSE's search runs through: its gradient passes every step, so
# each one multiplies the search's cost (the sampler's 50 steps made a search on the digits take minutes)
SEARCH_STEPS = 10


class CodeDiffusion(PerImageObjective):
    """DDPM over a vector of standardised codes (latent diffusion: Rombach et al. 2022, "High-Resolution Image
    Synthesis with Latent Diffusion Models"): the dense noise predictor with its time embedding, the same
    schedule, objective and samplers as over pixels."""

    def __init__(self, network: keras.Model, config: DiffusionPriorParams, dims: int, num_classes: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.network, self.config, self.dims = network, config, dims
        self.noise_dim = dims  # x_T: as many numbers as the codes
        self.schedule = noise_schedule(config.schedule, config.num_timesteps)
        self.noise = keras.random.SeedGenerator(config.seed)
        self.condition_on_classes(num_classes)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def per_image_loss(self, codes, condition=None, training: bool = False):
        dropout = self.config.condition_dropout if training else 0.0
        error, t = noise_error(self.network, codes, self.schedule, self.noise, training, condition, dropout)
        return min_snr_weighted(error, t, self.schedule, self.config.min_snr_gamma)

    def family_metrics(self, codes: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        condition = self.condition_or_blind(len(codes), labels)
        return {"test_prior_noise_mse": float(np.mean(np.asarray(self.per_image_loss(codes, condition))))}

    def _timesteps(self, steps: int | None = None) -> list[int]:
        return ddim_timesteps(self.config.num_timesteps - 1, steps or self.config.num_inference_steps)

    def preview(self, count: int, seed: int) -> np.ndarray:
        """What the progress grid decodes while training: DDIM in at most PROGRESS_STEPS steps."""
        return self.sample(count, seed, num_steps=min(PROGRESS_STEPS, self.config.num_inference_steps),
                           sampler="ddim")

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None, num_steps: int | None = None,
               sampler: str | None = None) -> np.ndarray:
        """`count` codes from x_T ~ N(0, I) by the config's sampler, the same for the same seed (a conditional
        prior's of the classes `labels`, guided by the config's guidance_scale)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((count, self.dims)).astype(np.float32)
        condition = self.conditions(count, seed, labels)

        def eps(x, t):
            return np.asarray(guided_noise(lambda inputs: self.network(inputs, training=False), x,
                                           np.full(len(x), t, dtype=np.int32), condition, self.config.guidance_scale))

        if (sampler or self.config.sampler) == "ddpm":
            for t in reversed(range(self.config.num_timesteps)):
                noise = rng.standard_normal(x.shape).astype(np.float32)
                x = ddpm_step(x, eps(x, t), t, self.schedule, noise, CODE_RANGE).astype(np.float32)
            return x
        timesteps = self._timesteps(num_steps)
        for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
            x = ddim_step(x, eps(x, t), t, t_prev, self.schedule, CODE_RANGE).astype(np.float32)
        return x

    def from_noise(self, noise, condition=None):
        """(B, dims) standard normal x_T (and a conditional prior's one-hot or soft classes) -> codes by DDIM's
        deterministic steps, differentiably: the search's path, in at most SEARCH_STEPS steps."""
        timesteps = self._timesteps(min(SEARCH_STEPS, self.config.num_inference_steps))
        x = ops.convert_to_tensor(noise)
        for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
            eps = guided_noise(lambda inputs: self.network(inputs, training=False), x,
                               ops.full(ops.shape(x)[:1], t, dtype="int32"), condition, self.config.guidance_scale)
            x = ddim_step(x, eps, t, t_prev, self.schedule, CODE_RANGE)
        return x


def build_prior(config: DiffusionPriorParams, dims: int, num_classes: int = 0) -> CodeDiffusion:
    """The compiled DDPM over `dims` codes described by `config` (with Keras's weight EMA), told one of
    `num_classes` classes for a conditional prior."""
    network = build_dense_network(dims, config.hidden_units, config.time_embedding_dim, num_classes)
    prior = CodeDiffusion(network, config, dims, num_classes, name="diffusion_prior")
    prior(network_inputs(np.zeros((1, dims), np.float32), np.zeros((1,), np.int32),
                         np.zeros((1, num_classes), np.float32) if num_classes else None))  # build it
    prior.compile(optimizer=make_optimizer(config.optimizer, config.learning_rate, config.ema_decay,
                                           config.gradient_clip_norm))
    return prior


def build(config: DiffusionParams, image_shape: tuple[int, int], steps_per_execution: int = 32,
          num_classes: int = 0) -> Ddpm:
    """The compiled DDPM described by `config`, for images of `image_shape` (told one of `num_classes` classes,
    for a conditional model)."""
    with dtype_policy(compute_precision(config.precision)):  # the noise predictor's arithmetic
        if config.network_for(image_shape) == "conv":
            network = build_unet(image_shape, config.conv_filters, config.time_embedding_dim, config.patch_size,
                                 num_classes)
        else:
            network = build_dense_network(int(np.prod(image_shape)), config.hidden_units, config.time_embedding_dim,
                                          num_classes)
    model = Ddpm(network, config, image_shape, num_classes, name="diffusion")
    model(network_inputs(np.zeros((1, model.dims), np.float32), np.zeros((1,), np.int32),
                         np.zeros((1, num_classes), np.float32) if num_classes else None))  # build it
    # Keras's weight EMA, warmed up: training ends with the averaged weights in the model
    model.compile(optimizer=make_optimizer(config.optimizer, config.learning_rate, config.ema_decay,
                                           config.gradient_clip_norm),
                  steps_per_execution=steps_per_execution)
    return model
