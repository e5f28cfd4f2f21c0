"""The only reader of params.yaml: typed, frozen sections, validated before any work.

Every section is a frozen pydantic model that rejects unknown keys, wrong types
and out-of-range values. A model entry under `models:` is checked against the
schema of its `family`, including the lecture's table of which output activation
fits which loss. Errors name the key (`models.ae_first_choice.loss`) and what is
allowed, and are raised as `ParamsError` so that a stage exits non-zero before
it touches data or trains anything.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key and what is allowed."""


def _yaml_number(value: Any) -> Any:
    """Accept `1e-3` (a string to PyYAML's YAML 1.1) as the number a user meant; reject bools."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value}")
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value.strip()):
        return float(value)
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


Number = Annotated[float, BeforeValidator(_yaml_number), Field(allow_inf_nan=False)]
PositiveNumber = Annotated[Number, Field(gt=0)]
Fraction = Annotated[Number, Field(gt=0, lt=1)]
# the scale of the prior's noise when sampling, z ~ N(0, T^2 I): below 1 trades variety for typical images
Temperature = Annotated[Number, Field(gt=0, le=3)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]
MAX_SEEDS = 20  # trainings of one model (train.seeds, models.<name>.seeds)
# Names become paths, DVC stage names and command-line arguments: a letter or digit first, no dots.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]


def _model_name(name: str) -> str:
    if not (1 <= len(name) <= 64 and re.match(NAME_PATTERN, name)):
        raise ValueError(f"{name!r} cannot name a model: DVC makes it the stage key train@<name> and "
                         "`dvc exp run -S models.<name>.<key>` splits at dots, so use 1-64 letters, digits, "
                         "'_' and '-', a letter or digit first")
    return name


ModelName = Annotated[str, AfterValidator(_model_name)]

Activation = Literal["linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "leaky_relu"]
Loss = Literal["mse", "mae", "msle", "binary_crossentropy", "categorical_crossentropy"]
Optimizer = Literal["adam", "adadelta", "sgd", "rmsprop"]
Source = Literal["digits", "mnist_sample", "mnist", "fashion_mnist", "npz"]
Stroke = Literal["thin", "medium", "thick"]  # the subgroups of genlab.evaluation.morphometry
Slant = Literal["left", "upright", "right"]

# The lecture's table: which output activations a reconstruction loss can be paired with.
# Cross-entropies read the output as probabilities; the regression losses fit a linear
# output, and the lecture also pairs them with relu and sigmoid outputs.
LOSS_OUTPUT_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "binary_crossentropy": ("sigmoid",),
    "categorical_crossentropy": ("softmax",),
    "mse": ("linear", "relu", "sigmoid", "tanh", "elu", "selu", "gelu", "leaky_relu"),
    "mae": ("linear", "relu", "sigmoid", "tanh", "elu", "selu", "gelu", "leaky_relu"),
    "msle": ("linear", "relu", "sigmoid", "elu", "selu", "gelu"),
}

# Pixels per image of the embedded and Keras sources (an npz file's shape is known only once loaded).
SOURCE_IMAGE_SHAPES: dict[str, tuple[int, int]] = {"digits": (8, 8), "mnist_sample": (28, 28), "mnist": (28, 28),
                                                   "fashion_mnist": (28, 28)}
SOURCE_SIZES: dict[str, int] = {"digits": 1797, "mnist_sample": 5000, "mnist": 70_000, "fashion_mnist": 70_000}


class Section(BaseModel):
    """A params.yaml section: frozen, and strict about its keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping with keys {sorted(cls.model_fields)}, got {type(data).__name__}")
        unknown = sorted(map(str, set(data) - set(cls.model_fields)))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; allowed keys: {sorted(cls.model_fields)}")
        return data


class SplitParams(Section):
    train: Fraction = 0.7
    validation: Fraction = 0.15
    test: Fraction = 0.15

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1, got {total:g}")
        return self


class DataParams(Section):
    source: Source = "digits"
    path: str | None = None  # a local copy of the source file (required for npz)
    num_classes: Annotated[StrictInt, Field(ge=2, le=1000)] = 10  # labels must lie in 0..num_classes-1
    max_samples: PositiveInt | None = None  # a stratified subsample, for quick runs on MNIST
    seed: Seed = 0
    split: SplitParams = SplitParams()
    # controlled bias injection: class -> share of its training images kept (e.g. {8: 0.1}); the
    # validation and test splits keep the natural distribution, so the audit and evaluation see it
    keep_fraction: dict[Annotated[int, Field(ge=0)], Annotated[Number, Field(ge=0, le=1)]] = {}
    # the same within a class: class -> subgroup (the audit's thin/medium/thick stroke or left/upright/right
    # slant) -> share kept, e.g. {7: {medium: 0, thick: 0}} keeps only the thin 7s; applied before keep_fraction
    keep_subgroup: dict[Annotated[int, Field(ge=0)], dict[Stroke | Slant, Annotated[Number, Field(ge=0, le=1)]]] = {}

    @model_validator(mode="after")
    def _injected_classes_exist(self) -> DataParams:
        for key, rules in (("keep_fraction", self.keep_fraction), ("keep_subgroup", self.keep_subgroup)):
            unknown = sorted(label for label in rules if label >= self.num_classes)
            if unknown:
                raise ValueError(f"{key}: class(es) {unknown} do not exist; labels are 0..{self.num_classes - 1}")
        emptied = sorted(label for label, fraction in self.keep_fraction.items() if fraction == 0)
        emptied += sorted(label for label, groups in self.keep_subgroup.items()
                          if any(all(groups.get(group) == 0 for group in get_args(kind)) for kind in (Stroke, Slant)))
        if emptied:
            raise ValueError(f"class(es) {sorted(set(emptied))} would keep no training images; a model cannot "
                             "learn a class it never sees (use a small fraction such as 0.05 instead)")
        return self

    @model_validator(mode="after")
    def _path_fits_source(self) -> DataParams:
        if self.source == "npz" and not self.path:
            raise ValueError("source 'npz' needs `path`: the .npz file with arrays x and y")
        if self.source == "digits" and self.path:
            raise ValueError("source 'digits' is embedded in scikit-learn; `path` must be null")
        return self


