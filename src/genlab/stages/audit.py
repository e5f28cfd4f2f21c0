"""DVC stage `audit`: how each class and each stroke subgroup is represented, and a data card.

Classes: counts and shares per split, imbalance, the chi-square test of split consistency,
goodness of fit against uniform and against the whole data set, TV and Jensen-Shannon
distances between splits, each class's representation ratio with a four-fifths flag beyond
a bootstrap noise floor. Subgroups: Morpho-MNIST measures of every image (area, length,
thickness, slant, width), binned per class into thin/medium/thick strokes and left/upright/right
slants, with thin cells flagged. Writes tables, figures and a Markdown data card (`--out`) and
the summary numbers as DVC metrics (`--metrics`); logs them to an MLflow `audit` run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genlab import tracking
from genlab.config.params import load_params
from genlab.data import splits
from genlab.evaluation import audit, morphometry, plots
from genlab.runtime.files import atomic_dir, write_json
from genlab.runtime.stage import argument_parser, run_stage

AUDIT_METRICS = ("images", "imbalance_ratio", "min_class_ratio", "flagged_classes")  # per split, in MLflow


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--out", required=True, help="folder for the audit's figures, tables and data card")
    parser.add_argument("--metrics", required=True, help="the audit's metrics JSON (DVC metrics)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    prepared = splits.load_prepared(args.data)
    data_md5 = splits.data_hash(args.data)
    found = audit.audit(prepared, params.audit, params.data, params.validation.max_class_kl)
    with atomic_dir(args.out) as staging:
        write_folder(staging, found)
    write_json(args.metrics, found.metrics)
    line = audit.describe(found)
    experiment_id = tracking.setup(params.tracking.experiment)
    with tracking.run(experiment_id, run_name="audit",
                      tags=tracking.provenance_tags("audit", data_md5)):
        tracking.log_params(params.audit.model_dump() | {"source": prepared.source,
                                                         "keep_fraction": dict(params.data.keep_fraction),
                                                         "keep_subgroup": dict(params.data.keep_subgroup)})
        tracking.log_splits(prepared, args.data, data_md5, ("train", "validation", "test"))
        scalars, table = audit.run_metrics(found.metrics, AUDIT_METRICS)
        tracking.log_metrics(scalars)
        tracking.log_table(table, "tables/splits.json")
        tracking.log_artifacts(Path(args.out), "audit")
        tracking.log_artifacts(Path(args.metrics), "audit")
        tracking.describe(f"Representation audit of the {prepared.source} data: {line}.")
    print(f"audit: {line}")
    for split, rows in found.flagged.items():
        for row in rows:
            print(f"  flag ({split}): {row['reason']}")
    for failure in found.expectations["failures"]:
        print(f"  expectation failed: {failure}")


def write_folder(folder: Path, found: audit.Audit) -> None:
    """The audit's tables, measures, data card and figures."""
    found.counts.to_csv(folder / "class_counts.csv", index_label="split")
    shares = audit.class_shares(found.counts)
    shares.round(6).to_csv(folder / "class_shares.csv", index_label="split")
    found.measures.round(4).to_csv(folder / "morphometry.csv", index_label="image")
    found.strokes.to_csv(folder / "train_strokes_by_class.csv", index_label="class")
    found.slants.to_csv(folder / "train_slants_by_class.csv", index_label="class")
    write_json(folder / "representation.json", {"classes": found.representation, "thin_cells": found.thin})
    write_json(folder / "representation_expectations.json", found.expectations)
    (folder / "data_card.md").write_text(found.card)
    train = found.measures[found.measures["split"] == "train"]
    plots.save(plots.image_rows({"mean": found.means}, "mean training image per class"), folder / "mean_images.png")
    plots.save(plots.grouped_bars(shares.drop(index="all"), "class shares per split", "share"),
               folder / "class_shares.png")
    plots.save(plots.distributions(train, train["label"].to_numpy(), morphometry.MEASURES,
                                   "morphometry of the training images, per class"), folder / "morphometry.png")
    plots.save(plots.heatmap(pd.concat([found.strokes, found.slants], axis=1), "training images by class and subgroup"),
               folder / "subgroups.png")


if __name__ == "__main__":
    run_stage(main)
