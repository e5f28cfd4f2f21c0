"""great-expectations suite over the prepared data.

Each split becomes a table with one row per image (its label, shape, dtype,
smallest and largest pixel and count of non-finite pixels) and is checked for:
image shape and dtype, pixels in [0, 1], no NaN or inf, labels in the declared
set with every class present, the split's size, and its class proportions
against the whole data set (KL divergence). Results are saved as GX JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genlab.data.splits import PreparedData
from genlab.runtime.files import write_json


class ValidationFailed(ValueError):
    """The prepared data broke an expectation; the message lists every failure."""


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    failures: list[str] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)  # split -> GX result as JSON

    def describe(self) -> str:
        return "\n".join(f"  - {failure}" for failure in self.failures)


def image_table(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """One row per image: what the expectations look at."""
    flat = x.reshape(len(x), -1)
    finite = np.isfinite(flat)
    safe = np.where(finite, flat, 0.0)
    return pd.DataFrame({
        "label": y.astype(np.int64),
        "height": np.full(len(x), x.shape[1] if x.ndim == 3 else -1),
        "width": np.full(len(x), x.shape[2] if x.ndim == 3 else -1),
        "dtype": np.full(len(x), str(x.dtype)),
        "pixel_min": safe.min(axis=1) if flat.shape[1] else np.zeros(len(x)),
        "pixel_max": safe.max(axis=1) if flat.shape[1] else np.zeros(len(x)),
        "nonfinite_pixels": (~finite).sum(axis=1),
    })


def expectations(
    image_shape: tuple[int, int], num_classes: int, expected_rows: int, size_tolerance: int,
    class_shares: np.ndarray, max_class_kl: float,
) -> list:
    """The suite for one split."""
    import great_expectations.expectations as gxe

    labels = list(range(num_classes))
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=max(1, expected_rows - size_tolerance), max_value=expected_rows + size_tolerance),
        gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[image_shape[0]]),
        gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[image_shape[1]]),
        gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["float32"]),
        gxe.ExpectColumnValuesToBeInSet(column="nonfinite_pixels", value_set=[0]),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=labels),
        gxe.ExpectColumnKLDivergenceToBeLessThan(
            column="label",
            partition_object={"values": labels, "weights": [float(share) for share in class_shares]},
            threshold=max_class_kl,
        ),
    ]


def _describe_failure(split: str, result: dict) -> str:
    config = result["expectation_config"]
    kwargs = {key: value for key, value in config["kwargs"].items() if key not in ("batch_id", "partition_object")}
    observed = result.get("result", {})
    detail = observed.get("observed_value")
    if detail is None and "unexpected_count" in observed:
        detail = f"{observed['unexpected_count']} rows, e.g. {observed.get('partial_unexpected_list', [])[:5]}"
    if result.get("exception_info", {}).get("raised_exception"):
        detail = result["exception_info"]["exception_message"]
    return f"{split}: {config['type']} {kwargs} failed (observed: {detail})"


def validate_prepared(
    data: PreparedData, expected_sizes: dict[str, int], max_class_kl: float, size_tolerance: int,
    report_dir: str | Path,
) -> ValidationReport:
    """Run the suite on every split, save the GX results under `report_dir`, and return what failed."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no internet here; GX must not phone home
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (context.data_sources.add_pandas("prepared")
             .add_dataframe_asset("images").add_batch_definition_whole_dataframe("split"))
    all_labels = np.concatenate([split.y for split in data.splits().values()])
    in_range = all_labels[(all_labels >= 0) & (all_labels < data.num_classes)]
    class_shares = np.bincount(in_range, minlength=data.num_classes) / max(len(in_range), 1)
    image_shape = data.image_shape if data.train.x.ndim == 3 else (-1, -1)

    failures: list[str] = []
    results: dict[str, dict] = {}
    for name, split in data.splits().items():
        suite = context.suites.add(gx.ExpectationSuite(
            name=f"prepared_{name}",
            expectations=expectations(image_shape, data.num_classes, expected_sizes[name], size_tolerance,
                                      class_shares, max_class_kl)))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"prepared_{name}", data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": image_table(split.x, split.y)},
                                result_format="SUMMARY").to_json_dict()
        results[name] = result
        failures += [_describe_failure(name, item) for item in result["results"] if not item["success"]]

    report_dir = Path(report_dir)
    for name, result in results.items():
        write_json(report_dir / f"{name}.json", result)
    write_json(report_dir / "summary.json", {"success": not failures, "failures": failures})
    return ValidationReport(success=not failures, failures=failures, results=results)


def validate_representation(labels: np.ndarray, num_classes: int, expected_shares: np.ndarray,
                            max_class_kl: float) -> dict:
    """The audit's representation suite on one split's labels: every class present, and the label
    distribution within `max_class_kl` of the expected partition. Returns GX's result as a dict with
    the failures described; failing is a finding for the audit to report, not an error."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (context.data_sources.add_pandas("audit").add_dataframe_asset("labels")
             .add_batch_definition_whole_dataframe("split"))
    classes = list(range(num_classes))
    suite = context.suites.add(gx.ExpectationSuite(name="representation", expectations=[
        gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes),
        gxe.ExpectColumnKLDivergenceToBeLessThan(
            column="label", partition_object={"values": classes, "weights": [float(v) for v in expected_shares]},
            threshold=max_class_kl),
    ]))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="representation", data=batch,
                                                                            suite=suite))
    result = definition.run(batch_parameters={"dataframe": pd.DataFrame({"label": labels.astype(int)})},
                            result_format="SUMMARY").to_json_dict()
    result["failures"] = [_describe_failure("train", item) for item in result["results"] if not item["success"]]
    return result
