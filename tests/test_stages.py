"""Stage commands on bad input: a clear error, exit status 2, and no partial outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]


def write_params(tmp_path: Path, **data) -> Path:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"] |= data
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def prepare(tmp_path: Path, params: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "genlab.stages.prepare", "--params", str(params),
               "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "validation")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def digits_like(count: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(count, 8, 8), dtype=np.uint8), np.arange(count) % 10


def test_nan_pixels_fail_validation_with_a_saved_report_and_no_output(tmp_path):
    x, y = digits_like()
    x = x / 255.0
    x[3, 2, 2] = np.nan
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    done = prepare(tmp_path, write_params(tmp_path, source="npz", path=str(tmp_path / "mine.npz")))
    assert done.returncode == 2, done.stderr
    assert "ValidationFailed" in done.stderr and "nonfinite_pixels" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "prepared").exists()
    summary = json.loads((tmp_path / "validation" / "summary.json").read_text())
    assert summary["success"] is False and any("nonfinite_pixels" in failure for failure in summary["failures"])


def test_labels_outside_the_declared_set_fail(tmp_path):
    x, y = digits_like()
    np.savez(tmp_path / "mine.npz", x=x, y=y + 5)  # labels 5..14 with num_classes 10
    done = prepare(tmp_path, write_params(tmp_path, source="npz", path=str(tmp_path / "mine.npz")))
    assert done.returncode == 2 and "label" in done.stderr
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_corrupt_file_is_a_data_error(tmp_path, content):
    (tmp_path / "mine.npz").write_bytes(content)
    done = prepare(tmp_path, write_params(tmp_path, source="npz", path=str(tmp_path / "mine.npz")))
    assert done.returncode == 2
    assert "DataError" in done.stderr and "mine.npz" in done.stderr and "Traceback" not in done.stderr


def test_a_failed_prepare_keeps_the_previous_output(tmp_path):
    x, y = digits_like()
    np.savez(tmp_path / "good.npz", x=x, y=y)
    assert prepare(tmp_path, write_params(tmp_path, source="npz", path=str(tmp_path / "good.npz"))).returncode == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "prepared").iterdir()}
    (tmp_path / "missing.npz").unlink(missing_ok=True)
    done = prepare(tmp_path, write_params(tmp_path, source="npz", path=str(tmp_path / "missing.npz")))
    assert done.returncode == 2 and "file not found" in done.stderr
    assert {path.name: path.read_bytes() for path in (tmp_path / "prepared").iterdir()} == before