class ValidationParams(Section):
    max_class_kl: PositiveNumber = 0.01  # KL(split class shares || whole data set shares), in nats
    size_tolerance: Annotated[StrictInt, Field(ge=0)] = 10  # images a split may differ from its fraction


class AuditParams(Section):
    significance: Fraction = 0.05  # of the chi-square test of split consistency
    bootstraps: Annotated[StrictInt, Field(ge=100, le=100_000)] = 2000  # the four-fifths flags' noise floor
    thin_cell_ratio: Fraction = 0.5  # a class-by-subgroup cell below this x its expected count is thin
    upright_degrees: Annotated[Number, Field(gt=0, lt=45)] = 10.0  # slant beyond +-this is left or right


class DiagnosisParams(Section):
    window: Annotated[Number, Field(gt=0, le=1)] = 0.2  # the last fraction of epochs that is judged
    still_learning: PositiveNumber = 0.02  # relative fall of the loss over the window
    overfitting: PositiveNumber = 0.05  # relative rise of val loss above its best
    jumpy: PositiveNumber = 0.02  # mean relative epoch-to-epoch change that is not trend
    progress_share: Fraction = 0.1  # share of the whole fall still made in the window (a slow learner)


class TrainParams(Section):
    grid_every_epochs: PositiveInt = 10  # log a reconstruction grid to MLflow every this many epochs
    grid_images: Annotated[StrictInt, Field(ge=1, le=32)] = 10
    diagnosis: DiagnosisParams = DiagnosisParams()
    # auto: tf.distribute.MirroredStrategy over the GPUs when more than one is visible; mirrored: always
    # (one replica on a CPU-only machine); none: one device
    distribute: Literal["auto", "mirrored", "none"] = "auto"
    # keep the training state for a resume after the first epoch that ends this long after the last
    # backup (0: after every epoch); an interrupted run repeats at most this much work
    backup_every_seconds: Annotated[Number, Field(ge=0)] = 30
    # every model trained this many times, with its seed and the next ones (a model's own `seeds` overrides it);
    # each metric is then reported as its mean over them, with an interval (genlab.evaluation.seeds)
    seeds: Annotated[StrictInt, Field(ge=1, le=MAX_SEEDS)] = 1


class EvaluateParams(Section):
    num_extreme_images: Annotated[StrictInt, Field(ge=1, le=32)] = 8  # worst and best reconstructions shown
    # generated by every model: sample quality, timing and the grid; at most the training split's size,
    # as the data floor compares that many training images with the test split
    num_samples: Annotated[StrictInt, Field(ge=10, le=100_000)] = 1000
    nearest_neighbours: Annotated[StrictInt, Field(ge=1, le=50)] = 3  # k of precision, recall, density, coverage
    kid_subsets: Annotated[StrictInt, Field(ge=1, le=1000)] = 100  # KID's random subsets
    kid_subset_size: Annotated[StrictInt, Field(ge=2, le=10_000)] = 1000  # capped by the smaller sample set
    min_class_share_ratio: Fraction = 0.25  # a class is covered when its sample share reaches this x its real share
    # the classes a conditional model is asked for: equal shares (as many of every class, also of a class that
    # was rare in training: data.keep_fraction), or the training split's shares
    conditional_shares: Literal["equal", "training"] = "equal"
    # copies of the training data (genlab.evaluation.copying): the training split cut into this many k-means
    # cells for Meehan et al.'s C_T, each with unseen test images in it
    copying_cells: Annotated[StrictInt, Field(ge=1, le=100)] = 10
    # sampling intervals of FID, KID, precision, recall and coverage (metrics.bootstrap_intervals): this many
    # bootstrap draws of the images; every interval genlab reports holds this share of its draws
    bootstraps: Annotated[StrictInt, Field(ge=20, le=10_000)] = 200
    confidence: Annotated[Number, Field(ge=0.5, lt=1)] = 0.95


# genlab.evaluation.restoration.TASKS
RestoreTask = Literal["upsample", "inpaint_lower_half", "inpaint_block", "denoise", "uninformative"]


