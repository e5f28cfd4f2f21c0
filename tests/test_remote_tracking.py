"""Beyond one machine, for real: an `mlflow server` on loopback backed by a real PostgreSQL server (Debian's
package) with its artifacts in an S3-compatible object store (moto in server mode), which is also the
project's DVC remote. One clone runs the pipeline through them and pushes; a second clone pulls and
reproduces nothing; then both run experiments at once against the same server and remote, and every run,
metric and artifact is there, found by its DVC experiment name. And a clear, fast failure when the server
is unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sandbox
import services
from pipeline_project import PROJECT, output_digests, stages_run, tiny_params

pytestmark = pytest.mark.e2e

BUCKET = "genlab"
MODELS = ("ae_a", "vae_c")


class Stack:
    """The shared services: the tracking server's address, its database, and the object store."""

    def __init__(self, address: str, database: str, endpoint: str, s3_env: dict[str, str]) -> None:
        self.address, self.database, self.endpoint, self.s3_env = address, database, endpoint, s3_env

    def env(self) -> dict[str, str]:
        """What a machine of the project sets: the tracking server, and the S3 credentials DVC's remote needs."""
        return {"MLFLOW_TRACKING_URI": self.address} | {key: value for key, value in self.s3_env.items()
                                                        if key.startswith("AWS_")}

    def keys(self, prefix: str) -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id=self.s3_env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=self.s3_env["AWS_SECRET_ACCESS_KEY"])
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale-out")
    with services.postgres() as database, services.s3_server(BUCKET, folder / "s3.log") as (endpoint, s3_env), \
            services.mlflow_server(database, f"s3://{BUCKET}/mlartifacts", folder / "server.log",
                                   env=s3_env) as address:
        yield Stack(address, database, endpoint, s3_env)


def run(args: list[str], root: Path, stack: Stack, timeout: float = 1800) -> subprocess.CompletedProcess:
    return sandbox.run(args, root, timeout=timeout, env=stack.env())


def use_remote(root: Path, stack: Stack) -> None:
    """The endpoint is this machine's (a loopback port): in the clone's own, uncommitted config."""
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", stack.endpoint], root, stack)


@pytest.fixture(scope="module")
def machines(stack, tmp_path_factory):
    """Machine A reproduces the pipeline through the server, pushes its outputs to the S3 remote and its
    commit to a shared git repository; machine B clones that and pulls."""
    folder = tmp_path_factory.mktemp("machines")
    origin = folder / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    a = sandbox.copy_project(PROJECT, folder / "a", tiny_params(models=MODELS))
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"], a, stack)
    use_remote(a, stack)
    repro = run(["dvc", "repro"], a, stack)
    run(["dvc", "push"], a, stack)
    sandbox.commit(a, "pipeline reproduced on machine A")
    run(["git", "push", "-q", str(origin), "HEAD:main"], a, stack)
    run(["git", "remote", "add", "origin", str(origin)], a, stack)
    b = folder / "b"
    run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], folder, stack)
    use_remote(b, stack)
    pulled = run(["dvc", "pull"], b, stack)
    return a, b, {"repro": repro.stdout, "pull": pulled.stdout + pulled.stderr}


