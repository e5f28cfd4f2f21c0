"""Per-family training and sampling throughput on the digits: genlab against a plain Keras loop.

For one shipped model of each family (params.yaml), in one process after a warm-up run
(imports, the new MLflow store's schema migrations), each side `--repeats` times, alternating
(the median is reported):
- genlab: the `train@<model>` stage's own code (`genlab.stages.train.main`): seeding, MLflow
  run, per-epoch metrics, progress grids, diagnosis, figures, saving;
- plain: the same network built and compiled the same way, `model.fit` with no callbacks,
  no tracking and no outputs.
Training throughput is training images per second over all epochs; sampling throughput is
images per second of `model.sample(1000, seed)` against the plain generator call on the
same noise. Target (issue 3): genlab's overhead under 10% over the plain loop.

    .venv/bin/python benchmarks/families.py [--models vae gan flow diffusion] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' scratch project
import sandbox

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("ae_sigmoid_bce", "vae", "gan", "flow", "diffusion")


def plain_sampler(model, count: int, seed: int):
    """The family's generator called directly on the same noise, without genlab's wrapper."""
    family = model.config.family
    if family == "diffusion":
        return lambda: model.sample(count, seed)  # the reverse loop is the sampler itself
    z = np.random.default_rng(seed).standard_normal((count, model.config.latent_dim if family != "flow"
                                                     else model.dims)).astype(np.float32)
    if family == "vae":
        return lambda: model.decoder(z, training=False)
    if family == "gan":
        return lambda: model.generator(z, training=False)
    return lambda: model.from_logit(model.inverse(model.config.temperature * z))


def measure(root: Path, name: str, repeats: int) -> dict[str, float]:
    from genlab.config.params import load_params
    from genlab.data import splits
    from genlab.models.registry import build_model, load_model
    from genlab.stages import train
    from genlab.training import devices

    params = load_params(root / "params.yaml")
    config = params.models[name]
    prepared = splits.load_prepared(root / "data/prepared")
    images = len(prepared.train.y) * config.epochs
    argv = [name, "--params", str(root / "params.yaml"), "--data", str(root / "data/prepared"),
            "--out", str(root / f"bench/{name}"), "--history", str(root / f"bench/{name}.csv"),
            "--figure", str(root / f"bench/{name}.png")]

    plain_times, genlab_times = [], []
    for _ in range(repeats):  # alternating, so that a slow spell of the machine hits both sides
        started = time.perf_counter()
        devices.set_seed(config.seed)
        model = build_model(config, prepared.image_shape)
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(prepared.train.x, prepared.train.x, validation_data=(prepared.validation.x,) * 2,
                      epochs=config.epochs, batch_size=config.batch_size, verbose=0)
        plain_times.append(time.perf_counter() - started)

        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            train.main(argv)
        genlab_times.append(time.perf_counter() - started)
    plain_seconds, genlab_seconds = float(np.median(plain_times)), float(np.median(genlab_times))

    figures = {"train_images_per_second_plain": images / plain_seconds,
               "train_images_per_second_genlab": images / genlab_seconds,
               "train_seconds_plain": plain_seconds, "train_seconds_genlab": genlab_seconds}
    if config.family != "autoencoder":
        trained, _ = load_model(root / f"bench/{name}")
        plain = plain_sampler(trained, 1000, seed=0)
        plain()  # warm-up: graph tracing
        trained.sample(1000, seed=0)
        started = time.perf_counter()
        plain()
        figures["sample_images_per_second_plain"] = 1000 / (time.perf_counter() - started)
        started = time.perf_counter()
        trained.sample(1000, seed=0)
        figures["sample_images_per_second_genlab"] = 1000 / (time.perf_counter() - started)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median is reported")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    json_path = args.json.resolve() if args.json else None
    with tempfile.TemporaryDirectory(prefix="genlab-families-") as scratch:
        root = sandbox.copy_project(PROJECT, Path(scratch))
        sandbox.run(["dvc", "repro", "prepare"], root)
        os.environ["DVC_ROOT"] = str(root)
        measure(root, args.models[0], repeats=1)  # warm-up: imports, the new MLflow store's migrations, first tracing
        results = {name: measure(root, name, args.repeats) for name in args.models}
    print(f"# Per-family throughput on the digits ({os.cpu_count()} CPUs)\n")
    print("| model | train seconds plain | train seconds genlab | train img/s plain | train img/s genlab | overhead "
          "| sample img/s plain | sample img/s genlab |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|")
    for name, figures in results.items():
        overhead = figures["train_seconds_genlab"] / figures["train_seconds_plain"] - 1
        plain_sampling = figures.get("sample_images_per_second_plain")
        genlab_sampling = figures.get("sample_images_per_second_genlab")
        shown = (f"{plain_sampling:,.0f} | {genlab_sampling:,.0f}" if plain_sampling else "- | -")
        print(f"| {name} | {figures['train_seconds_plain']:.2f} | {figures['train_seconds_genlab']:.2f} | "
              f"{figures['train_images_per_second_plain']:,.0f} | "
              f"{figures['train_images_per_second_genlab']:,.0f} | {overhead:+.1%} | {shown} |")
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
