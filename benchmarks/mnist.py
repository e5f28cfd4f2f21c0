"""How long the MNIST configuration (configs/mnist.yaml) takes on this machine's CPU.

The machines that run this have no internet, so MNIST itself cannot be downloaded:
this writes a stand-in of the same size and format (a Keras-style `mnist.npz`,
60000 + 10000 uint8 28x28 images) made from scikit-learn's digits, upscaled 3x and
shifted at random, and runs the full `dvc repro` of configs/mnist.yaml on it with
`data.path` pointing at the file. Timings carry over to real MNIST (same shapes and
epochs); the loss values do not.

With `--epochs N` every model trains N epochs instead of its configured number, and each
train stage's full time is projected from its measured median epoch (models/<name>/training.json):
measured + (configured epochs - N) x seconds per epoch. That measures an hour-long CPU run
in a fraction of it.

    .venv/bin/python benchmarks/mnist.py [--epochs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml
from pipeline import full_repro

from genlab import sandbox

PROJECT = Path(__file__).resolve().parents[1]


def mnist_stand_in(path: Path, seed: int = 0) -> Path:
    """70000 digit images of 28x28 in Keras's mnist.npz layout."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(digits.target), size=70000)
    big = np.kron(digits.images[chosen] / 16.0, np.ones((1, 3, 3)))  # (N, 24, 24)
    images = np.zeros((70000, 28, 28), dtype=np.uint8)
    offsets = rng.integers(0, 5, size=(70000, 2))
    for index, (top, left) in enumerate(offsets):
        images[index, top:top + 24, left:left + 24] = (255 * big[index]).astype(np.uint8)
    labels = digits.target[chosen].astype(np.uint8)
    np.savez(path, x_train=images[:60000], y_train=labels[:60000], x_test=images[60000:], y_test=labels[60000:])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="train every model this many epochs (>= 2) and project")
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    args = parser.parse_args()
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch also traces the graphs")
    with tempfile.TemporaryDirectory(prefix="genlab-mnist-") as scratch:
        scratch = Path(scratch)
        params = yaml.safe_load((PROJECT / "configs/mnist.yaml").read_text())
        params["data"]["path"] = str(mnist_stand_in(scratch / "mnist.npz"))
        configured = {name: model["epochs"] for name, model in params["models"].items()}
        for model in params["models"].values():
            model["epochs"] = args.epochs or model["epochs"]
        root = sandbox.copy_project(PROJECT, scratch / "project", params)
        total, stages = full_repro(root)
        table = (root / "reports/compare/comparison.md").read_text()
        per_epoch = {name: json.loads((root / f"models/{name}/training.json").read_text())["seconds_per_epoch"]
                     for name in configured}
    projected = {stage: seconds + (configured[stage[6:]] - args.epochs) * per_epoch[stage[6:]]
                 if args.epochs and stage.startswith("train@") else seconds for stage, seconds in stages.items()}
    print(f"# MNIST configuration on {os.cpu_count()} CPUs (stand-in data of MNIST's size)\n")
    print(f"Full `dvc repro`: **{total / 60:.1f} min** measured" + (
        f" with {args.epochs} epochs per model; **{sum(projected.values()) / 60:.1f} min** projected for the "
        "configured epochs" if args.epochs else ""))
    print("\n| stage | epochs | seconds per epoch | measured seconds | projected seconds |\n|:--|--:|--:|--:|--:|")
    for stage, seconds in stages.items():
        name = stage.partition("@")[2]
        epochs = f"{configured[name]}" if stage.startswith("train@") else ""
        rate = f"{per_epoch[name]:.1f}" if stage.startswith("train@") else ""
        print(f"| {stage} | {epochs} | {rate} | {seconds:.0f} | {projected[stage]:.0f} |")
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps({"full_repro_seconds": total, "stage_seconds": stages,
                                         "projected_stage_seconds": projected, "seconds_per_epoch": per_epoch,
                                         "epochs": args.epochs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
