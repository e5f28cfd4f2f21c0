"""Image-to-image restoration, and the PULSE question: does restoring an image erase the rare ones?

PULSE (Menon et al. 2020, "Self-Supervised Photo Upsampling via Latent Space Exploration of
Generative Models") searches a GAN's latent space for an image whose downscale matches a pixelated
input; from a pixelated photo of Obama it made a white man. Here every model restores degraded test
images, and the judge says whether a restoration still shows the original's digit: erasure is a
degraded image of a rare class (or stroke style) that comes back as a common one.

Each task observes an image x through a linear operator A, y = A(x) (+ noise):

- upsample: A averages every `factor` x `factor` block (average pooling; PULSE's downscaling loss);
- inpaint_lower_half, inpaint_block: A keeps the pixels a mask leaves seen (the upper half, or all but a
  random square); a restoration keeps the seen pixels exactly and fills the hidden ones;
- denoise: A is the identity and y has additive Gaussian noise of standard deviation `sigma`;
- uninformative: A pools each image down to one pixel (or a few) per side, too little to tell its class. Not a
  restoration but the test of conditional proportional representation (genlab.evaluation.fairness): y says
  next to nothing, so the posterior's classes are the training data's, and a fair method's must be too.

A model restores in up to four ways (`methods`):

- search (decoders, as PULSE does): minimise the consistency loss |A(g(w)) - y|^2 over the model's
  sampling noise w with Adam, for every image and `restarts` starts at once in one compiled loop,
  keeping w on the sphere |w| = sqrt(latent_dim) where a standard normal's mass lies (PULSE's
  constraint: a prior penalty would pull w towards 0, the mode of the density but no typical sample);
  the best restart per image wins. g is the GAN's generator, the VAE's decoder, an autoencoder's
  decoder after its fitted Gaussian, and the flow's inverse at its sampling temperature;
- posterior (the same models): a sample from p(w | y) by annealed Langevin dynamics over the same noise
  (`latent_posterior`), where the search takes the best fit: the field's two answers to PULSE side by side;
- guided (DDPM): the reverse process conditioned on y (ILVR, RePaint, SDEdit: models/diffusion.py);
- encode (the autoencoders and the VAE, the plain baseline): decode the code of the degraded image.

The measures are pure functions: PSNR and SSIM (scikit-image), the consistency error, the share of
restorations whose digit the judge still recognises (identity kept; of the originals the judge itself
recognises, so that its own mistakes are not counted as the model's), per class and per stroke and slant
subgroup, erasure toward the majority: whether a class's kept share grows with its share of the
training data, against label permutations; and fairness as Jalal et al. define it (RDP, PR, and on the
uninformative task UCPR), each with its test, for the classes and the stroke subgroups.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genlab.models.contract import Encoder, GuidedRestorer, LatentSpace, Searchable

TASKS = ("upsample", "inpaint_lower_half", "inpaint_block", "denoise", "uninformative")
POOLED = ("upsample", "uninformative")  # the tasks whose operator is average pooling
PROBES = ("uninformative",)  # a test of fairness, not a restoration: left out of the summary's means
MORPHOMETRIC_SHIFTS = ("thickness", "slant")  # restoration minus original: does a thin 1 come back thick?


# --- the degradations: pure numpy --------------------------------------------------------------------


def downscale(images: np.ndarray, factor: int | tuple[int, int]) -> np.ndarray:
    """(N, H, W) -> (N, H/f, W/f): the mean of every f x f block (average pooling); `factor` an int, or one per
    side."""
    (rows, columns), (count, height, width) = _factors(factor), images.shape
    return images.reshape(count, height // rows, rows, width // columns, columns).mean(axis=(2, 4))


def upscale(images: np.ndarray, factor: int | tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, h f, w f): every pixel repeated f x f times (nearest neighbour)."""
    rows, columns = _factors(factor)
    return np.repeat(np.repeat(images, rows, axis=1), columns, axis=2)


