"""Faults a run meets overnight, at the level of the stage command: a diverging loss in every
family, a secret in the tracking URI, the UI's address, and nothing that unpickles."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sandbox
import services
import yaml
from pipeline_project import PROJECT

from genlab import tracking

# learning rates that make each tiny model's loss non-finite within an epoch (the GAN's logistic
# losses grow only linearly with its logits, so it takes an absurd rate)
DIVERGING = {
    "autoencoder": dict(hidden_units=[16], latent_dim=4, output_activation="linear", loss="mse", optimizer="sgd",
                        learning_rate=1e4),
    "vae": dict(hidden_units=[16], latent_dim=2, learning_rate=1e4),
    "gan": dict(latent_dim=4, generator_units=[16], discriminator_units=[16], learning_rate=1e30),
    "flow": dict(num_couplings=2, hidden_units=[16], learning_rate=1e4),
    "diffusion": dict(num_timesteps=10, hidden_units=[16], time_embedding_dim=8, num_inference_steps=3,
                      learning_rate=1e4),
}


def stage(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = sandbox.environment(PROJECT) | {"DVC_ROOT": str(cwd)}  # the MLflow store in `cwd`
    return subprocess.run([sys.executable, "-m", f"genlab.stages.{module}", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prepared")
    done = stage("prepare", "--params", str(PROJECT / "params.yaml"), "--out", str(folder / "data"),
                 "--reports", str(folder / "validation"), cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "data"


@pytest.mark.parametrize("family", sorted(DIVERGING))
def test_a_diverging_training_fails_its_run_and_writes_nothing(family, prepared, tmp_path):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["models"] = {"m": {"family": family, "batch_size": 32, "epochs": 5} | DIVERGING[family]}
    params["priors"], params["search"] = {}, None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage("train", "m", "--params", "params.yaml", "--data", str(prepared), "--out", "models/m",
                 "--history", "history.csv", "--figure", "curves.png", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(r"error \(TrainingDiverged\): the training loss became non-finite at epoch \d+", done.stderr)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "history.csv").exists()
    assert not (tmp_path / "curves.png").exists()
    assert not (tmp_path / ".genlab" / "resume" / "m").exists()  # nothing to resume a divergence from
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        ((run_id, status),) = connection.execute("select run_uuid, status from runs where name = 'm'").fetchall()
        (reason,) = connection.execute("select value from tags where run_uuid = ? and key = 'genlab.failure'",
                                       (run_id,)).fetchone()
    assert status == "FAILED" and reason.startswith("TrainingDiverged: the training loss became non-finite")


def test_a_password_in_the_tracking_uri_never_reaches_a_message(monkeypatch):
    port = services.free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{port}")
    with pytest.raises(tracking.TrackingUnavailable) as raised:
        tracking.setup("genlab")
    assert "s3cret" not in str(raised.value) and f"http://alice:***@127.0.0.1:{port}" in str(raised.value)
    assert tracking.redacted("https://host.example/path") == "https://host.example/path"


def test_the_ui_binds_to_loopback_unless_asked():
    made = subprocess.run(["make", "-n", "ui"], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    assert "--host 127.0.0.1" in made
    exposed = subprocess.run(["make", "-n", "ui", "HOST=0.0.0.0"], cwd=PROJECT, capture_output=True, text=True,
                             check=True).stdout
    assert "--host 0.0.0.0" in exposed


def test_nothing_unpickles_or_loads_keras_objects_unsafely():
    """Data files are read with allow_pickle=False and models are rebuilt from a JSON config plus a
    weights file (no Keras object deserialisation at all, so no unsafe mode to switch on)."""
    sources = {path: path.read_text() for path in (PROJECT / "src" / "genlab").rglob("*.py")}
    for path, text in sources.items():
        assert "allow_pickle=True" not in text and "safe_mode=False" not in text, path
        assert not re.search(r"\bpickle\.loads?\(|\bcloudpickle\.load", text), path
        assert "keras.models.load_model" not in text and "keras.saving.load_model" not in text, path
    loads = [line for text in sources.values() for line in text.splitlines() if "np.load(" in line]
    assert loads and all("allow_pickle=False" in line for line in loads)
