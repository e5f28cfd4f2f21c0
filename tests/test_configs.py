"""Switching params.yaml to a ready configuration (make run CONFIG=...), never over the user's own edits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genlab.config import presets as configs
from genlab.config.params import ParamsError, load_params

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(PROJECT / "configs", tmp_path / "configs")
    shutil.copy2(PROJECT / "params.yaml", tmp_path / "params.yaml")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True)
    return tmp_path


@pytest.mark.parametrize("name", sorted(path.name for path in (PROJECT / "configs").glob("*.yaml")))
def test_every_shipped_configuration_is_valid(name):
    load_params(PROJECT / "configs" / name)


def test_a_configuration_replaces_params_and_back(repo):
    params = repo / "params.yaml"
    sample = repo / "configs" / "mnist_sample.yaml"
    assert configs.use(sample, params) is True
    assert params.read_text() == sample.read_text()
    assert configs.use(sample, params) is False  # already there
    assert configs.use(repo / "configs" / "mnist.yaml", params) is True  # from one configuration to another


def test_edits_of_the_users_own_are_never_overwritten(repo):
    params = repo / "params.yaml"
    edited = params.read_text().replace("epochs: 100", "epochs: 7", 1)
    params.write_text(edited)
    with pytest.raises(ParamsError, match="params.yaml has edits of your own"):
        configs.use(repo / "configs" / "mnist_sample.yaml", params)
    assert params.read_text() == edited


def test_an_invalid_or_missing_configuration_is_refused_and_params_kept(repo):
    params = repo / "params.yaml"
    before = params.read_text()
    (repo / "configs" / "broken.yaml").write_text("data: {source: nope}\nmodels: {}\n")
    with pytest.raises(ParamsError, match="data.source"):
        configs.use(repo / "configs" / "broken.yaml", params)
    with pytest.raises(ParamsError, match="no such configuration"):
        configs.use(repo / "configs" / "absent.yaml", params)
    assert params.read_text() == before


def test_the_command_exits_2_with_the_reason(repo):
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "# mine\n")
    found = subprocess.run([sys.executable, "-m", "genlab.config.presets", "configs/mnist_sample.yaml"], cwd=repo,
                           capture_output=True, text=True)
    assert found.returncode == 2 and "edits of your own" in found.stderr
