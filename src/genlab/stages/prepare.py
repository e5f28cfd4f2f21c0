"""DVC stage `prepare`: load the source, scale to [0, 1], split by class, validate with GX, write."""

from __future__ import annotations

import numpy as np

from genlab.config.params import load_params
from genlab.data import splits
from genlab.data.validate import ValidationFailed, validate_prepared
from genlab.evaluation import morphometry
from genlab.runtime.stage import argument_parser, run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__, reads_prepared_data=False)
    parser.add_argument("--out", required=True, help="folder for the prepared splits")
    parser.add_argument("--reports", required=True, help="folder for the great-expectations results")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    prepared = splits.prepare(params.data)
    total = sum(len(split.y) for split in prepared.splits().values())
    report = validate_prepared(prepared, splits.split_sizes(total, params.data.split),
                               params.validation.max_class_kl, params.validation.size_tolerance, args.reports)
    if not report.success:
        raise ValidationFailed(f"the prepared data failed {len(report.failures)} expectation(s) "
                               f"(results in {args.reports}):\n{report.describe()}")
    # validated as drawn; a requested bias is injected after, so that the audit (not GX) reports it
    train_groups = None
    if params.data.keep_subgroup:  # the audit's subgroups, its tertiles measured on the held-out images
        train_groups = morphometry.subgroup_masks(prepared.train.x, np.concatenate([prepared.validation.x,
                                                                                    prepared.test.x]),
                                                  params.audit.upright_degrees)
    prepared = splits.inject_bias(prepared, params.data.keep_fraction, params.data.seed,
                                params.data.keep_subgroup, train_groups)
    data_md5 = splits.save_prepared(prepared, args.out)
    sizes = ", ".join(f"{name} {len(split.y)}" for name, split in prepared.splits().items())
    print(f"prepared {params.data.source}: {sizes} images of {prepared.image_shape}; md5 {data_md5}")


if __name__ == "__main__":
    run_stage(main)
