"""Morphometry of handwritten digits: how each image is drawn (Castro et al. 2019, Morpho-MNIST).

Classes are not the only groups a data set can under-represent: within a class, thin or
thick strokes and left or right slants are subgroups too. Each image is measured the way
Morpho-MNIST does it: upscaled (bilinear) so that a stroke is several pixels wide, binarised
at half intensity, then

- area: foreground pixels;
- length: pixels of the stroke's skeleton (scikit-image's skeletonize);
- thickness: twice the median distance from the skeleton to the background (the median ignores the
  skeleton's short spurs at stroke ends), less half a pixel for
  the pixel grid (an odd width's skeleton sits on the centre, an even width's half a pixel off);
- slant: the horizontal shear angle from the image's second moments, positive leaning right;
- width: the extent of the foreground along x once the slant is sheared away.

Lengths are in the original image's pixels (areas in pixels squared), angles in degrees. The
8x8 digits are coarse, so they are upscaled 8 times (28x28 MNIST 4 times, as in Morpho-MNIST).
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pandas as pd

from genlab.config.params import Slant, Stroke

MEASURES = ("area", "length", "thickness", "slant", "width")
MIN_UPSCALED_SIDE = 64  # upscale until the image is at least this many pixels wide (and at least 4x)


def upscale_factor(image_shape: tuple[int, int]) -> int:
    return max(4, math.ceil(MIN_UPSCALED_SIDE / min(image_shape)))


def binarise(image: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upscaling by `factor`, then foreground where the intensity is at least half the maximum."""
    from scipy.ndimage import zoom

    big = zoom(image.astype(np.float64), factor, order=1)
    peak = big.max()
    return big >= 0.5 * peak if peak > 0 else np.zeros_like(big, dtype=bool)


def measure_binary(mask: np.ndarray, factor: int = 1) -> dict[str, float]:
    """The five measures of one binary (upscaled) image, in the original image's units."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    if not mask.any():
        return dict.fromkeys(MEASURES, float("nan"))
    skeleton = skeletonize(mask)
    distances = distance_transform_edt(mask)
    rows, columns = np.nonzero(mask)
    y, x = rows.astype(np.float64), columns.astype(np.float64)  # y grows downwards
    dy, dx = y - y.mean(), x - x.mean()
    shear = -np.mean(dx * dy) / max(np.mean(dy * dy), 1e-12)  # x = x0 + shear * (y0 - y): right-leaning > 0
    upright = x + shear * dy  # the slant sheared away
    return {"area": float(mask.sum()) / factor**2,
            "length": float(skeleton.sum()) / factor,
            "thickness": float(2 * np.median(distances[skeleton]) - 0.5) / factor if skeleton.any() else float("nan"),
            "slant": float(np.degrees(np.arctan(shear))),
            "width": float(upright.max() - upright.min() + 1) / factor}


def measure(images: np.ndarray) -> pd.DataFrame:
    """One row of MEASURES per image of a (N, H, W) batch in [0, 1]."""
    factor = upscale_factor(images.shape[1:3])
    return pd.DataFrame([measure_binary(binarise(image, factor), factor) for image in images], columns=MEASURES)


# --- subgroups within classes ---------------------------------------------------------------------

STROKES: tuple[str, ...] = get_args(Stroke)  # thin, medium, thick
SLANTS: tuple[str, ...] = get_args(Slant)  # left, upright, right


def stroke_thresholds(thickness: np.ndarray) -> tuple[float, float]:
    """Tertiles of stroke thickness: thin below the first, thick above the second. The pipeline measures
    them on the held-out (validation and test) images, which keep the data's natural distribution even
    when `data.keep_subgroup` thins out the training split."""
    low, high = np.nanquantile(thickness, [1 / 3, 2 / 3])
    return float(low), float(high)


def subgroups(measures: pd.DataFrame, thresholds: tuple[float, float], upright_degrees: float = 10.0) -> pd.DataFrame:
    """Each image's stroke subgroup (thin/medium/thick by the data set's tertiles) and slant subgroup
    (left/upright/right beyond +-upright_degrees)."""
    low, high = thresholds
    stroke = np.where(measures["thickness"] < low, "thin", np.where(measures["thickness"] > high, "thick", "medium"))
    slant = np.where(measures["slant"] < -upright_degrees, "left",
                     np.where(measures["slant"] > upright_degrees, "right", "upright"))
    return pd.DataFrame({"stroke_group": stroke, "slant_group": slant}, index=measures.index)


def subgroup_masks(images: np.ndarray, reference: np.ndarray, upright_degrees: float) -> dict[str, np.ndarray]:
    """Which of `images` fall in each subgroup (thin ... right), with the stroke tertiles of `reference`."""
    thresholds = stroke_thresholds(measure(reference)["thickness"].to_numpy())
    groups = subgroups(measure(images), thresholds, upright_degrees)
    return {name: (groups[column] == name).to_numpy()
            for column, names in (("stroke_group", STROKES), ("slant_group", SLANTS)) for name in names}
