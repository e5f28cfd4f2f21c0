"""The pipeline against a real tracking server: `mlflow server` on loopback backed by a real
PostgreSQL server (Debian's package, started by the test in a throwaway folder), with the
server's own artifact store; and a clear, fast failure when the server is unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import services
from genlab import sandbox
from pipeline_project import PROJECT, tiny_params

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracking-server")
    with services.postgres() as database, \
            services.mlflow_server(database, folder / "artifacts", folder / "server.log") as address:
        yield address, database, folder


def test_the_pipeline_logs_runs_metrics_artifacts_and_the_champion_to_the_server(server, tmp_path):
    import mlflow
    import psycopg
    from mlflow import MlflowClient

    address, database, folder = server
    root = sandbox.copy_project(PROJECT, tmp_path / "project", tiny_params(models=("ae_a", "vae_c")))
    sandbox.run(["dvc", "repro"], root, env={"MLFLOW_TRACKING_URI": address})
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()  # nothing local

    client = MlflowClient(tracking_uri=address, registry_uri=address)
    experiment = client.get_experiment_by_name("genlab")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert {"audit", "judge", "ae_a", "vae_c", "comparison"} <= set(runs)
    vae = runs["vae_c"]
    assert vae.info.status == "FINISHED" and vae.data.metrics["test/fid"] > 0
    assert [point.step for point in client.get_metric_history(vae.info.run_id, "train/loss")] == [1, 2, 3, 4, 5]
    assert vae.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server, not a local path
    listed = {item.path for item in client.list_artifacts(vae.info.run_id, "evaluation")}
    assert "evaluation/samples.png" in listed
    downloaded = client.download_artifacts(vae.info.run_id, "evaluation/samples.png", str(tmp_path))
    assert open(downloaded, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert list((folder / "artifacts").rglob("samples.png"))  # in the server's artifact store

    mlflow.set_tracking_uri(address)
    champion = mlflow.pyfunc.load_model("models:/genlab-generator@champion")
    assert champion.predict({"num_images": 3, "seed": 1}).shape == (3, 8, 8)
    logged = {model.name: model for model in mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], output_format="list")}
    assert {"ae_a", "vae_c"} <= set(logged)  # the LoggedModels, their metrics and artifacts on the server
    assert {metric.key for metric in logged["vae_c"].metrics} >= {"test/fid", "test/recall"}
    assert list((folder / "artifacts").rglob("model.weights.h5"))

    with psycopg.connect(database) as connection, connection.cursor() as cursor:  # PostgreSQL holds them
        cursor.execute("select count(*) from runs where experiment_id = %s", (int(experiment.experiment_id),))
        assert cursor.fetchone()[0] == len(runs)


def test_an_unreachable_server_stops_a_stage_within_seconds_before_training(tmp_path):
    port = services.free_port()  # nothing listens there
    environment = sandbox.environment(PROJECT) | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    subprocess.run([sys.executable, "-m", "genlab.stages.prepare", "--params", str(PROJECT / "params.yaml"),
                    "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "validation")],
                   check=True, capture_output=True, env=environment, cwd=tmp_path)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "genlab.stages.train", "vae", "--params", str(PROJECT / "params.yaml"),
                           "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "model"),
                           "--history", str(tmp_path / "history.csv"), "--figure", str(tmp_path / "curves.png")],
                          capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr
    assert f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "model").exists() and not (tmp_path / "history.csv").exists()
    assert json.loads((tmp_path / "prepared" / "meta.json").read_text())["sizes"]["train"] > 0  # untouched
