"""Morphometry against strokes of known width and angle, and its stability on the coarse digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("skimage")

from genlab.evaluation import morphometry


def bar(width: float, degrees: float, size: int = 96, height: int = 60) -> np.ndarray:
    """A binary stroke `height` rows tall whose rows are `width` pixels wide, leaning right by `degrees`."""
    rows, columns = np.indices((size, size))
    top = (size - height) // 2
    centre_row = size / 2
    centre_x = size / 2 + 0.25 + math.tan(math.radians(degrees)) * (centre_row - rows)  # up and to the right
    return (np.abs(columns + 0.5 - centre_x) < width / 2) & (rows >= top) & (rows < top + height)


@pytest.mark.parametrize("width", [4, 7, 10])
def test_an_upright_stroke(width):
    found = morphometry.measure_binary(bar(width, 0.0))
    assert found["thickness"] == pytest.approx(width, abs=1.0)
    assert found["width"] == pytest.approx(width, abs=1.0)
    assert found["slant"] == pytest.approx(0.0, abs=0.5)
    assert found["area"] == pytest.approx(width * 60, rel=0.05)
    assert found["length"] == pytest.approx(60, abs=width + 1)


@pytest.mark.parametrize("degrees", [-25.0, -10.0, 15.0, 30.0])
def test_a_slanted_stroke(degrees):
    width = 8
    found = morphometry.measure_binary(bar(width, degrees))
    assert found["slant"] == pytest.approx(degrees, abs=1.5)
    assert found["width"] == pytest.approx(width, abs=1.5)  # the slant sheared away
    assert found["thickness"] == pytest.approx(width * math.cos(math.radians(degrees)), abs=1.2)


def test_units_are_the_original_pixels():
    fine = morphometry.measure_binary(bar(8, 20.0), factor=4)
    assert fine["thickness"] == pytest.approx(2.0 * math.cos(math.radians(20)), abs=0.3)
    assert fine["area"] == pytest.approx(8 * 60 / 16, rel=0.05)
    assert fine["slant"] == pytest.approx(20.0, abs=1.5)


def test_an_empty_image_has_no_measures():
    assert all(math.isnan(value) for value in morphometry.measure_binary(np.zeros((8, 8), bool)).values())


def test_a_coarse_8x8_stroke_is_measured_after_upscaling():
    image = np.zeros((8, 8))
    image[1:7, 3:5] = 1.0  # two pixels wide, six tall
    (found,) = morphometry.measure(image[None]).to_dict("records")
    assert morphometry.upscale_factor((8, 8)) == 8 and morphometry.upscale_factor((28, 28)) == 4
    assert found["width"] == pytest.approx(2.0, abs=0.5)
    assert found["thickness"] == pytest.approx(2.0, abs=0.5)
    assert found["slant"] == pytest.approx(0.0, abs=1.0)


def test_digit_measures_are_stable_across_upscaling():
    from sklearn.datasets import load_digits

    images = load_digits().images[:60] / 16.0
    at = {factor: np.array([list(morphometry.measure_binary(morphometry.binarise(image, factor), factor).values())
                            for image in images]) for factor in (8, 12)}
    relative = np.abs(at[8] - at[12]) / (np.abs(at[12]) + 1.0)
    assert np.nanmean(relative, axis=0).max() < 0.1  # every measure within 10% on average


def test_subgroups_split_by_thickness_tertiles_and_slant():
    measures = morphometry.measure(np.stack([np.pad(np.ones((6, w)), ((1, 1), (1, 7 - w)))
                                             for w in (1, 2, 3, 4, 5, 6)]))
    thresholds = morphometry.stroke_thresholds(measures["thickness"].to_numpy())
    groups = morphometry.subgroups(measures, thresholds)
    assert list(groups["stroke_group"]) == ["thin", "thin", "medium", "medium", "thick", "thick"]
    assert set(groups["slant_group"]) == {"upright"}