class RestoreParams(Section):
    """Image-to-image on the test split (genlab.evaluation.restoration), measured in evaluate@<model>."""

    tasks: Annotated[tuple[RestoreTask, ...], Field(min_length=1)] = ("upsample", "inpaint_lower_half",
                                                                      "inpaint_block", "denoise", "uninformative")
    # a stratified subset of the test split: the first images of each class in proportion (null: all of it)
    num_images: Annotated[StrictInt, Field(ge=10)] | None = None
    upsample_factor: PositiveInt | None = None  # average pooling by this factor (null: 2 up to 16x16, else 4)
    block_fraction: Fraction = 0.5  # inpaint_block hides a square of this fraction of the side, placed at random
    noise_sigma: PositiveNumber = 0.2  # denoise: additive Gaussian noise of this standard deviation
    # uninformative: average pooling down to this many pixels per side, too few to tell the class (Laszkiewicz
    # et al.'s test of conditional proportional representation); 1 keeps only each image's mean brightness
    uninformative_pixels: PositiveInt = 1
    # PULSE's latent search: Adam on the sphere |w| = sqrt(latent_dim), `search_restarts` starts per image
    search_steps: PositiveInt = 100  # 50 and 200 give the same PSNR and identity kept on the digits
    search_restarts: PositiveInt = 4
    search_learning_rate: PositiveNumber = 0.1
    # DDPM's guided restoration: ddpm, ancestral over every timestep (as ILVR and RePaint); ddim, the model's
    # num_inference_steps
    diffusion_sampler: Literal["ddpm", "ddim"] = "ddpm"
    # posterior sampling (the searchable models): annealed Langevin dynamics over the same noise w, the
    # observation noise annealed down to `posterior_sigma`
    posterior_steps: Annotated[StrictInt, Field(ge=0)] = 300  # half annealed, half at posterior_sigma; 0: none
    posterior_step_size: PositiveNumber = 8.0  # divided by 1 + (observed values) / sigma^2 at each step
    posterior_sigma: PositiveNumber = 0.05
    permutations: Annotated[StrictInt, Field(ge=100, le=100_000)] = 2000  # chance level of the erasure statistics
    seed: Seed = 0

    @model_validator(mode="after")
    def _tasks_once(self) -> RestoreParams:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: each task at most once, got {list(self.tasks)}")
        return self

    def factor_for(self, image_shape: tuple[int, int]) -> int:
        """The upsampling task's pooling factor: 2 on the 8x8 digits, 4 on 28x28 MNIST."""
        return self.upsample_factor or (2 if max(image_shape) <= 16 else 4)

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        factor = self.factor_for(image_shape)
        fits = not (image_shape[0] % factor or image_shape[1] % factor) and factor < min(image_shape)
        if "upsample" in self.tasks and not fits:
            return (f"upsample_factor: {factor} must divide the {image_shape[0]}x{image_shape[1]} images' sides "
                    f"and be smaller than them")
        pixels = self.uninformative_pixels
        if "uninformative" in self.tasks and (image_shape[0] % pixels or image_shape[1] % pixels):
            return (f"uninformative_pixels: {pixels} must divide the {image_shape[0]}x{image_shape[1]} images' "
                    f"sides (1 pools each image to its mean)")
        return None


# What compare can rank by, and whether more is better: the champion is the best model by `rank_by`.
RANKING_METRICS: dict[str, bool] = {
    "fid": False, "kid": False, "precision": True, "recall": True, "density": True, "coverage": True,
    "classes_covered": True, "class_share_tv_distance": False, "judge_confidence": True,
    "sampling_seconds_per_1000": False, "train_seconds": False, "num_params": False,
    "test_nll_bits_per_dim": False, "test_bce": False, "test_mse": False,
    "restore_psnr": True, "restore_ssim": True, "restore_identity_kept": True,  # image-to-image (restoration)
    # within each class (intra-class FID over its floor), and a conditional model's class asked for
    "intra_class_fid_to_floor": False, "worst_class_fid_to_floor": False, "asked_class_accuracy": True,
}


class CompareParams(Section):
    rank_by: Literal[tuple(RANKING_METRICS)] = "fid"  # the champion's criterion (see RANKING_METRICS)
    registered_model: Name = "genlab-generator"  # the MLflow Model Registry name; the best gets alias `champion`
    register_champion: StrictBool = True
    # A model is recommended only when the judge recognises its samples as the data's and its training had
    # finished: no more than max_fid_to_floor x the data floor's FID, a mean judge confidence of at least
    # min_judge_confidence, min_classes_covered classes (null: every class), and no "still learning" diagnosis
    # unless recommend_still_learning. The answer and the champion come from the recommended models.
    max_fid_to_floor: PositiveNumber = 10.0
    min_judge_confidence: Annotated[Number, Field(ge=0, lt=1)] = 0.7
    min_classes_covered: PositiveInt | None = None
    recommend_still_learning: StrictBool = False
    # nor one whose samples copy training images: the unseen images are a sample's nearest less often than this
    # share of their fair share, in pixels or the judge's features (genlab.evaluation.copying's held-out test)
    min_heldout_ratio: Fraction = 0.5


class TrackingParams(Section):
    experiment: Name = "genlab"
    log_model_weights: StrictBool = True  # each model as an MLflow LoggedModel (false: none, and no champion)


class RangeAxis(Section):
    """A numeric axis of a search: integers when low and high are integers, else real numbers; `log` samples
    evenly in the logarithm (a learning rate)."""

    low: StrictInt | Number
    high: StrictInt | Number
    log: StrictBool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeAxis:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log axis needs low > 0, got {self.low}")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


def problems(error: ValidationError) -> str:
    """A validation error's problems on one line, each with its key: `low (0.1) must be below high (0.01)`."""
    return "; ".join(f"{'.'.join(map(str, item['loc']))}: " * bool(item["loc"])
                     + item["msg"].removeprefix("Value error, ") for item in error.errors())


