"""The same params and seed give the same numbers: a second `dvc repro` of the tiny project in a
fresh copy writes every DVC metrics file byte for byte as the first did (on the CPU, where
TensorFlow's kernels are deterministic); wall-clock times live in reports/timings/ for that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sandbox
import yaml
from pipeline_project import PROJECT, tiny_params

pytestmark = pytest.mark.e2e


def metrics_files(root) -> list[str]:
    """Every DVC metrics file the pipeline wrote, from `dvc.yaml` (foreach stages expanded by `dvc metrics show`,
    which also names the search's, search/dvc.yaml, before it has run)."""
    found = json.loads(sandbox.run(["dvc", "metrics", "show", "--json"], root).stdout)
    files = found[0]["data"] if isinstance(found, list) else next(iter(found.values()))["data"]
    return sorted(name for name in files if (Path(root) / name).is_file())


def test_a_rerun_with_the_same_params_and_seed_writes_identical_metrics_files(project, tmp_path):
    """The second run is the shared tiny project again with two of its models (a model's evaluation
    depends on its own settings, the data and the judge only), to keep the suite short; vae_c with its two seeds,
    the second trained beside the first."""
    root, info = project
    params = tiny_params(models=("vae_c", "ddpm_f"))
    params["models"]["vae_c"]["seeds"] = 2  # as in the shared project: its second seed trains in a forked process
    again = sandbox.copy_project(PROJECT, tmp_path / "again", params)
    sandbox.run(["dvc", "repro"], again)
    files = [name for name in metrics_files(again) if not name.startswith("reports/timings/")]
    assert {"reports/audit/metrics.json", "reports/judge.json", "reports/eval/vae_c.json"} <= set(files)
    for name in files:
        first = sandbox.run(["git", "show", f"{info['commit']}:{name}"], root).stdout
        assert (again / name).read_text() == first, f"{name} differs between two runs with the same seed"
    timings = [name for name in metrics_files(again) if name.startswith("reports/timings/")]
    assert timings and all(yaml.safe_load((again / name).read_text()) for name in timings)
