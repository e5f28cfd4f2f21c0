"""Image-to-image restoration of every shipped model (issue 14): the work it adds to evaluate.

Reads the trained models, the judge, the prepared data and the audit's stroke thresholds of a
project where `dvc repro` has run (read only: nothing is written there) and, in one process with
TensorFlow imported and warmed up, times `genlab.evaluation.restoration.report` per model with the project's
`restore:` settings: restoring each task by each of the model's methods, then measuring it (judge,
PSNR/SSIM, morphometry, permutations). Target: all shipped digits models together in at most 60 s.

    .venv/bin/python benchmarks/restore.py [--project .] [--models vae gan] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def restoration_inputs(root: Path, judge_root: Path | None = None):
    """What evaluate@<model> hands `genlab.evaluation.restoration.report` in the project at `root`: its params, the
    judge (of `judge_root`, by default the same project) and the options by name (test subset, training shares,
    stroke thresholds, settings, grid), as evaluate's own `TestImages.restoration_inputs` makes them."""
    import inspect

    from genlab.config.params import load_params
    from genlab.data import splits
    from genlab.evaluation import judge as judges
    from genlab.evaluation import report, restoration
    from genlab.runtime.files import read_json

    params = load_params(root / "params.yaml")
    prepared = splits.load_prepared(root / "data/prepared")
    judge = judges.load((judge_root or root) / "models/judge")
    test = report.TestImages.measure(prepared, read_json(root / "reports/audit/metrics.json")["subgroups"],
                                     params.audit.upright_degrees)
    values = test.restoration_inputs(prepared.train.y, prepared.num_classes, params.restore, params.train.grid_images)
    names = list(inspect.signature(restoration.report).parameters)[2:]  # after the model and the judge
    return params, judge, dict(zip(names, values, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=PROJECT, help="a project after `dvc repro`")
    parser.add_argument("--models", nargs="*", help="models of its params.yaml (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from genlab.evaluation import restoration
    from genlab.models.registry import load_model

    root = args.project.resolve()
    params, judge, options = restoration_inputs(root)
    images = options["images"]
    judge.look(images)  # warm up TensorFlow's predict path once, as evaluate has by then
    rows = []
    for name in args.models or list(params.models):
        model, config = load_model(root / "models" / name)
        started = time.perf_counter()
        results, _ = restoration.report(model, judge, **options)
        seconds = time.perf_counter() - started
        restoring = {f"{task} {method}": values["seconds_per_1000"] * len(images) / 1000
                     for task, by_method in results["tasks"].items() for method, values in by_method.items()}
        rows.append({"model": name, "family": config.family, "seconds": seconds,
                     "restoring_seconds": sum(restoring.values()), "per_1000": {
                         key: 1000 * value / len(images) for key, value in restoring.items()},
                     "psnr": results["summary"]["psnr"], "identity_kept": results["summary"]["identity_kept"]})
        print(f"{name} ({config.family}): {seconds:.1f} s, of which restoring {rows[-1]['restoring_seconds']:.1f} s",
              flush=True)
    total = sum(row["seconds"] for row in rows)
    print(f"\n{len(images)} test images, tasks {', '.join(params.restore.tasks)}; search: "
          f"{params.restore.search_steps} steps x {params.restore.search_restarts} restarts\n")
    print("| model | family | seconds | of which restoring | per 1000 images, by task and method |")
    print("|:--|:--|--:|--:|:--|")
    for row in rows:
        shown = ", ".join(f"{key} {value:.1f} s" for key, value in row["per_1000"].items())
        print(f"| {row['model']} | {row['family']} | {row['seconds']:.1f} | {row['restoring_seconds']:.1f} | {shown} |")
    print(f"| **all** | | **{total:.1f}** | {sum(row['restoring_seconds'] for row in rows):.1f} | "
          "target: at most 60 s |")
    if args.json:
        args.json.write_text(json.dumps({"images": len(images), "total_seconds": total, "models": rows}, indent=2))


if __name__ == "__main__":
    main()