def _axis(value: Any) -> Any:
    """A categorical axis: the values to try (a setting's values, or mappings that set several settings together,
    as a loss with the output activation it fits); a range: numbers between low and high."""
    if isinstance(value, list):
        if len(value) < 2:
            raise ValueError(f"a list of values to try needs at least 2, got {value!r}")
        return value
    if isinstance(value, dict):
        try:
            return RangeAxis.model_validate(value)
        except ValidationError as error:
            raise ValueError(problems(error)) from None
    raise ValueError(f"expected a list of values to try or a range {{low, high, log}}, got {value!r}")


Axis = Annotated[list[Any] | RangeAxis, BeforeValidator(_axis)]


class PrunerParams(Section):
    """Optuna's median pruner: a trial whose objective after an epoch is worse than the median of the trials
    before it at that epoch stops there."""

    report_every_epochs: PositiveInt = 10  # the objective is measured (and the trial may stop) this often
    startup_trials: Annotated[StrictInt, Field(ge=0)] = 5  # no trial is stopped before this many have finished
    warmup_epochs: Annotated[StrictInt, Field(ge=0)] = 20  # nor before this epoch
    enabled: StrictBool = True


class SearchParams(Section):
    """"Lots of hyperparameters! What to choose?": an Optuna search over one model entry's settings (search/dvc.yaml,
    genlab.training.search); each trial trains the entry with the values it draws from `space`."""

    model: ModelName  # the `models:` entry searched; its values are the base every trial changes
    trials: Annotated[StrictInt, Field(ge=2, le=10_000)] = 20  # trials that finish (complete or stopped early)
    # fid_to_floor: the samples against the validation split in the judge's features, over the data floor;
    # val_loss: the model's own validation loss (cheaper, but not comparable across losses)
    objective: Literal["fid_to_floor", "val_loss"] = "fid_to_floor"
    sampler: Literal["tpe", "random"] = "tpe"
    seed: Seed = 0
    workers: Annotated[StrictInt, Field(ge=1, le=64)] = 1  # processes on this machine sharing the study
    pruner: PrunerParams = PrunerParams()
    # a worker whose trial has sent no heartbeat for stale_after_seconds is taken for dead: its trial fails
    # (a database storage; a journal file has no heartbeat)
    heartbeat_seconds: Annotated[Number, Field(gt=0, le=3600)] = 10
    stale_after_seconds: Annotated[Number, Field(gt=0, le=86_400)] = 60
    space: dict[str, Axis] = Field(min_length=1)

    @model_validator(mode="after")
    def _heartbeat_before_stale(self) -> SearchParams:
        """A live worker's heartbeat may come late: a trial is taken for dead after three missed ones at least."""
        if self.stale_after_seconds < 3 * self.heartbeat_seconds:
            raise ValueError(f"stale_after_seconds ({self.stale_after_seconds}) must be at least 3 x heartbeat_seconds "
                             f"({self.heartbeat_seconds})")
        return self


class TrainingParams(Section):
    """What every family's training shares: the optimizer, batches, epochs and seed."""

    bottleneck: ClassVar[bool] = False  # whether latent_dim squeezes the image (encoders) or is a noise size

    optimizer: Optimizer = "adam"
    learning_rate: PositiveNumber = 1e-3
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 100
    seed: Seed = 0
    seeds: Annotated[StrictInt, Field(ge=1, le=MAX_SEEDS)] | None = None  # null: train.seeds
    early_stopping_patience: PositiveInt | None = None  # epochs without val-loss progress; null: off
    # the learning rate epoch by epoch: a linear warm-up over warmup_epochs, then constant or a half cosine to 0
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: Annotated[StrictInt, Field(ge=0)] = 0
    gradient_clip_norm: PositiveNumber | None = None  # rescale each step's gradients to at most this global norm

    @model_validator(mode="after")
    def _warmup_within_training(self) -> TrainingParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        """Why this model cannot be built for images of `image_shape` ("key: reason"), or None."""
        pixels = image_shape[0] * image_shape[1]
        if self.bottleneck and self.latent_dim >= pixels:
            return (f"latent_dim: {self.latent_dim} is not a bottleneck for {image_shape[0]}x{image_shape[1]} "
                    f"= {pixels} pixels; use 1..{pixels - 1}")
        return None


# Images at least this wide get convolutional networks when a family's `network` is auto.
CONV_MIN_SIDE = 16


class ImageNetworkParams(TrainingParams):
    """A family whose networks are dense for small images and convolutional for larger ones."""

    halves_image: ClassVar[bool] = True  # each conv_filters entry halves the image (False: same-size layers)

    network: Literal["auto", "dense", "conv"] = "auto"  # auto: conv for images 16 pixels wide or more
    conv_filters: tuple[PositiveInt, ...] = (32, 64)  # channels per convolutional level

    def network_for(self, image_shape: tuple[int, int]) -> str:
        """"dense" or "conv": the `network` asked for, with auto resolved by the image size."""
        if self.network != "auto":
            return self.network
        return "conv" if min(image_shape) >= CONV_MIN_SIDE else "dense"

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        factor = 2 ** len(self.conv_filters)
        if (self.network_for(image_shape) == "conv" and self.halves_image
                and (image_shape[0] % factor or image_shape[1] % factor)):
            return (f"conv_filters: {len(self.conv_filters)} levels halve the image {len(self.conv_filters)} "
                    f"times, so its sides must be multiples of {factor}, and "
                    f"{image_shape[0]}x{image_shape[1]} is not; use fewer levels or network: dense")
        return super().image_problem(image_shape)


