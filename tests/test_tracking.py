"""Where runs go, what they are tagged with, and a clear error for an unreachable server."""

from __future__ import annotations

import socket
import time

import pytest

from genlab import tracking


def test_default_store_is_sqlite_at_the_project_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_temporary_experiment_folders_log_to_their_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"))
    assert tracking.project_root() == tmp_path.resolve()


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"


def test_unreachable_server_fails_fast_with_a_clear_message(monkeypatch):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable, match=f"127.0.0.1:{port} is unreachable"):
        tracking.setup("genlab")
    assert time.monotonic() - started < 30


def test_runs_are_created_tagged_and_marked_failed_on_error(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    experiment_id = tracking.setup("unit")
    tags = tracking.provenance_tags("train@m", data_md5="abc")
    assert tags["genlab.dvc_stage"] == "train@m" and tags["genlab.data_md5"] == "abc"
    assert "genlab.version.tensorflow" in tags
    with tracking.run(experiment_id, run_name="ok", tags=tags) as run_id:
        tracking.log_metrics({"loss": 1.0, "nan": float("nan")}, step=1)
    info = tracking.run_info(run_id)
    assert info["status"] == "FINISHED" and info["metrics"] == {"loss": 1.0}
    assert info["artifact_uri"].startswith((tmp_path / "mlartifacts").resolve().as_uri())
    with pytest.raises(RuntimeError):
        with tracking.run(experiment_id, run_name="bad") as failed_id:
            raise RuntimeError("the loss became non-finite")
    failed = tracking.run_info(failed_id)
    assert failed["status"] == "FAILED"
    assert failed["tags"]["genlab.failure"] == "RuntimeError: the loss became non-finite"
