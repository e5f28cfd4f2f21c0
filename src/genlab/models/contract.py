"""What a generative family offers: the contract every family keeps, and the capabilities only some have.

Every family's model is a `Generator`: it samples, shows its progress while it trains, reports its own
metrics and says what kind of likelihood it gives. Some families can do more, and say so by having the
methods of a capability:

- `Encoder`: it maps an image to a code and back (the autoencoders, the VAE, PPCA, and a latent prior's
  model, which decodes with its encoder's decoder);
- `Searchable`: it generates from a latent space that can be searched for an image (PULSE's search:
  the autoencoders, the VAE, the GAN, the flow, PPCA, the latent priors);
- `GuidedRestorer`: its sampler can be conditioned on a degraded image (DDPM).

Any family can be class-conditional (`conditional: true` in its entry): its `num_classes` is then the
data's, and `sample` draws the classes asked for (`labels`), or by the training split's shares when none
are asked for, so that every stage treats it as any model. Unconditional models have `num_classes` 0.

The stages, the restoration, the comparison and the pyfunc wrapper ask `isinstance(model, Encoder)`
and the like, never a family's name. `FamilyModel` gives a family the contract's defaults (one
optimizer, no likelihood, nothing to do after training); a family overrides what differs.
`tests/test_contract.py` runs every registered family through the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

import numpy as np

Likelihood = Literal["exact", "bound", "none"]  # a flow's is exact, a VAE's a bound, a GAN's none
LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)


@dataclass(frozen=True)
class LatentSpace:
    """A model's generator as a function of its own sampling noise: `decode` maps (B, dim) standard
    normal noise w to (B, H, W) images in [0, 1], differentiably (keras ops)."""

    decode: Callable
    dim: int


# The class logits of a conditional model's search space are scaled by this before their softmax: at the
# sphere's radius (about sqrt(dim) per entry of w) a logit a few units above the others is then one class
CLASS_LOGIT_SCALE = 4.0


def class_search_space(decode: Callable, noise_dim: int, num_classes: int) -> LatentSpace:
    """A conditional generator `decode(noise, condition)` as a function of w = [noise (noise_dim), class
    logits (K)], the condition the logits' softmax: PULSE's search then finds the class with the noise, the
    most likely pair (MAP) for the observation."""
    import keras

    def generate(w):
        w = keras.ops.convert_to_tensor(w)
        logits = w[:, noise_dim:] * CLASS_LOGIT_SCALE
        return decode(w[:, :noise_dim], keras.ops.softmax(logits, axis=-1))
    return LatentSpace(generate, noise_dim + num_classes)


@runtime_checkable
class Generator(Protocol):
    """What every family's model offers (besides being a compiled keras.Model that `fit` trains)."""

    likelihood: ClassVar[str]  # Likelihood: what `family_metrics` reports of log p(x)
    monitored_loss: ClassVar[str]  # the loss whose curve the diagnosis reads ("loss"; a GAN's "g_loss")
    num_classes: int  # a class-conditional model's classes; 0: unconditional

    def sample(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`count` images (count, H, W) in [0, 1], the same for the same seed (also after a save and load);
        a conditional model's of the classes `labels` (count,), by default drawn by the training shares."""

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of images the MLflow run shows every few epochs (reconstructions of `images`, or samples)."""

    def family_metrics(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The family's own test metrics on the test split: a bound, an exact NLL, a loss (a conditional
        model's given the images' classes)."""

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Figures of the family's own (file name -> labelled rows of images); none is fine."""

    def training_optimizers(self) -> list:
        """The optimizers that train it: its own, or a GAN's two (a learning-rate schedule sets them all)."""

    def build_optimizers(self) -> None:
        """Create the optimizers' variables, so that saved weights (which hold their state) load into them."""

    def finalize_weights(self) -> None:
        """At the end of `fit`: what Keras does not do itself (a GAN's generator takes its weights' average)."""

    def after_training(self, train) -> None:
        """Once training has ended, before the model is saved, with the training split (`.x` images, `.y`
        labels): an autoencoder fits its codes' Gaussian, a conditional model keeps the class shares."""

    def num_parameters(self) -> int:
        """Its weights and biases (a prior over codes: its own and its frozen encoder's)."""

    def training_data(self, train, validation) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """What `fit` trains and validates on, as (inputs, targets) pairs of the splits (`.x`, `.y`): the
        images and themselves, a conditional model's images and classes, or a latent prior's codes."""


@runtime_checkable
class Encoder(Protocol):
    """A model that encodes an image into a code and decodes it back."""

    def encode(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W) images -> (N, latent_dim) codes (a VAE's posterior means). A conditional VAE's encoder
        is told the classes `labels`; not told, it sees the training shares (`blind_condition`)."""

    def decode(self, codes: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(N, latent_dim) codes -> (N, H, W) images (of the classes `labels`, for a conditional decoder)."""

    def code_decoder(self) -> Callable:
        """The decoder as a differentiable function of (B, latent_dim) code tensors (keras ops), not told
        the class (a conditional decoder sees the training shares)."""

    def reconstruct(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W) images -> their (N, H, W) reconstructions (told their classes, where it can be)."""


@runtime_checkable
class Searchable(Protocol):
    """A model whose samples are a differentiable function of standard normal noise (PULSE searches it); a
    conditional model's also of the class, searched as logits beside the noise (`class_search_space`)."""

    def latent_space(self) -> LatentSpace:
        """The generator as a function of its sampling noise."""


@runtime_checkable
class GuidedRestorer(Protocol):
    """A model whose sampler can be conditioned on a degraded image (genlab.evaluation.restoration)."""

    def guided_restore(self, degradation: Any, seed: int, sampler: str) -> np.ndarray:
        """(N, H, W) restorations in [0, 1] of a restoration.Degradation."""


class FamilyModel:
    """The contract's defaults, mixed into a family's keras.Model subclass: one optimizer (the compiled
    one), no likelihood, the loss named `loss`, nothing to show or do beyond sampling."""

    likelihood: ClassVar[str] = "none"
    monitored_loss: ClassVar[str] = "loss"
    num_classes: int = 0

    def condition_on_classes(self, num_classes: int) -> None:
        """For a family's __init__: conditional on `num_classes` classes (0: unconditional), with the training
        shares kept as a weight (saved with the model) that `sample` draws classes by when none are asked for."""
        self.num_classes = int(num_classes)
        if self.num_classes:
            import keras

            self.class_shares = self.add_weight(shape=(self.num_classes,), trainable=False, name="class_shares",
                                                initializer=keras.initializers.Constant(1.0 / self.num_classes))

    def conditions(self, count: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray | None:
        """The one-hot classes (count, K) a conditional model draws: `labels`, or by the training shares from
        the seed; None for an unconditional model, which cannot be asked for a class."""
        if not self.num_classes:
            if labels is not None:
                raise ValueError(f"{self.name} is unconditional: it cannot be asked for classes (set "
                                 f"`conditional: true` in its entry)")
            return None
        if labels is None:
            labels = class_labels(count, np.asarray(self.class_shares), seed)
        labels = np.asarray(labels)
        if len(labels) != count or labels.min(initial=0) < 0 or labels.max(initial=0) >= self.num_classes:
            raise ValueError(f"{self.name}: labels must be {count} classes in 0..{self.num_classes - 1}")
        return one_hot(labels, self.num_classes)

    def blind_condition(self, count: int) -> np.ndarray:
        """The condition of a conditional model that is not told the class (an encoder restoring an image):
        the training shares, the one-hot's expectation. DDPM's is its learned unconditional model's instead."""
        return np.tile(np.asarray(self.class_shares, dtype=np.float32), (count, 1))

    def condition_or_blind(self, count: int, labels: np.ndarray | None) -> np.ndarray | None:
        """The classes given, or the blind condition; None for an unconditional model."""
        if not self.num_classes:
            return None
        return self.blind_condition(count) if labels is None else one_hot(labels, self.num_classes)

    def training_optimizers(self) -> list:
        return [self.optimizer]

    def build_optimizers(self) -> None:
        self.optimizer.build(self.trainable_variables)

    def finalize_weights(self) -> None:
        """Keras's fit already gives the model its optimizer's weight average, where it keeps one."""

    def after_training(self, train) -> None:
        """A conditional model keeps the training split's class shares; nothing else by default."""
        if self.num_classes:
            counts = np.bincount(train.y, minlength=self.num_classes)[:self.num_classes]
            self.class_shares.assign((counts / counts.sum()).astype(np.float32))

    def training_data(self, train, validation) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """(images, images) of each split, or (images, classes) for a conditional model."""
        if self.num_classes:
            return (train.x, train.y), (validation.x, validation.y)
        return (train.x, train.x), (validation.x, validation.x)

    def num_parameters(self) -> int:
        return int(sum(np.prod(variable.shape) for variable in self.trainable_variables))

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        return {}


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) classes -> (N, K) float32 one-hot rows: the condition a conditional network is given."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def class_labels(count: int, shares, seed: int) -> np.ndarray:
    """`count` classes with the given shares (K,): each class's count rounded by largest remainder, so that
    they sum to `count`, in an order shuffled by the seed (a stream apart from the samples' noise)."""
    shares = np.asarray(shares, dtype=np.float64)
    exact = count * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[:count - counts.sum()]] += 1
    return np.random.default_rng([seed, 1]).permutation(np.repeat(np.arange(len(shares)), counts))


def equal_shares(num_classes: int) -> np.ndarray:
    return np.full(num_classes, 1.0 / num_classes)


def training_optimizers(model) -> list:
    """The optimizers that train any compiled model: a family's (the contract), else the model's own."""
    return model.training_optimizers() if isinstance(model, Generator) else [model.optimizer]


def build_optimizers(model) -> None:
    """Create the optimizers' variables of any compiled model (a family's, or a plain classifier's)."""
    if isinstance(model, Generator):
        model.build_optimizers()
    else:
        model.optimizer.build(model.trainable_variables)