class ClassConditional(BaseModel):
    """What makes a family's model class-conditional: told the class, it draws that class (conditional GANs,
    Mirza and Osindero 2014; conditional VAEs, Sohn et al. 2015; classifier-free guidance, Ho and Salimans
    2022). How each family is told is its own (genlab.models.<family>)."""

    conditional: StrictBool = False


class AutoencoderParams(ClassConditional, TrainingParams):
    """A dense autoencoder: image -> hidden_units -> latent_dim -> reversed(hidden_units) -> image."""

    bottleneck: ClassVar[bool] = True
    family: Literal["autoencoder"]
    hidden_units: tuple[PositiveInt, ...] = (32,)
    latent_dim: PositiveInt = 8
    hidden_activation: Activation = "relu"
    output_activation: Activation = "sigmoid"
    loss: Loss = "binary_crossentropy"

    @model_validator(mode="after")
    def _loss_fits_output(self) -> AutoencoderParams:
        allowed = LOSS_OUTPUT_ACTIVATIONS[self.loss]
        if self.output_activation not in allowed:
            raise ValueError(
                f"loss {self.loss!r} does not fit output_activation {self.output_activation!r}; "
                f"{self.loss} needs one of {list(allowed)}"
            )
        return self


class VaeParams(ClassConditional, ImageNetworkParams):
    """A variational autoencoder: a Gaussian latent of latent_dim numbers with a standard normal prior.

    Dense: image -> hidden_units -> z; conv: stride-2 convolutions (conv_filters), then hidden_units -> z."""

    bottleneck: ClassVar[bool] = True
    family: Literal["vae"]
    hidden_units: tuple[PositiveInt, ...] = (64,)
    latent_dim: PositiveInt = 8
    hidden_activation: Activation = "relu"
    decoder: Literal["bernoulli", "gaussian"] = "bernoulli"  # p(x|z): binary cross-entropy, or Gaussian
    decoder_std: PositiveNumber = 0.1  # the Gaussian decoder's fixed standard deviation per pixel
    beta: PositiveNumber = 1.0  # weight of the KL term (beta-VAE when not 1)
    num_importance_samples: Annotated[StrictInt, Field(ge=1, le=5000)] = 64  # k of the importance-weighted NLL
    temperature: Temperature = 1.0  # samples decode z ~ N(0, T^2 I)


class GanParams(ClassConditional, ImageNetworkParams):
    """A generative adversarial network: a generator from `latent_dim` noise numbers against a discriminator.

    Dense: generator_units and discriminator_units; conv (DCGAN-style): the discriminator halves the
    image with conv_filters, the generator mirrors it with transposed convolutions."""

    family: Literal["gan"]
    latent_dim: PositiveInt = 16  # the size of the noise z (not a bottleneck)
    generator_units: tuple[PositiveInt, ...] = (64, 128)  # the dense networks
    discriminator_units: tuple[PositiveInt, ...] = (128, 64)
    # conv: the discriminator's channels per level (null: conv_filters, as the generator's); a discriminator
    # that cannot tell real from generated (D(x) and D(G(z)) near 0.5) gives the generator nothing to learn from
    discriminator_filters: tuple[PositiveInt, ...] | None = None
    loss: Literal["non_saturating", "minimax"] = "non_saturating"  # the generator's objective
    adam_beta_1: Fraction = 0.5  # Adam's first-moment decay; 0.5 steadies the adversarial game
    # a moving average of the generator's weights samples in place of its last weights (0: off)
    ema_decay: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    temperature: Temperature = 1.0  # samples from z ~ N(0, T^2 I)

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        if self.discriminator_filters is not None and len(self.discriminator_filters) != len(self.conv_filters):
            return (f"discriminator_filters: {len(self.discriminator_filters)} levels, but conv_filters has "
                    f"{len(self.conv_filters)}; the discriminator mirrors the generator level by level")
        return super().image_problem(image_shape)

    @model_validator(mode="after")
    def _no_early_stopping(self) -> GanParams:
        if self.early_stopping_patience is not None:
            raise ValueError("early_stopping_patience must be null for a GAN: its losses do not measure "
                             "sample quality, so no validation loss can say when to stop")
        return self


class FlowParams(ClassConditional, ImageNetworkParams):
    """A RealNVP normalizing flow: affine couplings, exact likelihood.

    Dense: `num_couplings` couplings with alternating checkerboard masks, each with a dense
    scale-and-shift network (hidden_units). Conv: RealNVP's multi-scale architecture, `num_scales`
    times a group of checkerboard couplings, a squeeze (2x2 pixels -> 4 channels), a group of
    channel-mask couplings and a split that factors out half of the channels, then a last
    checkerboard group; each group has `num_couplings` couplings whose networks are same-size 3x3
    convolutions with conv_filters channels."""

    halves_image: ClassVar[bool] = False  # conv_filters are layers of one size; num_scales halves the image

    family: Literal["flow"]
    num_couplings: Annotated[StrictInt, Field(ge=2, le=64)] = 8  # dense: in all; conv: per group
    num_scales: Annotated[StrictInt, Field(ge=0, le=4)] = 2  # conv: squeeze-and-split scales
    # conv: what a split factors out is Gaussian with a mean and scale from the half that stays (Glow), not N(0, I)
    learned_split_prior: StrictBool = True
    hidden_units: tuple[PositiveInt, ...] = (128, 128)  # each coupling's dense scale-and-shift network
    conv_filters: tuple[PositiveInt, ...] = (32, 32)
    num_levels: Annotated[StrictInt, Field(ge=2, le=65536)] = 256  # grey levels dequantised (uniform noise)
    logit_alpha: Annotated[Number, Field(gt=0, lt=0.5)] = 0.05  # squeeze into [alpha, 1 - alpha] before the logit
    temperature: Temperature = 0.8  # the noise scale when sampling

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        factor = 2 ** self.num_scales
        if self.network_for(image_shape) == "conv" and (image_shape[0] % factor or image_shape[1] % factor):
            return (f"num_scales: {self.num_scales} squeezes halve the image {self.num_scales} times, so its "
                    f"sides must be multiples of {factor}, and {image_shape[0]}x{image_shape[1]} is not; use "
                    f"fewer scales or network: dense")
        return super().image_problem(image_shape)