def _factors(factor: int | tuple[int, int]) -> tuple[int, int]:
    return (factor, factor) if isinstance(factor, int | np.integer) else tuple(factor)


def lower_half_mask(count: int, image_shape: tuple[int, int]) -> np.ndarray:
    """(N, H, W): 1 on the upper half (seen), 0 on the lower half (hidden)."""
    mask = np.ones((count, *image_shape), dtype=np.float32)
    mask[:, image_shape[0] // 2:] = 0.0
    return mask


def block_mask(count: int, image_shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W): 0 on a square of `fraction` of the side at a random place in each image, 1 elsewhere."""
    side = max(1, round(fraction * min(image_shape)))
    rows = rng.integers(0, image_shape[0] - side + 1, count)
    columns = rng.integers(0, image_shape[1] - side + 1, count)
    mask = np.ones((count, *image_shape), dtype=np.float32)
    for index, (row, column) in enumerate(zip(rows, columns)):
        mask[index, row:row + side, column:column + side] = 0.0
    return mask


@dataclass(frozen=True)
class Degradation:
    """What a restorer is given: the task, its observation y and the operator's settings."""

    task: str
    observed: np.ndarray  # y: (N, H/f, W/f) for the pooled tasks, (N, H, W) otherwise
    image_shape: tuple[int, int]
    factor: int | tuple[int, int] = 1  # the pooling factor of upsample and uninformative (one per side)
    mask: np.ndarray | None = None  # (N, H, W), 1 where seen (inpainting)
    sigma: float = 0.0  # denoise's noise

    @property
    def pooled(self) -> bool:
        """Whether the operator is average pooling (upsample, uninformative)."""
        return self.task in POOLED

    @property
    def shown(self) -> np.ndarray:
        """The degraded image at full size, as a person (and an encoder) sees it: (N, H, W)."""
        if self.pooled:
            return upscale(self.observed, self.factor)
        return self.observed

    def project(self, images: np.ndarray) -> np.ndarray:
        """What of (N, H, W) images the observation keeps, at full size: upsampling's low pass (each block's
        mean, repeated), the seen pixels of an inpainting, the images themselves for denoising."""
        if self.pooled:
            return upscale(downscale(images, self.factor), self.factor)
        return images * self.mask if self.mask is not None else images

    def measure(self, images, ops=np):
        """A(x) for (N, H, W) images, in numpy or (ops=keras.ops) differentiably."""
        if self.pooled:
            (height, width), (rows, columns) = self.image_shape, _factors(self.factor)
            blocks = ops.reshape(images, (-1, height // rows, rows, width // columns, columns))
            return ops.mean(blocks, axis=(2, 4))
        return images * self.mask if self.mask is not None else images

    def consistency(self, images, observed=None, mask=None, ops=np):
        """The loss a restoration minimises: the mean squared error between A(x) and y over what is
        observed, per image (N,). `observed` and `mask` replace the degradation's own (for repeats)."""
        observed = self.observed if observed is None else observed
        mask = self.mask if mask is None else mask
        if mask is not None:  # the error on the seen pixels only
            squared = ops.square(images - observed) * mask
            return ops.sum(ops.reshape(squared, (ops.shape(squared)[0], -1)), axis=-1) / ops.maximum(
                ops.sum(ops.reshape(mask, (ops.shape(mask)[0], -1)), axis=-1), 1.0)
        difference = self.measure(images, ops) - observed
        return ops.mean(ops.reshape(ops.square(difference), (ops.shape(difference)[0], -1)), axis=-1)

    def keep_seen(self, restored: np.ndarray) -> np.ndarray:
        """An inpainting keeps what was seen and fills only the hidden pixels; other tasks pass through."""
        if self.mask is None:
            return restored
        return (self.mask * self.observed + (1 - self.mask) * restored).astype(np.float32)


def degrade(images: np.ndarray, task: str, factor: int, block_fraction: float, noise_sigma: float,
            seed: int, uninformative_pixels: int = 1) -> Degradation:
    """The degradation of (N, H, W) images in [0, 1] for one of TASKS; the same for the same seed."""
    shape = tuple(images.shape[1:3])
    rng = np.random.default_rng([seed, TASKS.index(task)])
    if task in POOLED:
        if task == "uninformative":
            factor = (shape[0] // uninformative_pixels, shape[1] // uninformative_pixels)
        return Degradation(task, downscale(images, factor).astype(np.float32), shape, factor=factor)
    if task in ("inpaint_lower_half", "inpaint_block"):
        mask = (lower_half_mask(len(images), shape) if task == "inpaint_lower_half"
                else block_mask(len(images), shape, block_fraction, rng))
        return Degradation(task, (images * mask).astype(np.float32), shape, mask=mask)
    if task == "denoise":
        noise = rng.standard_normal(images.shape).astype(np.float32)
        return Degradation(task, (images + noise_sigma * noise).astype(np.float32), shape, sigma=noise_sigma)
    raise ValueError(f"unknown restoration task {task!r}; valid tasks: {list(TASKS)}")


def stratified_subset(labels: np.ndarray, count: int | None) -> np.ndarray:
    """Indices of the first images of each class, each class in proportion to its size (at least one),
    in their original order: the same images every time, and the first of each class among them."""
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.extend(members[:max(1, round(count * len(members) / len(labels)))])
    return np.sort(np.asarray(chosen))


# --- PULSE's latent search ---------------------------------------------------------------------------


def latent_search(space: LatentSpace, degradation: Degradation, steps: int, restarts: int, learning_rate: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PULSE for one degradation: the best restart's images (N, H, W) and codes (N, dim); see `latent_searches`."""
    return latent_searches(space, [degradation], steps, restarts, learning_rate, seed)[0]


SEARCH_BATCH_VALUES = 1 << 22  # at most this many pixels (rows x pixels per image) searched together


def latent_searches(space: LatentSpace, degradations: list[Degradation], steps: int, restarts: int,
                    learning_rate: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """PULSE: for every image and `restarts` starts at once, Adam on w to minimise the consistency loss of
    decode(w), projected back onto the sphere |w| = sqrt(dim) after every step; the whole loop is one
    compiled TensorFlow function. Several degradations (the tasks) are searched together in one batch, one
    compiled loop for all of them (each code still gets only its own image's gradient, and each task the
    starts it would get alone), as many as SEARCH_BATCH_VALUES allows. Per degradation, the best restart's
    images (N, H, W) and codes (N, dim)."""
    found, batch, size = [], [], 0
    for degradation in degradations:
        values = restarts * len(degradation.observed) * int(np.prod(degradation.image_shape))
        if batch and size + values > SEARCH_BATCH_VALUES:
            found += _search_together(space, batch, steps, restarts, learning_rate, seed)
            batch, size = [], 0
        batch.append(degradation)
        size += values
    return found + (_search_together(space, batch, steps, restarts, learning_rate, seed) if batch else [])


def _search_together(space: LatentSpace, degradations: list[Degradation], steps: int, restarts: int,
                     learning_rate: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import keras
    import tensorflow as tf

    radius = float(np.sqrt(space.dim))

    def on_sphere(w):
        return radius * tf.math.l2_normalize(w, axis=-1)

    # rows: task by task; within a task, restart r of image i is row r * N + i
    counts = [len(degradation.observed) for degradation in degradations]
    bounds = [int(bound) for bound in np.cumsum([0] + [restarts * count for count in counts])]
    starts = np.concatenate([np.random.default_rng(seed).standard_normal((restarts * count, space.dim))
                             for count in counts]).astype(np.float32)
    observed = [np.concatenate([degradation.observed] * restarts) for degradation in degradations]
    masks = [None if degradation.mask is None else np.concatenate([degradation.mask] * restarts)
             for degradation in degradations]
    w = tf.Variable(on_sphere(starts))
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([w])

    def losses_of(codes):
        images = space.decode(codes)
        return [degradation.consistency(images[bounds[index]:bounds[index + 1]], observed[index], masks[index],
                                        ops=keras.ops) for index, degradation in enumerate(degradations)]

    @tf.function
    def search():
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.reduce_sum(losses) for losses in losses_of(w)])  # each code: its own gradient
            optimizer.apply_gradients([(tape.gradient(loss, w), w)])
            w.assign(on_sphere(w))
        return losses_of(w)

    found = []
    for index, losses in enumerate(search()):
        count = counts[index]
        best = np.asarray(losses).reshape(restarts, count).argmin(axis=0)
        rows = np.asarray(w)[bounds[index]:bounds[index + 1]].reshape(restarts, count, space.dim)
        codes = rows[best, np.arange(count)]
        images = np.asarray(space.decode(codes))
        found.append((np.clip(images, 0.0, 1.0).astype(np.float32), codes))
    return found


# --- posterior sampling in the latent space: annealed Langevin dynamics --------------------------------


def observed_values(degradation: Degradation) -> np.ndarray:
    """How many numbers the observation holds of each image (N,): the seen pixels, or the size of A(x)."""
    if degradation.mask is not None:
        return degradation.mask.reshape(len(degradation.mask), -1).sum(axis=1).astype(np.float32)
    return np.full(len(degradation.observed), np.prod(degradation.observed.shape[1:]), dtype=np.float32)


ANNEALED_SHARE = 0.5  # of the Langevin steps, the rest at the final noise level, where the samples are drawn


def noise_levels(observation_sigma: float, count: int) -> np.ndarray:
    """The annealing's observation noise, geometric from 1 (the prior nearly alone) down to `observation_sigma`
    over the first ANNEALED_SHARE of the steps, then `observation_sigma` itself."""
    annealed = max(1, round(ANNEALED_SHARE * count))
    levels = np.geomspace(max(1.0, observation_sigma), observation_sigma, annealed)
    return np.concatenate([levels, np.full(max(1, count) - annealed, observation_sigma)]).astype(np.float32)


def latent_posterior(space: LatentSpace, degradation: Degradation, steps: int, step_size: float,
                     observation_sigma: float, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Restorations drawn from the posterior p(w | y) over the model's standard normal noise w, by annealed
    Langevin dynamics (Song and Ermon 2019; as a latent-space posterior sampler, Jalal et al. 2021): the
    potential U(w) = |A(decode(w)) - y|^2 / (2 s^2) + |w|^2 / 2, the observation noise s annealed from 1 to
    `observation_sigma`, each step w <- w - e grad U + sqrt(2 e T) xi with e = step_size / (1 + n / s^2) for an
    observation of n numbers. `temperature` T 1 samples the posterior; 0 descends to its mode (MAP). Returns
    (N, H, W) images in [0, 1] and the (N, dim) codes."""
    import keras
    import tensorflow as tf

    count = len(degradation.observed)
    rng = np.random.default_rng(seed)
    w = tf.Variable(rng.standard_normal((count, space.dim)).astype(np.float32))
    values = tf.constant(observed_values(degradation))
    sigmas = tf.constant(noise_levels(observation_sigma, steps))
    noise = tf.constant(rng.standard_normal((max(1, steps), count, space.dim)).astype(np.float32))

    def potential(codes, sigma):
        error = degradation.consistency(space.decode(codes), ops=keras.ops) * values  # summed squares (N,)
        return error / (2.0 * sigma**2) + 0.5 * tf.reduce_sum(tf.square(codes), axis=-1)

    @tf.function
    def run():
        for step in tf.range(steps):
            sigma = sigmas[step]
            with tf.GradientTape() as tape:
                energy = tf.reduce_sum(potential(w, sigma))  # each code: its own gradient
            rate = (step_size / (1.0 + values / sigma**2))[:, None]  # (N, 1)
            w.assign(w - rate * tape.gradient(energy, w) + tf.sqrt(2.0 * rate * temperature) * noise[step])
        return w

    logger = tf.get_logger()  # one compiled loop per task and model: TensorFlow's retracing warning is expected
    level = logger.level
    logger.setLevel("ERROR")
    try:
        codes = np.asarray(run())
    finally:
        logger.setLevel(level)
    if not np.all(np.isfinite(codes)):
        raise FloatingPointError(f"posterior sampling diverged on the {degradation.task} task (non-finite codes); "
                                 f"lower restore.posterior_step_size (now {step_size:g})")
    return np.clip(np.asarray(space.decode(codes)), 0.0, 1.0).astype(np.float32), codes


# --- the restorers of a model -----------------------------------------------------------------------


def methods(model, settings) -> dict[str, Callable[[list[Degradation]], list[tuple[np.ndarray, float]]]]:
    """The ways `model` restores degradations: search, guided, encode (whichever it has), each returning per
    degradation (N, H, W) images in [0, 1] (an inpainting's seen pixels are put back by
    `Degradation.keep_seen`) and the seconds it took. The search does all tasks in one batch; each is given
    an equal share of its time."""
    found = {}
    if isinstance(model, Searchable):
        def search(degradations):
            started = time.perf_counter()
            restored = latent_searches(model.latent_space(), degradations, settings.search_steps,
                                       settings.search_restarts, settings.search_learning_rate, settings.seed)
            share = (time.perf_counter() - started) / len(degradations)
            return [(images, share) for images, _ in restored]
        found["search"] = search
        if settings.posterior_steps:
            found["posterior"] = _one_at_a_time(lambda degradation: latent_posterior(
                model.latent_space(), degradation, settings.posterior_steps, settings.posterior_step_size,
                settings.posterior_sigma, 1.0, settings.seed)[0])
    if isinstance(model, GuidedRestorer):
        found["guided"] = _one_at_a_time(lambda degradation: model.guided_restore(degradation, settings.seed,
                                                                                  settings.diffusion_sampler))
    if isinstance(model, Encoder):
        found["encode"] = _one_at_a_time(lambda degradation: np.clip(model.reconstruct(degradation.shown), 0.0, 1.0))
    return found


def _one_at_a_time(restore: Callable[[Degradation], np.ndarray]):
    def each(degradations):
        timed = []
        for degradation in degradations:
            started = time.perf_counter()
            restored = restore(degradation)
            timed.append((restored, time.perf_counter() - started))
        return timed
    return each


def restore_all(model, images: np.ndarray, settings) -> tuple[dict[str, Degradation], dict[tuple[str, str], tuple]]:
    """Every task of `settings.tasks` by every method of the model: the degradations, and per (task, method)
    the raw restorations (before `keep_seen`) with the seconds they took."""
    factor = settings.factor_for(images.shape[1:3])
    degradations = {task: degrade(images, task, factor, settings.block_fraction, settings.noise_sigma, settings.seed,
                                  settings.uninformative_pixels)
                    for task in settings.tasks}
    restorations = {}
    for method, restore in methods(model, settings).items():
        for task, restored in zip(degradations, restore(list(degradations.values()))):
            restorations[task, method] = restored
    return degradations, restorations


# --- the measures: pure numpy -------------------------------------------------------------------------


def fidelity(originals: np.ndarray, restored: np.ndarray) -> dict[str, np.ndarray]:
    """PSNR (dB) and SSIM of each restoration against its original, by scikit-image, for images in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    side = min(originals.shape[1:3])
    window = min(7, side if side % 2 else side - 1)  # scikit-image's default 7, or the largest odd one that fits
    with np.errstate(divide="ignore"):  # an exact restoration: infinite PSNR, capped below
        psnr = [peak_signal_noise_ratio(original, image, data_range=1.0)
                for original, image in zip(originals, restored)]
    ssim = [structural_similarity(original, image, data_range=1.0, win_size=window)
            for original, image in zip(originals, restored)]
    # capped at 100 dB, so that means stay finite
    return {"psnr": np.minimum(np.asarray(psnr, dtype=np.float64), 100.0), "ssim": np.asarray(ssim, dtype=np.float64)}


def _correlations(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's correlation of each row of (P, K) `rows` with y (K,); 0 where either is constant."""
    x, y = rows - rows.mean(axis=-1, keepdims=True), y - y.mean()
    scale = np.linalg.norm(x, axis=-1) * np.linalg.norm(y)
    return np.divide(x @ y, scale, out=np.zeros(len(x)), where=scale > 1e-12)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    return float(_correlations(x[None], y)[0])


def erasure(labels: np.ndarray, restored_labels: np.ndarray, recognised: np.ndarray, training_shares: np.ndarray,
            permutations: int, seed: int) -> dict:
    """Erasure toward the majority, from the true labels, the judge's labels of the restorations and
    which originals the judge recognises (only those count):

    - kept per class, and its Pearson correlation and least-squares slope against the classes' training
      shares; the chance level is the share of `permutations` random reassignments of the shares to the
      classes whose correlation reaches the measured one (a small value: the rare classes are kept less);
    - the rarest training class's kept share against the mean of the others' (`rarest_class_gap`, >0: less),
      with its noise level: two binomial standard errors of the rarest class's share at the others' rate;
    - toward_majority: of the mislabelled restorations, the share labelled as a class with more training
      data than the true one, beside its chance level if the wrong labels were spread evenly over the
      other classes; and per class where its mislabelled restorations went (the most frequent label)."""
    num_classes = len(training_shares)
    counted = recognised.astype(bool)
    kept_per_class = np.full(num_classes, np.nan)
    for label in range(num_classes):
        members = counted & (labels == label)
        if members.any():
            kept_per_class[label] = float(np.mean(restored_labels[members] == label))
    present = ~np.isnan(kept_per_class)
    shares, kept = training_shares[present], kept_per_class[present]
    correlation = _correlation(shares, kept)
    rng = np.random.default_rng(seed)
    permuted = shares[np.argsort(rng.random((permutations, len(shares))), axis=1)]  # (P, classes), each a permutation
    null = _correlations(permuted, kept)
    slope = float(np.polyfit(shares, kept, 1)[0]) if np.std(shares) > 0 and len(kept) > 1 else 0.0
    rarest = int(np.argmin(np.where(present, training_shares, np.inf)))
    others = np.delete(kept_per_class, rarest)
    wrong = counted & (restored_labels != labels)
    larger = training_shares[None, :] > training_shares[labels[wrong]][:, None]  # (errors, classes)
    erased_to = {}
    for label in range(num_classes):
        went = restored_labels[wrong & (labels == label)]
        if len(went):
            target = int(np.bincount(went, minlength=num_classes).argmax())
            erased_to[str(label)] = {"to": target, "share_of_errors": float(np.mean(went == target)),
                                     "errors": int(len(went))}
    return {"kept_share_correlation": correlation, "kept_share_correlation_chance": float(np.mean(null >= correlation)),
            "kept_share_slope": slope, "rarest_class": rarest, "rarest_class_kept": float(kept_per_class[rarest]),
            "other_classes_kept": float(np.nanmean(others)) if np.any(~np.isnan(others)) else float("nan"),
            "rarest_class_gap": float(np.nanmean(others) - kept_per_class[rarest]) if np.any(~np.isnan(others))
            else float("nan"),
            "rarest_class_gap_noise": float(2 * np.sqrt(np.nanmean(others) * (1 - np.nanmean(others))
                                                        / max(1, int(np.sum(counted & (labels == rarest)))))),
            "mislabelled": int(wrong.sum()),
            "toward_majority": float(np.mean(training_shares[restored_labels[wrong]] > training_shares[labels[wrong]]))
            if wrong.any() else float("nan"),
            "toward_majority_chance": float(np.mean(larger.sum(axis=1) / (num_classes - 1))) if wrong.any()
            else float("nan"),
            "per_class_kept": {str(label): float(value) for label, value in enumerate(kept_per_class)
                               if value == value},
            "erased_to": erased_to}


def identity(labels: np.ndarray, original_labels: np.ndarray, restored_labels: np.ndarray,
             num_classes: int) -> dict:
    """Does a restoration still show its digit? The judge's accuracy on the originals, the share of
    restorations it labels with the true label (raw) and that share among the originals it recognises
    (kept: the judge's own mistakes are not the model's), per class, with the worst class."""
    recognised = original_labels == labels
    per_class = {}
    for label in range(num_classes):
        members = labels == label
        if members.any():
            counted = members & recognised
            per_class[str(label)] = {
                "images": int(members.sum()), "judge_accuracy": float(recognised[members].mean()),
                "raw_kept": float(np.mean(restored_labels[members] == label)),
                "kept": float(np.mean(restored_labels[counted] == label)) if counted.any() else float("nan")}
    worst = min((name for name in per_class if per_class[name]["kept"] == per_class[name]["kept"]),
                key=lambda name: per_class[name]["kept"])
    return {"identity_kept": float(np.mean(restored_labels[recognised] == labels[recognised])),
            "raw_identity_kept": float(np.mean(restored_labels == labels)),
            "judge_accuracy": float(recognised.mean()), "worst_class": int(worst),
            "worst_class_kept": per_class[worst]["kept"],
            "worst_class_judge_accuracy": per_class[worst]["judge_accuracy"],
            "per_class": per_class}


def subgroup_identity(labels: np.ndarray, original_labels: np.ndarray, restored_labels: np.ndarray,
                      original_groups, restored_groups, original_measures, restored_measures) -> dict:
    """The same per stroke and slant subgroup of the originals (the audit's groups): identity kept, the
    share of restorations drawn in the original's subgroup, and the mean morphometric shift (restoration
    minus original) of thickness and slant; with the subgroup whose identity is kept least."""
    recognised = original_labels == labels
    per_group = {}
    for column in ("stroke_group", "slant_group"):
        for name in sorted(set(original_groups[column])):
            members = (original_groups[column] == name).to_numpy()
            counted = members & recognised
            shifts = {f"{measure}_shift": float(np.nanmean((restored_measures[measure] - original_measures[measure])
                                                            .to_numpy()[members])) for measure in MORPHOMETRIC_SHIFTS}
            per_group[name] = {"images": int(members.sum()),
                               "kept": float(np.mean(restored_labels[counted] == labels[counted]))
                               if counted.any() else float("nan"),
                               "same_subgroup": float(np.mean((restored_groups[column] == name).to_numpy()[members]))
                               } | shifts
    per_cell = {}  # the same per class and subgroup: a thin 7 is not a thin 1
    for column in ("stroke_group", "slant_group"):
        for label in np.unique(labels):
            for name in sorted(set(original_groups[column])):
                members = ((original_groups[column] == name).to_numpy()) & (labels == label)
                counted = members & recognised
                if members.any():
                    per_cell.setdefault(str(label), {})[name] = {
                        "images": int(members.sum()),
                        "kept": float(np.mean(restored_labels[counted] == label)) if counted.any() else float("nan"),
                        "same_subgroup": float(np.mean((restored_groups[column] == name).to_numpy()[members]))}
    rated = [name for name, values in per_group.items() if values["kept"] == values["kept"]]
    worst = min(rated, key=lambda name: per_group[name]["kept"]) if rated else None
    return {"worst_subgroup": worst, "worst_subgroup_kept": per_group[worst]["kept"] if worst else float("nan"),
            "same_subgroup": float(np.mean([(restored_groups[column] == original_groups[column]).mean()
                                            for column in ("stroke_group", "slant_group")])),
            **{f"{measure}_shift": float(np.nanmean(restored_measures[measure] - original_measures[measure]))
               for measure in MORPHOMETRIC_SHIFTS},
            "per_subgroup": per_group, "per_class_subgroup": per_cell}


# --- the report of a model ---------------------------------------------------------------------------

SUMMARY_KEYS = ("psnr", "ssim", "consistency", "identity_kept", "worst_class_kept", "rarest_class_gap",
                "rarest_class_gap_noise", "toward_majority", "seconds_per_1000")


def scores(images: np.ndarray, labels: np.ndarray, degradation: Degradation, raw: np.ndarray, seconds: float,
           original_labels: np.ndarray, restored_labels: np.ndarray, training_shares: np.ndarray, groups,
           measures, restored_groups, restored_measures, permutations: int, seed: int) -> dict:
    """Every measure of one task by one method: fidelity, consistency (of the raw restoration, before the
    seen pixels are put back), identity kept, erasure toward the majority, subgroups, time per 1000."""
    restored = degradation.keep_seen(raw)
    quality = fidelity(images, restored)
    recognised = original_labels == labels
    return ({"psnr": float(quality["psnr"].mean()), "ssim": float(quality["ssim"].mean()),
             "consistency": float(np.mean(degradation.consistency(raw))),
             "seconds_per_1000": 1000 * seconds / len(images)}
            | identity(labels, original_labels, restored_labels, len(training_shares))
            | erasure(labels, restored_labels, recognised, training_shares, permutations, seed)
            | subgroup_identity(labels, original_labels, restored_labels, groups, restored_groups, measures,
                                restored_measures))


def summary(results: dict[str, dict[str, dict]]) -> dict:
    """The model's headline: per method, the means over the tasks of SUMMARY_KEYS; the method with the best
    mean PSNR is the model's (`method`), its values at the top level, and upsampling's identity kept
    (PULSE's task) beside them."""
    found = {}
    restorations = {task: by_method for task, by_method in results.items() if task not in PROBES} or results
    for method in sorted({method for by_method in restorations.values() for method in by_method}):
        rows = [by_method[method] for by_method in restorations.values() if method in by_method]
        found[method] = {key: float(np.nanmean([row[key] for row in rows])) for key in SUMMARY_KEYS}
    method = max(found, key=lambda name: found[name]["psnr"])
    headline = {"method": method} | found[method]
    if "upsample" in results:
        headline["upsample_identity_kept"] = results["upsample"][method]["identity_kept"]
    return headline | {"per_method": found}


def report(model, judge, images: np.ndarray, labels: np.ndarray, measures, training_shares: np.ndarray,
           training_stroke_shares: np.ndarray, stroke_thresholds: tuple[float, float], upright_degrees: float,
           settings, grid: np.ndarray):
    """Restore `images` (whose morphometry is `measures`, one row each) by every task and method of the
    model and measure it all, fairness included (the training split's class and stroke shares, the latter in
    morphometry.STROKES's order, are UCPR's reference). Returns the results ({task: {method: scores}} plus the
    summary) and, per task, the rows of a figure over the `grid` images: original, degraded and each method's
    restoration."""
    from genlab.evaluation import fairness, morphometry

    def strokes_of(groups):
        return groups["stroke_group"].map(morphometry.STROKES.index).to_numpy()

    def groups_of(measures):
        return morphometry.subgroups(measures, stroke_thresholds, upright_degrees)

    measures = measures.reset_index(drop=True)
    degradations, restorations = restore_all(model, images, settings)
    original_labels = judge.look(images)[1].argmax(axis=1)
    groups = groups_of(measures)
    results = {task: {} for task in degradations}
    grids = {task: {"original": images[grid], "degraded": np.clip(degradation.shown[grid], 0.0, 1.0)}
             for task, degradation in degradations.items()}
    for (task, method), (raw, seconds) in restorations.items():
        restored = degradations[task].keep_seen(raw)
        restored_measures = morphometry.measure(restored)
        restored_groups = groups_of(restored_measures)
        restored_labels = judge.look(restored)[1].argmax(axis=1)
        results[task][method] = scores(images, labels, degradations[task], raw, seconds, original_labels,
                                       restored_labels, training_shares, groups, measures,
                                       restored_groups, restored_measures, settings.permutations, settings.seed)
        results[task][method] |= fairness.restoration_fairness(
            labels, original_labels, restored_labels, training_shares, strokes_of(groups),
            strokes_of(restored_groups), training_stroke_shares, task in PROBES, settings.seed)
        grids[task][method] = restored[grid]
    return {"num_images": len(images), "tasks": results, "summary": summary(results)}, grids
