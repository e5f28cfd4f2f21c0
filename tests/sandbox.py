"""A scratch copy of the project in a temporary git repository, for the end-to-end test and benchmarks.

The copy runs the copied sources (PYTHONPATH) with this interpreter's tools on PATH,
its own MLflow store and DVC cache, so nothing touches the user's workspace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT_FILES = ("src", "data/raw", "dvc.yaml", "search/dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore",
                 ".gitignore", "pyproject.toml")
_IDENTITY = {"GIT_AUTHOR_NAME": "genlab", "GIT_AUTHOR_EMAIL": "genlab@localhost",
             "GIT_COMMITTER_NAME": "genlab", "GIT_COMMITTER_EMAIL": "genlab@localhost"}


def environment(root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_"))}
    return env | _IDENTITY | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(root / "src"), "GX_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def run(args: list[str], root: Path, timeout: float = 1800, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """Run a command in the copy (with `env` added to its environment); raise with its output when it fails.

    Its output goes to files, not pipes: a daemon that the command leaves behind (`dvc queue start`'s
    workers) inherits them, and reading a pipe would wait for the daemon to exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(args, cwd=root, env=environment(root) | (env or {}), stdout=out, stderr=err, text=True,
                              timeout=timeout)
        out.seek(0), err.seek(0)
        done.stdout, done.stderr = out.read(), err.read()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def copy_project(source: Path, root: Path, params: dict | None = None) -> Path:
    """Copy the project's pipeline files into `root`, optionally replace params.yaml, and commit."""
    for name in PROJECT_FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (source / name).is_dir():
            shutil.copytree(source / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source / name, target)
    if params is not None:
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    commit(root, "baseline")
    return root


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message, "--allow-empty"], root)


MARK_ENV = "GENLAB_TEST_COMMAND"  # every process a command starts inherits it, also in a session of its own


def marked(name: str) -> dict[str, str]:
    """The environment addition that marks a command and everything it starts: run(..., env=marked(name))."""
    return {MARK_ENV: f"{name}-{os.getpid()}-{time.monotonic_ns()}"}


def genlab_processes(mark: dict[str, str]) -> list[str]:
    """The command lines of the genlab processes (a stage, a warm server) that a marked command started and
    that still run."""
    (key, value), = mark.items()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{key}={value}".encode() in environment and "genlab." in command:
            found.append(f"{pid}: {command}")
    return found


def assert_nothing_left(mark: dict[str, str], seconds: float = 5.0) -> None:
    """No genlab process that the marked command started outlives it by more than `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := genlab_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running {seconds:g} s after the command ended: {left}"