class DiffusionParams(ClassConditional, ImageNetworkParams):
    """A denoising diffusion model (DDPM): a network that predicts the noise added at a random timestep.

    Dense (hidden_units) for small images; conv: a lean U-Net on patch_size x patch_size patches, one
    residual block per conv_filters level, the last level the middle."""

    family: Literal["diffusion"]
    num_timesteps: Annotated[StrictInt, Field(ge=2, le=4000)] = 200
    schedule: Literal["linear", "cosine"] = "linear"  # how the noise variance beta_t grows with t
    hidden_units: tuple[PositiveInt, ...] = (256, 256)  # the dense noise-prediction network, for small images
    conv_filters: tuple[PositiveInt, ...] = (32, 64)  # the U-Net's channels per level, the last the middle's
    patch_size: Literal[1, 2, 4] = 1  # conv: the U-Net sees patches of this many pixels square as channels
    time_embedding_dim: Annotated[StrictInt, Field(ge=2, le=1024, multiple_of=2)] = 32  # sinusoidal features of t
    sampler: Literal["ddpm", "ddim"] = "ddpm"  # ancestral sampling over every step, or DDIM's fewer steps
    num_inference_steps: Annotated[StrictInt, Field(ge=1, le=4000)] = 50  # DDIM's steps
    ema_decay: Annotated[Number, Field(ge=0, lt=1)] = 0.995  # exponential moving average of weights; 0: off
    min_snr_gamma: PositiveNumber | None = None  # weight the loss by min(SNR, gamma) / SNR (null: Ho et al.'s)
    # the noise predictor's arithmetic: float32, or Keras's mixed precision with bfloat16 products (float32
    # weights); auto: bfloat16 on a CPU that multiplies it natively (genlab.training.fit.compute_precision)
    precision: Literal["float32", "bfloat16", "auto"] = "float32"
    # classifier-free guidance (Ho and Salimans 2022), for a conditional model: the condition is dropped (the
    # null class) for this share of the training images, so that one network also learns the unconditional
    # noise; sampling takes eps_u + guidance_scale (eps_c - eps_u): 0 the unconditional model, 1 the
    # conditional one, above 1 guided further toward the class (sharper, less varied)
    condition_dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.1
    guidance_scale: Annotated[Number, Field(ge=0, le=20)] = 1.0

    @model_validator(mode="after")
    def _guidance_needs_conditions(self) -> DiffusionParams:
        fields = type(self).model_fields
        given = [key for key in ("condition_dropout", "guidance_scale") if getattr(self, key) != fields[key].default]
        if given and not self.conditional:
            raise ValueError(f"{', '.join(given)}: classifier-free guidance is for a conditional model "
                             f"(conditional: true)")
        if self.guidance_scale != 1 and self.condition_dropout == 0:
            raise ValueError(f"guidance_scale {self.guidance_scale:g} needs the unconditional model as well: "
                             f"condition_dropout above 0 (0.1 to 0.2, as Ho and Salimans)")
        return self

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        factor = self.patch_size * 2 ** (len(self.conv_filters) - 1)
        if self.network_for(image_shape) == "conv" and (image_shape[0] % factor or image_shape[1] % factor):
            return (f"conv_filters: patches of {self.patch_size} and {len(self.conv_filters)} U-Net levels need "
                    f"image sides that are multiples of {factor}, and {image_shape[0]}x{image_shape[1]} is not; "
                    f"use fewer levels, a smaller patch_size or network: dense")
        return TrainingParams.image_problem(self, image_shape)

    @model_validator(mode="after")
    def _fewer_inference_steps(self) -> DiffusionParams:
        if self.num_inference_steps > self.num_timesteps:
            raise ValueError(f"num_inference_steps ({self.num_inference_steps}) cannot exceed "
                             f"num_timesteps ({self.num_timesteps})")
        return self


class PpcaParams(ClassConditional, TrainingParams):
    """Probabilistic PCA: the linear autoencoder with a density, x = W z + mu + noise, z ~ N(0, I) of
    latent_dim numbers, trained by its exact likelihood (genlab.models.ppca)."""

    bottleneck: ClassVar[bool] = True
    family: Literal["ppca"]
    latent_dim: PositiveInt = 16
    num_levels: Annotated[StrictInt, Field(ge=2, le=65536)] = 256  # grey levels dequantised (uniform noise)
    temperature: Temperature = 1.0  # samples decode z ~ N(0, T^2 I)


# family name -> schema of its hyperparameters; the registry builds the family from genlab/models/<family>.py
# (a new family: its schema above and one entry here; docs/architecture.md, "Adding a family").
FAMILY_PARAMS: dict[str, type[TrainingParams]] = {"autoencoder": AutoencoderParams, "vae": VaeParams,
                                                   "gan": GanParams, "flow": FlowParams,
                                                   "diffusion": DiffusionParams, "ppca": PpcaParams}


