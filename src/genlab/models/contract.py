"""What a generative family offers: the contract every family keeps, and the capabilities only some have.

Every family's model is a `Generator`: it samples, shows its progress while it trains, reports its own
metrics and says what kind of likelihood it gives. Some families can do more, and say so by having the
methods of a capability:

- `Encoder`: it maps an image to a code and back (the autoencoders, the VAE, PPCA, and a latent prior's
  model, which decodes with its encoder's decoder);
- `Searchable`: it generates from a latent space that can be searched for an image (PULSE's search:
  the autoencoders, the VAE, the GAN, the flow, PPCA, the latent priors);
- `GuidedRestorer`: its sampler can be conditioned on a degraded image (DDPM).

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


@runtime_checkable
class Generator(Protocol):
    """What every family's model offers (besides being a compiled keras.Model that `fit` trains)."""

    likelihood: ClassVar[str]  # Likelihood: what `family_metrics` reports of log p(x)
    monitored_loss: ClassVar[str]  # the loss whose curve the diagnosis reads ("loss"; a GAN's "g_loss")

    def sample(self, count: int, seed: int) -> np.ndarray:
        """`count` images (count, H, W) in [0, 1], the same for the same seed (also after a save and load)."""

    def progress_rows(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of images the MLflow run shows every few epochs (reconstructions of `images`, or samples)."""

    def family_metrics(self, images: np.ndarray) -> dict[str, float]:
        """The family's own test metrics on `images` (the test split): a bound, an exact NLL, a loss."""

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Figures of the family's own (file name -> labelled rows of images); none is fine."""

    def training_optimizers(self) -> list:
        """The optimizers that train it: its own, or a GAN's two (a learning-rate schedule sets them all)."""

    def build_optimizers(self) -> None:
        """Create the optimizers' variables, so that saved weights (which hold their state) load into them."""

    def finalize_weights(self) -> None:
        """At the end of `fit`: what Keras does not do itself (a GAN's generator takes its weights' average)."""

    def after_training(self, train_images: np.ndarray) -> None:
        """Once training has ended, before the model is saved (an autoencoder fits its codes' Gaussian)."""

    def num_parameters(self) -> int:
        """Its weights and biases (a prior over codes: its own and its frozen encoder's)."""

    def training_data(self, train_images: np.ndarray, validation_images: np.ndarray) -> tuple[np.ndarray, ...]:
        """What `fit` trains and validates on: the images themselves, or a latent prior's codes of them."""


@runtime_checkable
class Encoder(Protocol):
    """A model that encodes an image into a code and decodes it back."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) images -> (N, latent_dim) codes (a VAE's posterior means)."""

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, latent_dim) codes -> (N, H, W) images."""

    def code_decoder(self) -> Callable:
        """The decoder as a differentiable function of (B, latent_dim) code tensors (keras ops)."""

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) images -> their (N, H, W) reconstructions."""


@runtime_checkable
class Searchable(Protocol):
    """A model whose samples are a differentiable function of standard normal noise (PULSE searches it)."""

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

    def training_optimizers(self) -> list:
        return [self.optimizer]

    def build_optimizers(self) -> None:
        self.optimizer.build(self.trainable_variables)

    def finalize_weights(self) -> None:
        """Keras's fit already gives the model its optimizer's weight average, where it keeps one."""

    def after_training(self, train_images: np.ndarray) -> None:
        """Nothing by default."""

    def training_data(self, train_images: np.ndarray, validation_images: np.ndarray) -> tuple[np.ndarray, ...]:
        return train_images, validation_images

    def num_parameters(self) -> int:
        return int(sum(np.prod(variable.shape) for variable in self.trainable_variables))

    def family_images(self, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        return {}


def training_optimizers(model) -> list:
    """The optimizers that train any compiled model: a family's (the contract), else the model's own."""
    return model.training_optimizers() if isinstance(model, Generator) else [model.optimizer]


def build_optimizers(model) -> None:
    """Create the optimizers' variables of any compiled model (a family's, or a plain classifier's)."""
    if isinstance(model, Generator):
        model.build_optimizers()
    else:
        model.optimizer.build(model.trainable_variables)
