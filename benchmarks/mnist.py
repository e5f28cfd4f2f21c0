"""How long the MNIST configuration (configs/mnist.yaml) takes on this machine's CPU.

The machines that run this have no internet, so MNIST itself cannot be downloaded:
this writes a stand-in of the same size and format (a Keras-style `mnist.npz`,
60000 + 10000 uint8 28x28 images) made from scikit-learn's digits, upscaled 3x and
shifted at random, and runs the full `dvc repro` of configs/mnist.yaml on it with
`data.path` pointing at the file. Timings carry over to real MNIST (same shapes and
epochs); the loss values do not.

    .venv/bin/python benchmarks/mnist.py [--json PATH]
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
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genlab-mnist-") as scratch:
        scratch = Path(scratch)
        params = yaml.safe_load((PROJECT / "configs/mnist.yaml").read_text())
        params["data"]["path"] = str(mnist_stand_in(scratch / "mnist.npz"))
        root = sandbox.copy_project(PROJECT, scratch / "project", params)
        total, stages = full_repro(root)
        table = (root / "reports/compare/comparison.md").read_text()
    print(f"# MNIST configuration on {os.cpu_count()} CPUs (stand-in data of MNIST's size)\n")
    print(f"Full `dvc repro`: **{total / 60:.1f} min**\n\n| stage | seconds |\n|:--|--:|")
    for stage, seconds in stages.items():
        print(f"| {stage} | {seconds:.0f} |")
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps({"full_repro_seconds": total, "stage_seconds": stages}, indent=2) + "\n")


if __name__ == "__main__":
    main()