def _model_params(data: Any) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping with a `family` and its hyperparameters, got {type(data).__name__}")
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILY_PARAMS:
        raise ValueError(f"family: unknown family {family!r}; allowed: {sorted(FAMILY_PARAMS)}")
    return FAMILY_PARAMS[family].model_validate(data)


ModelParams = Annotated[functools.reduce(operator.or_, FAMILY_PARAMS.values()), BeforeValidator(_model_params)]


class PriorOverCodes(BaseModel):
    """A learned prior over an encoder's codes ("a NN in the middle that approximates the true distribution
    of the latent space"): an entry of `priors:`, the settings of its family (flow: a RealNVP over the codes;
    diffusion: a DDPM over them, latent diffusion) with dense networks, and the `models:` entry whose codes
    it models. Sampling draws codes from it and decodes them with that encoder's decoder."""

    # what a network over images needs and a network over a vector of codes does not have
    IMAGE_ONLY: ClassVar[tuple[str, ...]] = ("conv_filters", "patch_size", "num_scales", "learned_split_prior",
                                             "num_levels", "logit_alpha", "precision")

    encoder: ModelName  # an entry of `models:` with an encoder: an autoencoder, a VAE or PPCA
    # the encoder's own entry, copied in by Params (saved with the model, which rebuilds the encoder from it)
    encoder_model: ModelParams | None = None

    @model_validator(mode="after")
    def _dense_over_codes(self) -> PriorOverCodes:
        fields = type(self).model_fields
        image_only = [key for key in self.IMAGE_ONLY if key in fields and getattr(self, key) != fields[key].default]
        if image_only:
            raise ValueError(f"{', '.join(image_only)}: a setting of networks over images; a prior over codes "
                             f"is a dense network over {self.family}'s vector of codes")
        if getattr(self, "network", "dense") == "conv":
            raise ValueError("network: conv is for images; a prior over codes is dense (use auto or dense)")
        return self

    def image_problem(self, image_shape: tuple[int, int]) -> str | None:
        return None  # the codes' size is the encoder's latent_dim, whatever the images

    def network_for(self, image_shape: tuple[int, int]) -> str:
        return "dense"


class FlowPriorParams(PriorOverCodes, FlowParams):
    """A RealNVP over the codes: num_couplings dense couplings (hidden_units), alternating masks."""


class DiffusionPriorParams(PriorOverCodes, DiffusionParams):
    """A DDPM over the codes (latent diffusion): a dense noise predictor (hidden_units) with the time embedding."""


class GanPriorParams(PriorOverCodes, GanParams):
    """A GAN over the codes (a latent GAN): dense generator_units from latent_dim noise numbers to the codes,
    dense discriminator_units."""

    IMAGE_ONLY: ClassVar[tuple[str, ...]] = (*PriorOverCodes.IMAGE_ONLY, "discriminator_filters")


# the families that can be a prior over codes -> the schema of such a prior
PRIOR_PARAMS: dict[str, type[PriorOverCodes]] = {"flow": FlowPriorParams, "diffusion": DiffusionPriorParams,
                                                 "gan": GanPriorParams}


def _prior_params(data: Any) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping with an `encoder`, a `family` and its settings, "
                         f"got {type(data).__name__}")
    family = data.get("family")
    if not isinstance(family, str) or family not in PRIOR_PARAMS:
        raise ValueError(f"family: {family!r} cannot be a prior over codes; allowed: {sorted(PRIOR_PARAMS)}")
    return PRIOR_PARAMS[family].model_validate(data)


PriorParams = Annotated[functools.reduce(operator.or_, PRIOR_PARAMS.values()), BeforeValidator(_prior_params)]


class JudgeParams(ImageNetworkParams):
    """The judge: a classifier of the real training split. Its last hidden layer (hidden_units[-1]
    numbers) gives the features of FID, KID, precision and recall; its predictions label samples."""

    hidden_units: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (256, 128)
    dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.2
    # shift training images at random by up to this fraction of their size (0: off); on 3,500 MNIST images it
    # takes a convolutional judge from 0.964 to 0.979 test accuracy
    augment_shift: Annotated[Number, Field(ge=0, lt=0.5)] = 0.0
    epochs: PositiveInt = 100
    early_stopping_patience: PositiveInt | None = 10
    min_test_accuracy: Fraction = 0.97  # below it the judge stage warns: its measurements are unreliable


