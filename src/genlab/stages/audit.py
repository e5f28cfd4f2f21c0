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

import numpy as np
import pandas as pd

from genlab import audit, data, morphometry, plots, tracking
from genlab.files import atomic_dir, write_json
from genlab.params import load_params
from genlab.stages import argument_parser, run_stage


AUDIT_METRICS = ("images", "imbalance_ratio", "min_class_ratio", "flagged_classes")  # per split, in MLflow


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--out", required=True, help="folder for the audit's figures, tables and data card")
    parser.add_argument("--metrics", required=True, help="the audit's metrics JSON (DVC metrics)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    settings = params.audit
    prepared = data.load_prepared(args.data)
    splits = prepared.splits()
    counts = audit.class_counts({name: split.y for name, split in splits.items()}, prepared.num_classes)
    metrics = audit.audit_metrics(counts, settings.significance)
    representation = audit.class_representation(counts, seed=params.data.seed)
    means = audit.mean_images(prepared.train.x, prepared.train.y, prepared.num_classes)

    measures = pd.concat([morphometry.measure(split.x).assign(split=name, label=split.y)
                          for name, split in splits.items()], ignore_index=True)
    thresholds = morphometry.stroke_thresholds(measures.loc[measures["split"] != "train", "thickness"].to_numpy())
    measures = measures.join(morphometry.subgroups(measures, thresholds, settings.upright_degrees))
    train = measures[measures["split"] == "train"]
    strokes = audit.subgroup_counts(train["label"].to_numpy(), train["stroke_group"], prepared.num_classes,
                                    morphometry.STROKES)
    slants = audit.subgroup_counts(train["label"].to_numpy(), train["slant_group"], prepared.num_classes,
                                   morphometry.SLANTS)
    thin = audit.thin_cells(strokes, settings.thin_cell_ratio) + audit.thin_cells(slants, settings.thin_cell_ratio)
    flagged = {split: [row for row in found["classes"] if row["flagged"]] for split, found in representation.items()}
    from genlab.validate import validate_representation

    held_out = np.concatenate([prepared.validation.y, prepared.test.y])  # never injected: the natural partition
    expectations = validate_representation(prepared.train.y, prepared.num_classes,
                                           np.bincount(held_out, minlength=prepared.num_classes) / len(held_out),
                                           params.validation.max_class_kl)

    metrics |= {
        "representation": {split: {"flagged_classes": len(flagged[split]),
                                   "min_class_ratio": min(row["ratio"] for row in found["classes"]),
                                   "fit_to_uniform_p": found["fit_to_uniform"]["p_value"],
                                   "fit_to_whole_p": found["fit_to_whole"]["p_value"]}
                           | {f"tv_to_{other}": values["tv_distance"] for other, values in found["distances"].items()}
                           | {f"js_to_{other}": values["js_distance"] for other, values in found["distances"].items()}
                           for split, found in representation.items()},
        "expectations": {"train_representation_success": bool(expectations["success"]),
                         "failed": len(expectations["failures"])},
        "subgroups": {"thin_cells": len(thin), "thick_stroke_threshold": thresholds[1],
                      "thin_stroke_threshold": thresholds[0]}
                     | {f"train_{group}_share": float(np.mean(train["stroke_group"] == group)) for group in morphometry.STROKES}
                     | {f"train_{group}_share": float(np.mean(train["slant_group"] == group)) for group in morphometry.SLANTS},
    }
    card = audit.data_card(prepared.source, prepared.image_shape, counts, representation,
                           metrics["split_consistency"], strokes, slants, thin, thresholds,
                           dict(params.data.keep_fraction), dict(params.data.keep_subgroup),
                           settings.upright_degrees, origin=prepared.origin)

    with atomic_dir(args.out) as staging:
        counts.to_csv(staging / "class_counts.csv", index_label="split")
        shares = audit.class_shares(counts)
        shares.round(6).to_csv(staging / "class_shares.csv", index_label="split")
        measures.round(4).to_csv(staging / "morphometry.csv", index_label="image")
        strokes.to_csv(staging / "train_strokes_by_class.csv", index_label="class")
        slants.to_csv(staging / "train_slants_by_class.csv", index_label="class")
        write_json(staging / "representation.json", {"classes": representation, "thin_cells": thin})
        write_json(staging / "representation_expectations.json", expectations)
        (staging / "data_card.md").write_text(card)
        plots.save(plots.image_rows({"mean": means}, "mean training image per class"), staging / "mean_images.png")
        plots.save(plots.grouped_bars(shares.drop(index="all"), "class shares per split", "share"),
                   staging / "class_shares.png")
        plots.save(plots.distributions(train, train["label"].to_numpy(), morphometry.MEASURES,
                                       "morphometry of the training images, per class"),
                   staging / "morphometry.png")
        plots.save(plots.heatmap(pd.concat([strokes, slants], axis=1), "training images by class and subgroup"),
                   staging / "subgroups.png")
    write_json(args.metrics, metrics)

    experiment_id = tracking.setup(params.tracking.experiment)
    with tracking.run(experiment_id, run_name="audit",
                      tags=tracking.provenance_tags("audit", data.data_hash(args.data))):
        tracking.log_params(settings.model_dump() | {"source": prepared.source,
                                                     "keep_fraction": dict(params.data.keep_fraction),
                                                     "keep_subgroup": dict(params.data.keep_subgroup)})
        tracking.log_splits(prepared, args.data, data.data_hash(args.data), ("train", "validation", "test"))
        # the scalars a person compares, one chart section per split ("all": the three together) and per check;
        # every value of every split in the table tables/splits.json and in the metrics JSON
        every = {split: metrics["splits"].get(split, {}) | metrics["representation"].get(split, {})
                 for split in dict.fromkeys([*metrics["splits"], *metrics["representation"]])}
        tracking.log_metrics({f"{split}/{key}": values[key] for split, values in every.items()
                              for key in AUDIT_METRICS if key in values}
                             | {f"split_consistency/{key}": float(metrics["split_consistency"][key])
                                for key in ("chi2", "p_value")}
                             | {"subgroups/thin_cells": metrics["subgroups"]["thin_cells"],
                                "expectations/failed": metrics["expectations"]["failed"]})
        tracking.log_table(pd.DataFrame([{"split": split} | values for split, values in every.items()]),
                           "tables/splits.json")
        tracking.log_artifacts(Path(args.out), "audit")
        tracking.log_artifacts(Path(args.metrics), "audit")
        consistency = metrics["split_consistency"]
        line = (f"imbalance ratio {metrics['splits']['all']['imbalance_ratio']:.2f}; split consistency "
                f"chi2 {consistency['chi2']:.2f}, p {consistency['p_value']:.3f}; flagged classes "
                f"{ {split: len(rows) for split, rows in flagged.items()} }; thin subgroup cells {len(thin)}")
        tracking.describe(f"Representation audit of the {prepared.source} data: {line}.")
    print(f"audit: {line}")
    for split, rows in flagged.items():
        for row in rows:
            print(f"  flag ({split}): {row['reason']}")
    for failure in expectations["failures"]:
        print(f"  expectation failed: {failure}")


if __name__ == "__main__":
    run_stage(main)
