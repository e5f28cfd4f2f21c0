"""DVC stage `audit`: class counts and shares per split, imbalance, split consistency, mean images."""

from __future__ import annotations

from pathlib import Path

from genlab import audit, data, plots, tracking
from genlab.files import atomic_dir, write_json
from genlab.params import load_params
from genlab.stages import argument_parser, run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--out", required=True, help="folder for the audit's figures and tables")
    parser.add_argument("--metrics", required=True, help="the audit's metrics JSON (DVC metrics)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    prepared = data.load_prepared(args.data)
    counts = audit.class_counts({name: split.y for name, split in prepared.splits().items()}, prepared.num_classes)
    metrics = audit.audit_metrics(counts, params.audit.significance)
    means = audit.mean_images(prepared.train.x, prepared.train.y, prepared.num_classes)

    with atomic_dir(args.out) as staging:
        counts.to_csv(staging / "class_counts.csv", index_label="split")
        audit.class_shares(counts).round(6).to_csv(staging / "class_shares.csv", index_label="split")
        plots.save(plots.image_rows({"mean": means}, "mean training image per class"), staging / "mean_images.png")
    write_json(args.metrics, metrics)

    experiment_id = tracking.setup(params.tracking.experiment)
    with tracking.run(experiment_id, run_name="audit",
                      tags=tracking.provenance_tags("audit", data.data_hash(args.data))):
        tracking.log_params({"significance": params.audit.significance, "source": prepared.source})
        flat = {f"{split}_{key}": value for split, values in metrics["splits"].items() for key, value in values.items()}
        flat |= {f"split_consistency_{key}": float(value) for key, value in metrics["split_consistency"].items()}
        tracking.log_metrics(flat)
        tracking.log_artifacts(Path(args.out), "audit")
        tracking.log_artifacts(Path(args.metrics), "audit")
    consistency = metrics["split_consistency"]
    print(f"audit: imbalance ratio {metrics['splits']['all']['imbalance_ratio']:.2f}; split consistency "
          f"chi2 {consistency['chi2']:.2f}, p {consistency['p_value']:.3f}")


if __name__ == "__main__":
    run_stage(main)