class Params(Section):
    data: DataParams
    validation: ValidationParams = ValidationParams()
    audit: AuditParams = AuditParams()
    judge: JudgeParams = JudgeParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    restore: RestoreParams = RestoreParams()
    compare: CompareParams = CompareParams()
    tracking: TrackingParams = TrackingParams()
    models: dict[ModelName, ModelParams] = Field(min_length=1)
    # learned priors over an encoder's codes, each a model of its own (stages train_prior@ and evaluate_prior@)
    priors: dict[ModelName, PriorParams] = {}
    search: SearchParams | None = None  # a hyperparameter search (search/dvc.yaml); not part of `dvc repro`

    @model_validator(mode="after")
    def _priors_over_encoders(self) -> Params:
        """Each prior's encoder is a `models:` entry with codes; its entry is copied into the prior's."""
        for name, prior in self.priors.items():
            if name in self.models or name == "judge":
                raise ValueError(f"priors.{name}: the name is taken by "
                                 f"{'models.' + name if name in self.models else 'the judge'}; rename the prior")
            encoder = self.models.get(prior.encoder)
            if encoder is None:
                raise ValueError(f"priors.{name}.encoder: no model {prior.encoder!r}; models: {sorted(self.models)}")
            if not encoder.bottleneck:
                encoders = sorted(key for key, model in self.models.items() if model.bottleneck)
                raise ValueError(f"priors.{name}.encoder: {prior.encoder} ({encoder.family}) has no codes to model; "
                                 f"models with an encoder: {encoders}")
            if encoder.conditional:
                raise ValueError(f"priors.{name}.encoder: {prior.encoder} is conditional; a prior models an "
                                 f"unconditional encoder's codes (make the prior conditional instead)")
            object.__setattr__(prior, "encoder_model", encoder)  # a frozen section: set once, here
        return self

    @model_validator(mode="after")
    def _judge_name_is_taken(self) -> Params:
        if "judge" in self.models:
            raise ValueError("models.judge: the name is taken by the judge stage's classifier (models/judge); "
                             "rename the model")
        return self

    @model_validator(mode="after")
    def _samples_fit_training_split(self) -> Params:
        """The data floor compares num_samples training images with the test split: checked here for the
        known sources (before any training), in evaluate for an npz file."""
        total = SOURCE_SIZES.get(self.data.source)
        if total is not None:
            train = math.floor(min(total, self.data.max_samples or total) * self.data.split.train) + 1
            if self.evaluate.num_samples > train:
                raise ValueError(f"evaluate.num_samples: {self.evaluate.num_samples} is more than the about {train} "
                                 f"images of the training split ({self.data.source}); the data floor compares that "
                                 f"many training images with the test split")
        return self

    @model_validator(mode="after")
    def _models_fit_images(self) -> Params:
        shape = SOURCE_IMAGE_SHAPES.get(self.data.source)  # an npz file's shape is checked once it is loaded
        problems = self.image_problems(shape, self.data.source) if shape is not None else []
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _search_space_fits_model(self) -> Params:
        if self.search is not None:
            from genlab.config.space import check_space  # the axes against the family's settings

            if self.search.model not in self.models:
                raise ValueError(f"search.model: no model {self.search.model!r}; models: {sorted(self.models)}")
            check_space(self.models[self.search.model], self.search, SOURCE_IMAGE_SHAPES.get(self.data.source))
        return self

    def image_problems(self, image_shape: tuple[int, int], origin: str) -> list[str]:
        """What does not fit images of this shape: every model's network, the judge's, the restoration's."""
        checked = ({f"models.{name}": model for name, model in self.models.items()} | {"judge": self.judge}
                   | {"restore": self.restore})
        return [f"{key}.{problem} ({origin})" for key, model in checked.items()
                if (problem := model.image_problem(tuple(image_shape)))]


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part != "[key]")  # a mapping key: its name
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "missing key (required)"
        given = item.get("input")
        shown = "" if item["type"] in ("missing", "value_error") or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  - {location or '<top level>'}: {message}{shown}")
    return "\n".join(lines)


def parse_params(raw: Any, origin: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{origin} is invalid:\n{_format(error)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError naming every bad key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ParamsError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}: YAML syntax error{where}: {getattr(error, 'problem', error)}") from None
    return parse_params(raw, origin=str(path))


def check_fits(key: str, config, image_shape: tuple[int, int]) -> None:
    """The data's own image size, known once an npz file is loaded: the network at `key` (`judge`,
    `models.vae`) must fit it."""
    problem = config.image_problem(tuple(image_shape))
    if problem:
        raise ParamsError(f"{key}.{problem} (the prepared data's images)")


def check_image_shape(name: str, config: TrainingParams, image_shape: tuple[int, int]) -> None:
    """The model `models.<name>` (or `priors.<name>`) must fit the prepared data's images."""
    check_fits(f"{entry_key(config)}.{name}", config, image_shape)


def hyperparameter_count(config: TrainingParams) -> dict[str, int]:
    """The lecture's "how many hyperparameters?" of a model: the keys its entry in params.yaml sets besides
    `family`, plus the shared training settings (optimizer, learning rate, batch size, epochs, seed, early
    stopping, schedule) that it inherits from their defaults."""
    chosen = set(config.model_fields_set) - {"family", "seeds"}  # how often it is trained is no hyperparameter
    inherited = set(TrainingParams.model_fields) - chosen - {"seeds"}
    return {"num_hyperparameters": len(chosen) + len(inherited), "num_hyperparameters_set": len(chosen)}


def seeds_of(params: Params, config: TrainingParams) -> list[int]:
    """The seeds a model is trained with: its entry's seed and the next ones, `seeds` of them (its own, else
    train.seeds)."""
    return [config.seed + offset for offset in range(config.seeds or params.train.seeds)]


def model_params(params: Params, name: str) -> TrainingParams:
    """The `models.<name>` (or `priors.<name>`) entry, or a ParamsError listing the models that exist."""
    found = params.models.get(name) or params.priors.get(name)
    if found is None:
        raise ParamsError(f"models.{name}: no such model; params.yaml defines {sorted(params.models)}"
                          + (f" and the priors {sorted(params.priors)}" if params.priors else ""))
    return found


def entry_key(config) -> str:
    """Where a model's settings live in params.yaml: `models.<name>` or `priors.<name>`."""
    return "priors" if isinstance(config, PriorOverCodes) else "models"
