"""The comparison page: its pure parts on a four-model table, then the page itself in headless Chromium at a
laptop's 1366x768 window (it fits, its columns sort, a group of metrics opens) from a file:// URL."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
import services
from matplotlib import image as mpimg

from genlab.config.params import CompareParams
from genlab.evaluation import comparison, page

COMMON = {"data_floor_fid": 1.0, "data_floor_recall": 0.9, "data_floor_coverage": 0.9, "num_hyperparameters": 10}
EVALUATIONS = {
    "ddpm": {"fid": 2.0, "fid_to_floor": 2.0, "fid_to_floor_low": 1.5, "fid_to_floor_high": 2.5, "precision": 0.9,
             "recall": 0.6, "recall_low": 0.5, "recall_high": 0.7, "coverage": 0.9, "classes_covered": 10,
             "sampling_seconds_per_1000": 2.0, "num_params": 90000},
    "flow": {"fid": 4.0, "fid_to_floor": 4.0, "fid_to_floor_low": 3.5, "fid_to_floor_high": 4.5, "precision": 0.6,
             "recall": 0.8, "recall_low": 0.7, "recall_high": 0.9, "coverage": 0.7, "classes_covered": 10,
             "sampling_seconds_per_1000": 0.5, "num_params": 9000, "test_nll_bits_per_dim": 2.5},
    "gan": {"fid": 6.0, "fid_to_floor": 6.0, "precision": 0.7, "classes_covered": 10,  # no recall measured
            "sampling_seconds_per_1000": 0.02, "num_params": 20000, "zzz_new_measure": 1.0},
    "ae": {"fid": 30.0, "fid_to_floor": 30.0, "precision": 0.5, "recall": 0.2, "coverage": 0.3, "classes_covered": 8,
           "sampling_seconds_per_1000": 0.01, "num_params": 500, "test_bce": 0.3}
           | {f"morphometry_ks_{index}": index / 40 for index in range(40)},  # a quality group wider than the window
}
SUMMARIES = {name: {"family": family, "diagnosis": diagnosis, "params": {"optimizer": "adam"}}
             for name, family, diagnosis in (("ddpm", "diffusion", "converged"), ("flow", "flow", "converged"),
                                             ("gan", "gan", "converged"), ("ae", "autoencoder", "still_learning"))}
SAMPLES = {name: np.random.default_rng(index).random((10, 8, 8)) for index, name in enumerate(("ddpm", "flow", "ae"))}


@pytest.fixture
def table():
    evaluations = {name: COMMON | values for name, values in EVALUATIONS.items()}
    return comparison.add_verdicts(comparison.comparison_table(evaluations, SUMMARIES, "fid"), 10, CompareParams())


def render(table, tmp_path) -> str:
    figure = tmp_path / "chart.png"
    figure.write_bytes(b"\x89PNG fake")
    return page.comparison_page(table, comparison.which_is_right_for_you(table, 10, "fid"), "fid",
                                {"test_accuracy": 0.98}, {"a chart": figure, "missing": tmp_path / "none.png"}, SAMPLES)


def test_the_page_answers_first_and_fetches_nothing(table, tmp_path):
    shown = render(table, tmp_path)
    assert shown.index("<b>Best sample quality: ddpm</b>") < shown.index("<table")
    assert shown.count("data:image/png;base64,") == 1 + len(SAMPLES)  # the figure, a thumbnail per model with samples
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", shown)  # images inline, links within the page
    assert ("<td class='text verdict no' data-sort='3' title='not recommended: its samples cover 8 of 10 classes; its "
            "FID is 30x the data floor (over 10x: far from real images); its loss was still falling when training "
            "stopped (still learning: more epochs would change these numbers)'>missing classes, poor quality, still "
            "learning</td>") in shown  # the reasons on hover


def test_every_column_is_in_exactly_one_group_and_nothing_is_lost(table):
    columns = [column for column in page.metric_columns(table) if column != "model"]
    assert "fid_to_floor" in columns and "fid_to_floor_low" not in columns  # an interval is shown under its value
    grouped = [column for group in page.metric_groups(columns).values() for column in group]
    assert sorted(grouped) == sorted(columns)
    assert page.metric_groups(columns)["other"] == ["zzz_new_measure"]

    expected = {"fid_to_floor": "quality", "data_floor_recall": "quality", "intra_class_fid_to_floor": "quality",
                "rarest_class_fid_to_floor": "quality", "classes_covered": "classes and bias",
                "bias_amplification": "classes and bias", "rarest_class_share_ratio": "classes and bias",
                "worst_stroke_bce_ratio": "classes and bias", "test_nll_bits_per_dim": "reconstruction and likelihood",
                "judge_accuracy_on_reconstructions": "reconstruction and likelihood", "restore_psnr": "restoration",
                "restore_method": "restoration", "restore_seconds_per_1000": "timing",
                "ddim_sampling_seconds_per_1000": "timing", "copying_ct_pixels": "copying",
                "latent_dim": "model and training", "verdict": "model and training", "rank_fid": "ranks",
                "rank_class_share_tv_distance": "ranks", "something_new": "other"}
    groups = page.metric_groups(list(expected))
    assert {column: name for name, found in groups.items() for column in found} == expected
    # within a group, in the order of its patterns: the headline measure first, the data floor's last
    assert groups["quality"] == ["fid_to_floor", "intra_class_fid_to_floor", "rarest_class_fid_to_floor",
                                 "data_floor_recall"]


def test_a_verdict_is_a_short_word_per_reason():
    failed = pd.DataFrame([{"model": "bad", "classes_covered": 7, "judge_confidence": 0.3, "fid_to_floor": 40.0,
                            "copying_heldout_ratio_pixels": 0.1, "copying_heldout_p_value_pixels": 1e-6,
                            "diagnosis": "still_learning"}])
    verdict = comparison.add_verdicts(failed, 10, CompareParams())["verdict"].iloc[0]
    assert page.verdict_words(verdict) == ["missing classes", "unrecognised", "poor quality", "copies",
                                           "still learning"]
    assert page.verdict_words("recommended") == []
    assert page.verdict_words("not recommended: its decoder melted down") == ["its decoder melted"]


def test_a_value_reads_to_four_digits_with_its_interval_beneath():
    row = pd.Series({"fid_to_floor": 2.04567, "fid_to_floor_low": 1.5, "fid_to_floor_high": 2.5, "num_params": 90000.0,
                     "num_params_low": 90000.0, "num_params_high": 90000.0, "recall": np.nan, "recommended": True,
                     "restore_method": "search"})
    assert page.cell(row, "fid_to_floor", "x") == ("<td data-sort='2.04567'>2.046x "
                                                   "<span class='ci'>(1.5\u20132.5)</span></td>")
    assert page.cell(row, "num_params") == "<td data-sort='90000.0'>90,000</td>"  # a constant: no interval
    assert page.cell(row, "recall") == "<td data-sort=''></td>"  # missing: sorted last
    assert page.cell(row, "recommended") == "<td data-sort='1'>yes</td>"
    assert page.cell(row, "restore_method") == "<td class='text'>search</td>"


def test_a_thumbnail_is_a_grid_of_samples_dark_on_white():
    images = np.zeros((10, 8, 8))
    images[0] = 1.0  # the first all ink, the others blank
    uri = page.thumbnail(images)
    pixels = mpimg.imread(io.BytesIO(base64.b64decode(uri.removeprefix("data:image/png;base64,"))))
    assert pixels.shape[:2] == (68, 176)  # 2 x 5 images of 8 pixels and a line of 1 between them, 4x
    assert pixels[0, 0, :3].tolist() == [0, 0, 0]  # ink is black
    assert pixels[0, 40, :3].tolist() == [1, 1, 1]  # a blank image is white
    np.testing.assert_allclose(pixels[0, 33, :3], 200 / 255, atol=1 / 255)  # the grey line between them
    assert page.thumbnail(np.zeros((0, 8, 8))) is None


def test_in_chromium_the_page_fits_a_laptop_window_sorts_and_opens_groups(table, tmp_path):
    path = tmp_path / "comparison.html"
    path.write_text(render(table, tmp_path))
    fits = "document.documentElement.scrollWidth <= window.innerWidth"
    with services.chromium() as browser:
        tab = browser.new_page(viewport={"width": 1366, "height": 768})
        tab.goto(path.as_uri())
        assert tab.evaluate(fits)
        main = tab.locator("table.main")

        def models() -> list[str]:
            return main.locator("tbody td:nth-child(2) b").all_inner_texts()

        assert models() == ["ddpm", "flow", "gan", "ae"]  # by FID
        recall = main.locator("th button", has_text="recall")  # its name gains the arrow of the order
        recall.click()
        assert models() == ["ae", "ddpm", "flow", "gan"]  # ascending, the model without a recall last
        recall.click()
        assert models() == ["flow", "ddpm", "ae", "gan"]  # descending, and still last
        assert main.locator("th[aria-sort]").all_inner_texts() == ["recall"]  # the one sorted by, and how
        assert main.locator("th[aria-sort=descending]").count() == 1
        main.locator("th button", has_text="parameters").click()
        assert models() == ["ae", "flow", "gan", "ddpm"]  # as numbers: 500 < 9,000 < 20,000 < 90,000
        assert main.locator("img.thumb").first.evaluate("image => image.naturalWidth") == 176

        quality = tab.locator("details.group").filter(has=tab.locator("summary", has_text="quality"))
        assert not quality.locator("table").is_visible()
        quality.locator("summary").click()
        assert quality.evaluate("details => details.open") and quality.locator("table").is_visible()
        box = quality.locator(".scroll")
        assert box.evaluate("box => box.scrollWidth > box.clientWidth")  # wider than the window: it scrolls
        assert tab.evaluate(fits)  # in its own box, not the page
