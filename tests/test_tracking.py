"""Where runs go, what they are tagged with, and a clear error for an unreachable server."""

from __future__ import annotations

import signal
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


def test_a_run_is_continued_by_id_and_a_missing_one_is_reported(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    experiment_id = tracking.setup("unit")
    with tracking.run(experiment_id, run_name="m") as run_id:
        tracking.log_metrics({"loss": 2.0})
    with tracking.run(experiment_id, run_name="m", run_id=run_id, tags={"genlab.evaluated": "true"}) as same_id:
        tracking.log_metrics({"test_mse": 0.5})
    assert same_id == run_id
    info = tracking.run_info(run_id)
    assert info["metrics"] == {"loss": 2.0, "test_mse": 0.5} and info["tags"]["genlab.evaluated"] == "true"
    assert tracking.run_exists(run_id)
    assert not tracking.run_exists("0" * 32)
    assert tracking.tag_run("0" * 32, "genlab.x", "y") is False


def test_first_use_of_a_new_store_from_several_processes(tmp_path):
    """Schema migrations of a new SQLite store run under a lock: every process gets the experiment."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items()
           if not key.startswith("MLFLOW_")} | {"DVC_ROOT": str(tmp_path)}
    code = "from genlab import tracking; print(tracking.setup('unit'))"
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    assert len({out.strip().splitlines()[-1] for out, _ in outputs}) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_the_middle_of_a_store_call_stops_the_run_as_killed(monkeypatch, tmp_path, signum):
    """SIGTERM (or Ctrl-C) while MLflow reads or writes the SQLite store: the call finishes, then the signal
    stops the stage, and its run is marked KILLED at once. (Raised inside SQLAlchemy's execute, the exception
    left the store locked by the connection SQLAlchemy closed under it: marking the run KILLED failed with
    "database is locked" after MLflow's 20-s busy timeout.)"""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from genlab.runtime.stage import Terminated, _terminate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    experiment_id = tracking.setup("unit")
    armed = []

    def signal_mid_query(conn, cursor, statement, parameters, context, executemany):
        # the run's row read and not yet fetched: the statement holds the store's lock
        if armed and statement.lstrip().upper().startswith("SELECT") and "FROM runs" in statement:
            armed.clear()
            signal.raise_signal(signum)  # its Python handler runs here, as a signal's would between two bytecodes

    previous = signal.signal(signum, _terminate if signum == signal.SIGTERM else signal.default_int_handler)
    event.listen(Engine, "after_cursor_execute", signal_mid_query)
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt) as stopped, tracking.run(experiment_id, run_name="m") as run_id:
            metrics = tracking.MetricBuffer()
            metrics.add({"loss": 1.0}, step=1)
            armed.append(True)
            metrics.flush()
        assert time.monotonic() - started < 10
    finally:
        event.remove(Engine, "after_cursor_execute", signal_mid_query)
        signal.signal(signum, previous)
    assert not armed  # the signal came
    assert isinstance(stopped.value, Terminated) == (signum == signal.SIGTERM)
    info = tracking.run_info(run_id)
    assert info["status"] == "KILLED" and info["metrics"] == {"loss": 1.0}  # the batch was written, then it stopped
