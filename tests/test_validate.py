"""The great-expectations suite over prepared data: clean digits pass, each defect is named."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from genlab.config.params import DataParams, SplitParams
from genlab.data import splits
from genlab.data.splits import PreparedData, Split
from genlab.data.validate import ValidationReport, image_table, validate_prepared

MAX_KL = 0.01
TOLERANCE = 10


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    return splits.prepare(DataParams(source="digits", seed=42))


@pytest.fixture(scope="module")
def sizes(prepared) -> dict[str, int]:
    total = sum(len(split.y) for split in prepared.splits().values())
    return splits.split_sizes(total, SplitParams())


def with_split(prepared: PreparedData, name: str, x=None, y=None) -> PreparedData:
    split = getattr(prepared, name)
    return dataclasses.replace(prepared, **{name: Split(split.x if x is None else x, split.y if y is None else y)})


def run(prepared, sizes, report_dir, max_kl=MAX_KL, tolerance=TOLERANCE) -> ValidationReport:
    return validate_prepared(prepared, sizes, max_kl, tolerance, report_dir)


def failed_on(report: ValidationReport, split: str, expectation: str, column: str | None = None) -> list[str]:
    return [failure for failure in report.failures
            if failure.startswith(f"{split}: {expectation} ")
            and (column is None or f"'column': '{column}'" in failure)]


def assert_failed(report, report_dir, split, expectation, column=None):
    assert report.success is False
    matches = failed_on(report, split, expectation, column)
    assert matches, f"no {split} {expectation} {column} failure in {report.failures}"
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["success"] is False
    assert summary["failures"] == report.failures
    assert any(failure in summary["failures"] for failure in matches)
    return matches


def test_clean_digits_pass_and_write_reports(prepared, sizes, tmp_path):
    report_dir = tmp_path / "reports"
    report = run(prepared, sizes, report_dir)
    assert report.success is True, report.describe()
    assert report.failures == []
    assert report.describe() == ""
    assert sorted(path.name for path in report_dir.iterdir()) == ["summary.json", "test.json", "train.json",
                                                                   "validation.json"]
    assert json.loads((report_dir / "summary.json").read_text()) == {"failures": [], "success": True}
    for name in splits.SPLITS:
        saved = json.loads((report_dir / f"{name}.json").read_text())
        assert saved["success"] is True
        assert len(saved["results"]) == 10  # every expectation of the suite was evaluated
        assert saved == report.results[name]
        types = {item["expectation_config"]["type"] for item in saved["results"]}
        assert "expect_column_kl_divergence_to_be_less_than" in types
        assert "expect_table_row_count_to_be_between" in types


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nonfinite_pixels_fail(prepared, sizes, tmp_path, bad_value):
    x = prepared.train.x.copy()
    x[3, 2, 2] = bad_value
    x[7, 0, 0] = bad_value
    report = run(with_split(prepared, "train", x=x), sizes, tmp_path)
    matches = assert_failed(report, tmp_path, "train", "expect_column_values_to_be_in_set", "nonfinite_pixels")
    assert "observed: 2 rows" in matches[0]
    # non-finite pixels are not also reported as out of range
    assert not failed_on(report, "train", "expect_column_values_to_be_between")
    assert len(report.failures) == 1


def test_pixel_above_one_fails_pixel_max(prepared, sizes, tmp_path):
    x = prepared.validation.x.copy()
    x[0, 4, 4] = 1.5
    report = run(with_split(prepared, "validation", x=x), sizes, tmp_path)
    matches = assert_failed(report, tmp_path, "validation", "expect_column_values_to_be_between", "pixel_max")
    assert "1.5" in matches[0]
    assert report.failures == matches


def test_negative_pixel_fails_pixel_min(prepared, sizes, tmp_path):
    x = prepared.test.x.copy()
    x[5, 1, 1] = -0.25
    report = run(with_split(prepared, "test", x=x), sizes, tmp_path)
    matches = assert_failed(report, tmp_path, "test", "expect_column_values_to_be_between", "pixel_min")
    assert "-0.25" in matches[0]
    assert report.failures == matches


def test_label_outside_the_classes_fails_label_set(prepared, sizes, tmp_path):
    y = prepared.train.y.copy()
    y[0] = 11
    report = run(with_split(prepared, "train", y=y), sizes, tmp_path)
    matches = assert_failed(report, tmp_path, "train", "expect_column_values_to_be_in_set", "label")
    assert "[11]" in matches[0]
    assert not failed_on(report, "validation", "expect_column_values_to_be_in_set", "label")


def test_split_missing_a_class_fails(prepared, sizes, tmp_path):
    keep = prepared.test.y != 9
    report = run(with_split(prepared, "test", x=prepared.test.x[keep], y=prepared.test.y[keep]), sizes, tmp_path)
    assert_failed(report, tmp_path, "test", "expect_column_distinct_values_to_contain_set", "label")
    assert not failed_on(report, "train", "expect_column_distinct_values_to_contain_set")


def test_skewed_split_fails_kl(prepared, sizes, tmp_path):
    y = prepared.train.y.copy()
    y[: len(y) // 2] = 3  # half of train becomes class 3
    report = run(with_split(prepared, "train", y=y), sizes, tmp_path)
    matches = assert_failed(report, tmp_path, "train", "expect_column_kl_divergence_to_be_less_than", "label")
    observed = float(matches[0].rsplit("observed: ", 1)[1].rstrip(")"))
    assert observed > MAX_KL
    assert "'threshold': 0.01" in matches[0]


def test_kl_threshold_is_respected(prepared, sizes, tmp_path):
    # a mild skew that fails at the default threshold passes at a generous one
    y = prepared.train.y.copy()
    y[:60] = 3
    strict = run(with_split(prepared, "train", y=y), sizes, tmp_path / "strict", max_kl=1e-4)
    assert failed_on(strict, "train", "expect_column_kl_divergence_to_be_less_than")
    generous = run(with_split(prepared, "train", y=y), sizes, tmp_path / "generous", max_kl=1.0)
    assert not failed_on(generous, "train", "expect_column_kl_divergence_to_be_less_than")


def test_wrong_split_size_fails_row_count(prepared, sizes, tmp_path):
    expected = dict(sizes, validation=sizes["validation"] + 100)
    report = run(prepared, expected, tmp_path)
    matches = assert_failed(report, tmp_path, "validation", "expect_table_row_count_to_be_between")
    assert f"observed: {len(prepared.validation.y)}" in matches[0]
    assert report.failures == matches


def test_size_tolerance_allows_small_differences(prepared, sizes, tmp_path):
    expected = dict(sizes, validation=sizes["validation"] + 5)
    assert run(prepared, expected, tmp_path / "ok", tolerance=5).success is True
    assert run(prepared, expected, tmp_path / "bad", tolerance=4).success is False


def test_float64_pixels_fail_dtype(prepared, sizes, tmp_path):
    report = run(with_split(prepared, "train", x=prepared.train.x.astype(np.float64)), sizes, tmp_path)
    matches = assert_failed(report, tmp_path, "train", "expect_column_values_to_be_in_set", "dtype")
    assert "float64" in matches[0]
    assert report.failures == matches


def test_wrong_image_shape_fails(prepared, sizes, tmp_path):
    cropped = np.ascontiguousarray(prepared.test.x[:, :7, :])
    report = run(with_split(prepared, "test", x=cropped), sizes, tmp_path)
    assert_failed(report, tmp_path, "test", "expect_column_values_to_be_in_set", "height")
    assert not failed_on(report, "test", "expect_column_values_to_be_in_set", "width")


def test_image_table_columns():
    x = np.array([[[0.0, 0.5], [np.nan, 1.0]], [[0.2, 0.2], [0.2, np.inf]]], np.float32)
    table = image_table(x, np.array([4, 7]))
    assert table["label"].tolist() == [4, 7]
    assert table["height"].tolist() == [2, 2] and table["width"].tolist() == [2, 2]
    assert table["dtype"].tolist() == ["float32", "float32"]
    assert table["nonfinite_pixels"].tolist() == [1, 1]
    np.testing.assert_allclose(table["pixel_min"], [0.0, 0.0])  # non-finite pixels count as 0
    np.testing.assert_allclose(table["pixel_max"], [1.0, 0.2], rtol=1e-6)


def test_representation_expectations_pass_for_a_balanced_split_and_fail_for_a_missing_class():
    from genlab.data.validate import validate_representation

    balanced = np.repeat(np.arange(4), 50)
    passed = validate_representation(balanced, 4, np.full(4, 0.25), max_class_kl=0.01)
    assert passed["success"] is True and passed["failures"] == []
    without_three = np.repeat(np.arange(3), 50)
    failed = validate_representation(without_three, 4, np.full(4, 0.25), max_class_kl=0.01)
    assert failed["success"] is False
    assert any("expect_column_distinct_values_to_contain_set" in failure for failure in failed["failures"])
    assert any("expect_column_kl_divergence_to_be_less_than" in failure for failure in failed["failures"])
