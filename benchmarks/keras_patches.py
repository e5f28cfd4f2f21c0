"""What genlab's departures from stock Keras (src/genlab/training/keras_patches.py) give, measured: the
`train@<model>` stage of the shipped digits defaults with them (GENLAB_KERAS_PATCHES=1) and without them
(GENLAB_KERAS_PATCHES=0: stock Keras's Adam, its EMA without the warm-up, its evaluate after every epoch),
alternating, each in a process of its own; the training's own seconds (`models/<model>/training.json`,
the process's start-up left out) and whether the two trainings end with the same losses (they should,
to the last bit, for every model without a weight EMA).

    .venv/bin/python benchmarks/keras_patches.py [--models gan flow vae] [--repeats 3]

Runs in a scratch copy of the project (tests/sandbox.py), never in your workspace.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' scratch project
import sandbox

PROJECT = Path(__file__).resolve().parents[1]


def train(root: Path, model: str, patched: bool) -> dict:
    """The train stage of `model`, run by hand (its own process), with or without the patches."""
    sandbox.run([sys.executable, "-m", "genlab.stages.train", model, "--data", "data/prepared", "--out",
                 f"models/{model}", "--history", f"reports/train/{model}.csv", "--figure",
                 f"reports/train/{model}.png"], root, env={"GENLAB_KERAS_PATCHES": "1" if patched else "0"})
    return json.loads((root / "models" / model / "training.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gan", "flow", "vae"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = sandbox.copy_project(PROJECT, Path(scratch))
        sandbox.run(["dvc", "repro", "prepare"], root)
        print("| model | with: training seconds (median) | without | ratio | same final losses |")
        print("|:--|--:|--:|--:|:--|")
        for model in args.models:
            seconds = {True: [], False: []}
            losses = {}
            for _ in range(args.repeats):
                for patched in (True, False):
                    found = train(root, model, patched)
                    seconds[patched].append(found["train_seconds"])
                    losses[patched] = (found["final_loss"], found["final_val_loss"])
            with_, without = statistics.median(seconds[True]), statistics.median(seconds[False])
            print(f"| {model} | {with_:.1f} | {without:.1f} | {with_ / without:.2f} | "
                  f"{'yes' if losses[True] == losses[False] else f'no: {losses[True]} against {losses[False]}'} |")


if __name__ == "__main__":
    main()
