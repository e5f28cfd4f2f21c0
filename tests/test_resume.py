"""Interrupted training resumes: a real `dvc repro` killed mid-run (SIGKILL, then SIGTERM) and rerun
ends with the same final weights, bit for bit, as a run that was never interrupted, and continues
the same MLflow run with every epoch's metrics; an interrupted stage leaves no output behind."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import sandbox
from pipeline_project import PROJECT, TINY_NETWORKS, stages_run, tiny_params

pytestmark = pytest.mark.e2e

MODEL = "vae_c"
EPOCHS = 40


def backup_epoch(root: Path) -> int:
    metadata = root / ".genlab" / "resume" / MODEL / "state" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def interrupt(root: Path, sig: int, after_epoch: int) -> tuple[int, str]:
    """Start `dvc repro train@<model>`, send `sig` to it and its stage once the backup reaches
    `after_epoch`; return the stage's exit status and the output."""
    process = subprocess.Popen(["dvc", "repro", f"train@{MODEL}"], cwd=root, env=sandbox.environment(root),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while backup_epoch(root) < after_epoch:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "training never reached the epoch"
        time.sleep(0.05)
    os.killpg(process.pid, sig)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def runs(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "mlflow.db") as connection:
        return connection.execute("select run_uuid, status from runs where name = ?", (MODEL,)).fetchall()


def weights(root: Path) -> list[np.ndarray]:
    import h5py

    arrays = []
    with h5py.File(root / "models" / MODEL / "model.weights.h5") as stored:
        stored.visititems(lambda name, item: arrays.append(item[()]) if hasattr(item, "shape") else None)
    return arrays


def test_a_killed_training_resumes_to_the_same_weights_and_the_same_run(tmp_path):
    params = tiny_params(models=(MODEL,))
    params["models"][MODEL] |= {"epochs": EPOCHS, "batch_size": 16}
    params["train"]["backup_every_seconds"] = 0  # a backup after every epoch, so the kills land between two
    root = sandbox.copy_project(PROJECT, tmp_path / "project", params)

    killed, _ = interrupt(root, signal.SIGKILL, after_epoch=5)
    assert killed != 0 and not (root / "models" / MODEL).exists()
    ((run_id, status),) = runs(root)
    assert status == "RUNNING"  # killed hard: nobody could close it

    stopped, output = interrupt(root, signal.SIGTERM, after_epoch=backup_epoch(root) + 5)
    assert stopped != 0 and not (root / "models" / MODEL).exists()
    assert "interrupted (stopped by signal SIGTERM)" in output
    assert runs(root) == [(run_id, "KILLED")]  # the same run, closed as killed
    resumed_from = backup_epoch(root)
    assert 10 <= resumed_from < EPOCHS

    done = sandbox.run(["dvc", "repro", f"train@{MODEL}"], root)
    assert f"{MODEL}: resumed after epoch {resumed_from}" in done.stdout
    assert not (root / ".genlab" / "resume" / MODEL).exists()  # cleared once the outputs are in place
    assert runs(root) == [(run_id, "FINISHED")]
    assert json.loads((root / "models" / MODEL / "run.json").read_text())["run_id"] == run_id
    with sqlite3.connect(root / "mlflow.db") as connection:
        steps = [step for (step,) in connection.execute(
            "select step from metrics where run_uuid = ? and key = 'train/loss' order by step", (run_id,))]
        resumed_tag = connection.execute("select value from tags where run_uuid = ? and key = ?",
                                         (run_id, "genlab.resumed_at_epoch")).fetchone()
    assert steps == list(range(1, EPOCHS + 1)) and resumed_tag == (str(resumed_from),)
    history = (root / "reports" / "train" / f"{MODEL}.csv").read_text()
    assert len(history.splitlines()) == EPOCHS + 1
    interrupted = weights(root)

    uninterrupted = sandbox.run(["dvc", "repro", "-f", "-s", f"train@{MODEL}"], root)
    assert stages_run(uninterrupted.stdout) == {f"train@{MODEL}"} and "resumed" not in uninterrupted.stdout
    again = weights(root)
    assert len(again) == len(interrupted) > 0
    assert all(np.array_equal(first, second) for first, second in zip(interrupted, again))
    assert (root / "reports" / "train" / f"{MODEL}.csv").read_text() == history  # every epoch's losses too


def test_a_backup_of_other_settings_is_not_resumed(tmp_path):
    from genlab.training.fit import Backup

    backup = Backup(tmp_path / "resume" / "m", "settings-a")
    backup.remember(run_id="abc")
    (backup.folder / "model.weights.h5").write_bytes(b"state")
    assert Backup(backup.folder, "settings-a").open() == {"fingerprint": "settings-a", "run_id": "abc"}
    assert Backup(backup.folder, "settings-b").open() == {}
    assert not backup.folder.exists()  # a stale backup is deleted, not resumed


@pytest.mark.parametrize("family", sorted(TINY_NETWORKS))
def test_every_family_resumed_mid_training_ends_where_an_uninterrupted_fit_does(family, tmp_path):
    """In process: stopped after 2 of 4 epochs and resumed from the backup, with and without one,
    the weights are the same; this needs the noise generators' state, which save_weights leaves out."""
    from sklearn.datasets import load_digits

    from genlab.config.params import FAMILY_PARAMS
    from genlab.models.registry import build_model
    from genlab.training import devices, fit

    images = (load_digits().images[:160] / 16.0).astype(np.float32)
    config = FAMILY_PARAMS[family](family=family, batch_size=32, epochs=4, seed=0, **TINY_NETWORKS[family])

    def trained(epochs: list[int], backup: Path | None):
        for stop in epochs:  # each a fresh process's worth: a new model, the same seed
            devices.set_seed(0)
            model = build_model(config, (8, 8))
            result = fit.fit(model, images, images[:32], epochs=stop, batch_size=32, seed=0, backup_dir=backup)
        return model.get_weights(), result

    plain, _ = trained([4], None)
    resumed, result = trained([2, 4], tmp_path / "backup")
    assert result.resumed_at_epoch == 2 and len(result.epoch_seconds) == 4
    assert all(np.array_equal(first, second) for first, second in zip(plain, resumed))
