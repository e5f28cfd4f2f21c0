"""Nothing lost in the workspace: through real `dvc repro` runs, a stage that fails in any way (bad data,
bad params, an unreachable tracking server, a diverging loss, SIGTERM, SIGKILL, a full disk) leaves the
last good outputs of every stage in place, byte for byte, and `dvc status` shows only the failed stage as
changed; two `dvc repro` at once in one workspace, and a model name DVC cannot use, are refused cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sandbox
import services
import yaml
from pipeline_project import PROJECT, output_digests, tiny_params

from genlab.runtime import workspace

pytestmark = pytest.mark.e2e

MODEL = "ae_a"
MODEL_EDITED = {f"train@{MODEL}", "compare"}  # what an edit of models.<MODEL> changes (compare reads `models`)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The tiny project with one model, reproduced and committed: every stage has last good outputs."""
    params = tiny_params(models=(MODEL,))
    params["train"]["backup_every_seconds"] = 0  # a backup after every epoch: the kills below wait for one
    folder = sandbox.copy_project(PROJECT, tmp_path_factory.mktemp("workspace") / "project", params)
    sandbox.run(["dvc", "repro"], folder)
    sandbox.commit(folder, "first repro")
    return folder


snapshot = output_digests  # every output file's md5


def dvc_status(root: Path) -> set[str]:
    """The stages of the main pipeline that `dvc status` reports as changed (dvc.yaml: the search's pipeline,
    search/dvc.yaml, has not run in these projects)."""
    return set(json.loads(sandbox.run(["dvc", "status", "--json", "dvc.yaml"], root).stdout or "{}"))


