"""genlab.runtime.workspace on a two-line DVC project (no TensorFlow): which version comes back from where, what is
set aside, and what cannot come back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sandbox

from genlab.runtime import workspace

DVC_YAML = """
stages:
  make:
    cmd: sh make.sh
    deps:
      - make.sh
    outs:
      - out
    metrics:
      - metrics.json:
          cache: false
"""
MAKE = """mkdir -p out/sub && printf a > out/a.txt && printf b > out/sub/b.txt && printf '{"x": 1}' > metrics.json"""


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "make.sh").write_text(MAKE)
    sandbox.run(["git", "init", "-q"], root)
    sandbox.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], root)
    sandbox.run([str(Path(sys.executable).parent / "dvc"), "repro"], root)
    sandbox.commit(root, "made")
    return root


def files(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text() for path in sorted((root / "out").rglob("*"))
            if path.is_file()} | {"metrics.json": (root / "metrics.json").read_text()}


def test_the_lock_names_the_outputs_of_the_last_successful_run(project):
    outputs = {output.path: output for output in workspace.locked_outputs(project, "make")}
    assert set(outputs) == {"out", "metrics.json"}
    assert outputs["out"].is_dir and not outputs["metrics.json"].is_dir
    assert workspace.locked_outputs(project, "never_ran") == []


def test_deleted_and_half_written_outputs_come_back_and_the_failed_version_is_set_aside(project):
    good = files(project)
    shutil.rmtree(project / "out")  # what DVC does before it runs the stage
    (project / "out").mkdir()
    (project / "out" / "a.txt").write_text("half")  # what a failed run left
    (project / "metrics.json").unlink()
    done = workspace.restore_last_good(project, "make")
    assert files(project) == good
    assert sorted(done.restored) == ["metrics.json", "out"] and not done.lost
    aside = project / done.set_aside["out"]
    assert aside == project / ".genlab" / "failed" / "make" / "out" and (aside / "a.txt").read_text() == "half"
    assert "make: its last good outputs are back in place (metrics.json, out)" in done.describe()
    again = workspace.restore_last_good(project, "make")  # idempotent: nothing left to do
    assert sorted(again.intact) == ["metrics.json", "out"] and not again.restored and not again.describe()


def test_an_uncached_output_missing_from_the_cache_comes_from_git_and_nothing_else_is_made_up(project):
    md5 = {output.path: output.md5 for output in workspace.locked_outputs(project, "make")}
    cache = project / ".dvc" / "cache" / "files" / "md5"
    os.chmod(cache / md5["metrics.json"][:2] / md5["metrics.json"][2:], 0o644)
    (cache / md5["metrics.json"][:2] / md5["metrics.json"][2:]).unlink()  # a fresh clone has only git's copy
    (project / "metrics.json").unlink()
    assert workspace.restore_last_good(project, "make").restored == ["metrics.json"]
    assert json.loads((project / "metrics.json").read_text()) == {"x": 1}

    (project / "metrics.json").unlink()
    subprocess.run(["git", "rm", "-q", "--cached", "metrics.json"], cwd=project, check=True)
    sandbox.commit(project, "metrics out of git")
    done = workspace.restore_last_good(project, "make")  # neither in the cache nor in git
    assert "metrics.json" in done.lost and not (project / "metrics.json").exists()
    assert "could not put metrics.json back" in done.describe() and "dvc checkout make" in done.describe()