def test_the_pipeline_logs_runs_metrics_artifacts_and_the_champion_to_the_server(stack, machines, tmp_path):
    import mlflow
    import psycopg
    from mlflow import MlflowClient

    a, _, _ = machines
    assert not (a / "mlflow.db").exists() and not (a / "mlartifacts").exists()  # nothing local
    client = MlflowClient(tracking_uri=stack.address, registry_uri=stack.address)
    experiment = client.get_experiment_by_name("genlab")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert {"audit", "judge", *MODELS, "comparison"} <= set(runs)
    vae = runs["vae_c"]
    assert vae.info.status == "FINISHED" and vae.data.metrics["test/fid"] > 0
    assert [point.step for point in client.get_metric_history(vae.info.run_id, "train/loss")] == [1, 2, 3, 4, 5]
    assert vae.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server, not a local path
    listed = {item.path for item in client.list_artifacts(vae.info.run_id, "evaluation")}
    assert "evaluation/samples.png" in listed
    downloaded = client.download_artifacts(vae.info.run_id, "evaluation/samples.png", str(tmp_path))
    assert open(downloaded, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    stored = stack.keys("mlartifacts/")  # the server keeps them in the object store
    assert any(key.endswith(f"{vae.info.run_id}/artifacts/evaluation/samples.png") for key in stored)

    mlflow.set_tracking_uri(stack.address)
    champion = mlflow.pyfunc.load_model("models:/genlab-generator@champion")
    assert champion.predict({"num_images": 3, "seed": 1}).shape == (3, 8, 8)
    logged = {model.name: model for model in mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], output_format="list")}
    assert set(MODELS) <= set(logged)  # the LoggedModels, their metrics and artifacts on the server
    assert {metric.key for metric in logged["vae_c"].metrics} >= {"test/fid", "test/recall"}
    assert any(key.endswith("model.weights.h5") for key in stored)

    with psycopg.connect(stack.database) as connection, connection.cursor() as cursor:  # PostgreSQL holds them
        cursor.execute("select count(*) from runs where experiment_id = %s", (int(experiment.experiment_id),))
        assert cursor.fetchone()[0] == len(runs)


def test_a_second_clone_pulls_from_the_s3_remote_and_reproduces_nothing(stack, machines):
    a, b, info = machines
    assert any(key.startswith("dvc/files/md5/") for key in stack.keys("dvc/"))  # DVC's objects in the store
    # every model, figure and metrics file, byte for byte
    assert output_digests(b, skip=("timings",)) == output_digests(a, skip=("timings",))
    assert json.loads(run(["dvc", "status", "--json", "dvc.yaml"], b, stack).stdout or "{}") == {}
    again = run(["dvc", "repro"], b, stack)
    assert stages_run(again.stdout) == set(), again.stdout


def test_two_clones_run_experiments_at_once_against_one_server_and_one_remote(stack, machines):
    from mlflow import MlflowClient

    a, b, _ = machines
    client = MlflowClient(tracking_uri=stack.address)
    experiment = client.get_experiment_by_name("genlab").experiment_id
    before = {run.info.run_id for run in client.search_runs([experiment])}
    # two machines, each with its own model changed, at the same time
    changes = {"exp-a": (a, "models.ae_a.latent_dim=3", "ae_a"), "exp-b": (b, "models.vae_c.latent_dim=3", "vae_c")}
    started = {name: subprocess.Popen(["dvc", "exp", "run", "-n", name, "-S", change], cwd=root,
                                      env=sandbox.environment(root) | stack.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
               for name, (root, change, _) in changes.items()}
    for name, process in started.items():
        output, _ = process.communicate(timeout=1800)
        assert process.returncode == 0, output[-4000:]
        assert stages_run(output) == {f"train@{changes[name][2]}", f"evaluate@{changes[name][2]}", "compare"}
    for name, (root, _, _) in changes.items():
        run(["dvc", "exp", "push", "origin", name], root, stack)  # its commit to git, its outputs to S3

    stored = stack.keys("mlartifacts/")
    for name, (_, _, model) in changes.items():
        found = {run.info.run_name: run for run in client.search_runs(
            [experiment], filter_string=f"tags.`genlab.dvc_exp_name` = '{name}'")}
        assert set(found) == {model, "comparison"}, name
        trained = found[model]
        assert trained.info.status == "FINISHED" and trained.data.params["latent_dim"] == "3"
        assert trained.data.metrics["test/fid"] > 0
        assert [point.step for point in client.get_metric_history(trained.info.run_id, "train/loss")] == \
            [1, 2, 3, 4, 5]
        assert any(key.endswith(f"{trained.info.run_id}/artifacts/evaluation/samples.png") for key in stored)
    after = {run.info.run_id for run in client.search_runs([experiment])}
    assert before < after and len(after - before) == 4  # nothing lost, nothing doubled

    # either machine finds both experiments in the shared repository, with their metrics
    listed = run(["dvc", "exp", "list", "--name-only", "origin"], a, stack).stdout.split()
    assert {"exp-a", "exp-b"} <= set(listed)
    run(["dvc", "exp", "pull", "origin", "exp-a"], b, stack)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], b, stack).stdout)
    names = {experiment.get("name") for row in shown for experiment in (row.get("experiments") or [])}
    assert "exp-a" in names


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