def start(args: list[str], root: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=root, env=sandbox.environment(root) | (env or {}), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def fail(args: list[str], root: Path, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail; return its output."""
    done = subprocess.run(args, cwd=root, env=sandbox.environment(root) | (env or {}), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0, done.stdout[-3000:]
    return done.stdout + done.stderr


@contextlib.contextmanager
def edited_params(root: Path, edit):
    """params.yaml changed by `edit(params)` for the block; as it was afterwards."""
    path = root / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


def assert_as_before(root: Path, before: dict[str, str], output: str, changed: set[str]) -> None:
    assert snapshot(root) == before, output[-3000:]
    assert dvc_status(root) == changed
    assert "Traceback" not in output


def stage_processes(root: Path, command: str) -> list[str]:
    """The pids of the processes running `command` in this project (not in another test run's)."""
    found = subprocess.run(["pgrep", "-f", command], capture_output=True, text=True).stdout.split()
    here = []
    for pid in found:
        try:
            if Path(f"/proc/{pid}/cwd").resolve() == root.resolve():
                here.append(pid)
        except OSError:
            continue
    return here


def wait_for_backup(root: Path, process: subprocess.Popen) -> None:
    """Until the training has saved an epoch (so it is mid-training, past every start-up check)."""
    deadline = time.monotonic() + 300
    while not (root / ".genlab" / "resume" / MODEL / "state").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the training never saved an epoch"
        time.sleep(0.05)


def npz(root: Path, name: str, images: np.ndarray, labels: np.ndarray) -> Path:
    path = root / "data" / "raw" / name
    np.savez(path, x=images, y=labels)
    return path


def use_npz(name: str):
    def edit(params):
        params["data"] |= {"source": "npz", "path": f"data/raw/{name}"}
    return edit


@pytest.mark.parametrize("fault", ["corrupt", "nan_pixels"])
def test_bad_data_keeps_the_prepared_data_and_every_other_output(root, fault):
    before = snapshot(root)
    path = root / "data" / "raw" / "mine.npz"
    if fault == "corrupt":
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        images = np.random.default_rng(0).random((300, 8, 8))
        images[3, 2, 2] = np.nan
        npz(root, "mine.npz", images, np.arange(300) % 10)
    try:
        with edited_params(root, use_npz("mine.npz")):
            output = fail(["dvc", "repro"], root)
            assert ("DataError" if fault == "corrupt" else "ValidationFailed") in output
            assert "prepare: its last good outputs are back in place (data/prepared, reports/validation)" in output
            assert_as_before(root, before, output, changed={"prepare"})
            if fault == "nan_pixels":  # the failed run's great-expectations results, set aside for reading
                failed = root / workspace.FAILED_DIR / "prepare" / "reports" / "validation" / "summary.json"
                assert "nonfinite_pixels" in failed.read_text()
                assert "the failed run's reports/validation is kept in .genlab/failed/prepare" in output
    finally:
        path.unlink()
    assert dvc_status(root) == set()


def set_model(**values):
    def edit(params):
        params["models"][MODEL] |= values
    return edit


def test_an_unreachable_tracking_server_keeps_the_model(root):
    before = snapshot(root)
    with edited_params(root, set_model(epochs=6)):
        output = fail(["dvc", "repro"], root, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{services.free_port()}"})
        assert "is unreachable" in output
        assert f"train@{MODEL}: its last good outputs are back in place (models/{MODEL}, reports/train/{MODEL}.csv" \
               in output
        assert_as_before(root, before, output, changed=MODEL_EDITED)


@pytest.mark.parametrize("values, error", [
    (dict(learning_rate=-1.0), "error (ParamsError)"),
    (dict(optimizer="sgd", learning_rate=1e4, output_activation="linear", loss="mse"), "error (TrainingDiverged)"),
])
def test_bad_params_and_a_diverging_loss_keep_the_model(root, values, error):
    before = snapshot(root)
    with edited_params(root, set_model(**values)):
        output = fail(["dvc", "repro", f"train@{MODEL}"], root)
        assert error in output
        assert_as_before(root, before, output, changed=MODEL_EDITED)
        # make run checks params.yaml before DVC runs anything
        if error == "error (ParamsError)":
            output = fail([sys.executable, "-m", "genlab.runtime.console", "repro"], root)
            assert f"models.{MODEL}.learning_rate" in output and "Running stage" not in output


@contextlib.contextmanager
def long_training(root: Path):
    """A training of many epochs, interrupted in the block; its resume state removed afterwards."""
    try:
        with edited_params(root, set_model(epochs=400, batch_size=16)):
            yield
    finally:
        shutil.rmtree(root / ".genlab" / "resume" / MODEL, ignore_errors=True)


def test_sigterm_mid_training_keeps_the_model_and_the_state_to_resume_from(root):
    before = snapshot(root)
    with long_training(root):
        process = start(["dvc", "repro", f"train@{MODEL}"], root)
        wait_for_backup(root, process)
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        assert process.returncode != 0 and "interrupted (stopped by signal SIGTERM)" in output
        assert_as_before(root, before, output, changed=MODEL_EDITED)
        assert (root / ".genlab" / "resume" / MODEL / "state").exists()  # the resume is not lost either


def test_a_stage_killed_with_sigkill_is_put_back_by_make_run(root):
    before = snapshot(root)
    with long_training(root):
        process = start([sys.executable, "-m", "genlab.runtime.console", "repro"], root)  # what `make run` runs
        wait_for_backup(root, process)
        stage = stage_processes(root, f"genlab.stages.train {MODEL}")
        assert stage
        for pid in stage:  # the stage alone, as the kernel's OOM killer would
            os.kill(int(pid), signal.SIGKILL)
        output, _ = process.communicate(timeout=120)
        assert process.returncode != 0 and f"failed to reproduce 'train@{MODEL}'" in output
        assert f"train@{MODEL}: its last good outputs are back in place (models/{MODEL}" in output
        assert f"genlab: train@{MODEL} failed" in output and "run `make run` again" in output
        assert_as_before(root, before, output, changed=MODEL_EDITED)


def test_a_bare_dvc_repro_killed_with_sigkill_loses_nothing_that_dvc_cannot_bring_back(root):
    """No process is left to clean up after `kill -9` of the whole `dvc repro`: the outputs stay in DVC's
    cache, and the next `dvc repro` restores them from its run-cache without training."""
    before = snapshot(root)
    process = start(["dvc", "repro", "-s", "-f", f"train@{MODEL}"], root)
    deadline = time.monotonic() + 120
    while not stage_processes(root, f"genlab.stages.train {MODEL}"):  # DVC deletes every output, then starts it
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    assert not (root / "models" / MODEL).exists() and not (root / "reports" / "train" / f"{MODEL}.csv").exists()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert dvc_status(root) == {f"train@{MODEL}", f"evaluate@{MODEL}", "compare"}  # the model is gone
    again = sandbox.run(["dvc", "repro"], root)
    assert f"Stage 'train@{MODEL}' is cached - skipping run" in again.stdout
    assert snapshot(root) == before and dvc_status(root) == set()


def test_two_dvc_repro_at_once_the_second_is_refused_cleanly(root):
    before = snapshot(root)
    first = start(["dvc", "repro", "-s", "-f", f"evaluate@{MODEL}"], root)
    deadline = time.monotonic() + 120
    while not stage_processes(root, f"genlab.stages.evaluate {MODEL}"):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    output = fail([sys.executable, "-m", "genlab.runtime.console", "repro"], root)  # what `make run` runs
    assert "another DVC command holds this workspace's lock" in output and "Running stage" not in output
    assert "its last good outputs are back" not in output  # nothing was deleted to put back
    first_output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_output[-3000:]
    assert snapshot(root).keys() == before.keys()
    assert dvc_status(root) == {"compare"}  # it reads the evaluation's new wall-clock timings
    sandbox.run(["dvc", "repro"], root)


def test_a_model_name_dvc_cannot_use_as_a_stage_key(root):
    before = snapshot(root)

    def rename(params):
        params["models"]["vae.v2"] = params["models"][MODEL]

    with edited_params(root, rename):
        output = fail([sys.executable, "-m", "genlab.runtime.console", "repro"], root)
        assert "models.vae.v2" in output and "stage key" in output and "Running stage" not in output
        fail(["dvc", "repro"], root)  # DVC's own error; it deletes nothing
        assert snapshot(root) == before


def test_a_params_file_without_priors_is_told_what_to_add(root):
    """An older params.yaml has no `priors:`; DVC's own error would be that it cannot find it."""
    before = snapshot(root)

    def drop(params):
        del params["priors"]

    with edited_params(root, drop):
        output = fail([sys.executable, "-m", "genlab.runtime.console", "repro"], root)
        assert "no `priors:` section" in output and "add `priors: {}`" in output and "Running stage" not in output
        assert snapshot(root) == before


def in_mount_namespace(root: Path, script: str) -> subprocess.CompletedProcess:
    """Run a shell script as root in a private mount namespace (its mounts vanish with it)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        services.unavailable("mounting a small or read-only file system needs root and unshare")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        services.unavailable(f"unshare -m is not permitted here: {probe.stderr.decode()[-200:]}")
    return subprocess.run(["unshare", "-m", "bash", "-c", script], cwd=root, env=sandbox.environment(root),
                          capture_output=True, text=True, timeout=600)


def test_a_full_disk_fails_evaluate_cleanly_and_keeps_its_last_good_outputs(root, tmp_path):
    """reports/eval on a file system with no room left: evaluate's larger figures do not fit."""
    before = {path: md5 for path, md5 in snapshot(root).items() if path.startswith("reports/eval/")}
    script = f"""
        set -u
        cp -a reports/eval {tmp_path}/eval
        mount -t tmpfs -o size=4m tmpfs reports/eval
        cp -a {tmp_path}/eval/. reports/eval/
        dd if=/dev/zero of=reports/eval/.filler bs=4k 2> /dev/null
        dvc repro -s evaluate@{MODEL} > {tmp_path}/output 2>&1; echo $? > {tmp_path}/exit
        rm reports/eval/.filler
        find reports/eval -type f -exec md5sum {{}} + > {tmp_path}/sums
        dvc status --json dvc.yaml > {tmp_path}/status
    """
    with edited_params(root, lambda params: params["evaluate"].update(num_extreme_images=32)):
        done = in_mount_namespace(root, script)
    assert done.returncode == 0, done.stderr
    output = (tmp_path / "output").read_text()
    assert int((tmp_path / "exit").read_text()) != 0
    assert "No space left on device" in output and "Traceback" not in output
    assert f"evaluate@{MODEL}: its last good outputs are back in place" in output
    after = {line.split()[1]: line.split()[0] for line in (tmp_path / "sums").read_text().splitlines()}
    assert after == before
    assert set(json.loads((tmp_path / "status").read_text())) == {f"evaluate@{MODEL}"}
    assert dvc_status(root) == set()  # outside the namespace, the workspace was never touched


def test_a_read_only_reports_folder_and_make_run_puts_back_what_dvc_deleted(root, tmp_path):
    """A forced repro: DVC deletes data/prepared, then fails to delete the read-only reports/validation
    before prepare could run; make run puts data/prepared back."""
    before = snapshot(root)
    script = f"""
        mount --bind reports reports && mount -o remount,bind,ro reports
        {sys.executable} -m genlab.runtime.console repro -f > {tmp_path}/output 2>&1; echo $? > {tmp_path}/exit
    """
    done = in_mount_namespace(root, script)
    assert done.returncode == 0, done.stderr
    output = (tmp_path / "output").read_text()
    assert int((tmp_path / "exit").read_text()) != 0 and "Read-only file system" in output, output
    assert "prepare: its last good outputs are back in place (data/prepared)" in output
    assert snapshot(root) == before and dvc_status(root) == set()


def test_a_huge_num_samples_is_refused_before_any_training(root):
    before = snapshot(root)
    with edited_params(root, lambda params: params["evaluate"].update(num_samples=100_000)):
        output = fail([sys.executable, "-m", "genlab.runtime.console", "repro"], root)  # make run: before DVC runs
        assert "evaluate.num_samples: 100000 is more than the about" in output and "Running stage" not in output
        output = fail(["dvc", "repro"], root)  # a bare dvc repro: the first stage that reads it
        assert "evaluate.num_samples: 100000" in output
        assert_as_before(root, before, output, changed={f"evaluate@{MODEL}", "compare"})


def test_an_npz_of_another_image_size_than_the_networks_fit_is_refused_before_any_stage_runs(root):
    before = snapshot(root)
    rng = np.random.default_rng(0)
    path = npz(root, "big.npz", rng.integers(0, 256, (10_000, 30, 30), dtype=np.uint8), np.arange(10_000) % 10)
    try:
        with edited_params(root, use_npz("big.npz")):
            output = fail([sys.executable, "-m", "genlab.runtime.console", "repro"], root)
    finally:
        path.unlink()
    assert "the networks do not fit the data" in output and "30x30 images in data/raw/big.npz" in output
    assert "judge.conv_filters" in output and "restore.upsample_factor" in output
    assert "Running stage" not in output and snapshot(root) == before
